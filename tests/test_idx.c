/* IDX reader: hand-encoded files of every element type (big-endian), gzip and raw, the
 * crafted bad files in tests/data/idx (status and message each), every truncation of a
 * good file, and the installed Fashion-MNIST (skipped with a message when absent). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cgrad/io.h"
#include "cgt.h"
#include "internal.h"

static size_t put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
    return 4;
}

/* gzip-compresses b into a malloc'd buffer. */
static uint8_t *gz(const uint8_t *b, size_t n, size_t *out_n) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    ck_assert(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    size_t cap = deflateBound(&zs, n) + 64;
    uint8_t *o = malloc(cap);
    zs.next_in = (Bytef *)b;
    zs.avail_in = (uInt)n;
    zs.next_out = o;
    zs.avail_out = (uInt)cap;
    ck_assert(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    *out_n = cap - zs.avail_out;
    deflateEnd(&zs);
    return o;
}

START_TEST(test_every_type_random) {
    /* random shapes and values per element type; compare decoded values */
    cgt_rand r = cgt_rand_make("idx_types");
    const uint8_t codes[] = {0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E};
    const int sizes[] = {1, 1, 2, 4, 4, 8};
    for (int c = 0; c < 6; c++)
        for (int rep = 0; rep < 3; rep++) {
            int ndim = (int)cgt_randint(&r, 1, 4);
            uint32_t dims[3];
            int64_t n = 1;
            for (int d = 0; d < ndim; d++) n *= (dims[d] = (uint32_t)cgt_randint(&r, 1, 6));
            size_t len = 4 + 4 * (size_t)ndim + (size_t)n * (size_t)sizes[c];
            uint8_t *b = malloc(len), *p = b;
            double *want = malloc((size_t)n * sizeof *want);
            *p++ = 0, *p++ = 0, *p++ = codes[c], *p++ = (uint8_t)ndim;
            for (int d = 0; d < ndim; d++) p += put_be32(p, dims[d]);
            for (int64_t i = 0; i < n; i++) {
                uint64_t w = cgt_next(&r);
                switch (codes[c]) {
                case 0x08: *p++ = (uint8_t)w, want[i] = (uint8_t)w; break;
                case 0x09: *p++ = (uint8_t)w, want[i] = (int8_t)(uint8_t)w; break;
                case 0x0B: *p++ = (uint8_t)(w >> 8), *p++ = (uint8_t)w, want[i] = (int16_t)(uint16_t)w; break;
                case 0x0C: p += put_be32(p, (uint32_t)w), want[i] = (int32_t)(uint32_t)w; break;
                case 0x0D: {
                    float f = (float)cgt_normal(&r);
                    uint32_t u;
                    memcpy(&u, &f, 4);
                    p += put_be32(p, u), want[i] = f;
                    break;
                }
                default: {
                    double f = cgt_normal(&r) * 1e100;
                    uint64_t u;
                    memcpy(&u, &f, 8);
                    p += put_be32(p, (uint32_t)(u >> 32));
                    p += put_be32(p, (uint32_t)u), want[i] = f;
                }
                }
            }
            ck_assert_uint_eq((size_t)(p - b), len);
            size_t gn;
            uint8_t *g = gz(b, len, &gn);
            for (int zipped = 0; zipped < 2; zipped++) {
                cg_tensor *t;
                CGT_OK(cg_idx_load_mem(zipped ? g : b, zipped ? gn : len, "rand", CG_IDX_NATIVE, CG_CPU, &t));
                const cg_dtype native[] = {CG_U8, CG_I32, CG_I32, CG_I32, CG_F32, CG_F64};
                ck_assert_int_eq(cg_tensor_dtype(t), native[c]);
                ck_assert_int_eq(cg_tensor_ndim(t), ndim);
                for (int d = 0; d < ndim; d++) ck_assert_int_eq(cg_tensor_shape(t)[d], dims[d]);
                double *got = cgt_read(t);
                for (int64_t i = 0; i < n; i++)
                    ck_assert_msg(got[i] == want[i], "type 0x%02x element %lld: %g vs %g", codes[c], (long long)i,
                                  got[i], want[i]);
                free(got);
                cg_tensor_release(t);
                CGT_OK(cg_idx_load_mem(zipped ? g : b, zipped ? gn : len, "rand", CG_IDX_F32, CG_CPU, &t));
                ck_assert_int_eq(cg_tensor_dtype(t), CG_F32);
                got = cgt_read(t);
                for (int64_t i = 0; i < n; i++) ck_assert(got[i] == (double)(float)want[i]);
                free(got);
                cg_tensor_release(t);
            }
            free(g);
            free(b);
            free(want);
        }
}
END_TEST

START_TEST(test_good_files_and_modes) {
    char path[512];
    snprintf(path, sizeof path, "%s/idx/good_labels.idx1.gz", cgt_data_dir());
    const uint8_t want[8] = {3, 1, 4, 1, 5, 9, 2, 6};
    cg_tensor *t;
    CGT_OK(cg_idx_load(path, CG_IDX_I64, CG_CPU, &t));
    ck_assert_int_eq(cg_tensor_dtype(t), CG_I64);
    const int64_t *l = cg_tensor_data(t);
    for (int i = 0; i < 8; i++) ck_assert_int_eq(l[i], want[i]);
    cg_tensor_release(t);
    snprintf(path, sizeof path, "%s/idx/good_labels.idx1", cgt_data_dir());
    CGT_OK(cg_idx_load(path, CG_IDX_NATIVE, CG_CPU, &t));
    ck_assert_int_eq(cg_tensor_dtype(t), CG_U8);
    ck_assert(memcmp(cg_tensor_data(t), want, 8) == 0);
    cg_tensor_release(t);
    snprintf(path, sizeof path, "%s/idx/good_images.idx3", cgt_data_dir());
    CGT_OK(cg_idx_load(path, CG_IDX_F32_UNIT, CG_CPU, &t));
    ck_assert_int_eq(cg_tensor_ndim(t), 3);
    ck_assert_int_eq(cg_tensor_shape(t)[1], 3);
    const float *f = cg_tensor_data(t);
    for (int i = 0; i < 12; i++) ck_assert_float_eq(f[i], (float)(i * 20 / 255.0));
    cg_tensor_release(t);
    snprintf(path, sizeof path, "%s/idx/good_i16.idx1", cgt_data_dir());
    CGT_OK(cg_idx_load(path, CG_IDX_NATIVE, CG_CPU, &t));
    const int32_t *s = cg_tensor_data(t);
    ck_assert_int_eq(s[0], -300);
    ck_assert_int_eq(s[2], 32767);
    cg_tensor_release(t);
    snprintf(path, sizeof path, "%s/idx/good_f32.idx2", cgt_data_dir());
    CGT_OK(cg_idx_load(path, CG_IDX_NATIVE, CG_CPU, &t));
    ck_assert_float_eq(((float *)cg_tensor_data(t))[3], 1e30f);
    cg_tensor_release(t);
    /* modes that do not fit the data */
    CGT_FAILS(cg_idx_load(path, CG_IDX_F32_UNIT, CG_CPU, &t), CG_E_DTYPE, path, "needs u8", "f32");
    CGT_FAILS(cg_idx_load(path, CG_IDX_I64, CG_CPU, &t), CG_E_DTYPE, path, "integer");
    snprintf(path, sizeof path, "%s/idx/missing.idx", cgt_data_dir());
    CGT_FAILS(cg_idx_load(path, CG_IDX_NATIVE, CG_CPU, &t), CG_E_IO, path, "cannot open");
}
END_TEST

static const cgt_bad_file bad_cases[] = {
    {"wrong_magic.idx", CG_E_FORMAT, {"wrong magic 01 00 08 01"}},
    {"unknown_type.idx", CG_E_FORMAT, {"unknown element type 0x07"}},
    {"zero_dims.idx", CG_E_FORMAT, {"dimension count 0"}},
    {"short_magic.idx", CG_E_FORMAT, {"truncated", "2 bytes"}},
    {"truncated_dims.idx", CG_E_FORMAT, {"truncated in the dimension sizes", "3 dimensions"}},
    {"truncated_data.idx", CG_E_FORMAT, {"truncated", "shape (10)", "needs 10 data bytes, the file has 5"}},
    {"trailing.idx", CG_E_FORMAT, {"trailing bytes", "shape (3)"}},
    {"nan.idx", CG_E_NUMERIC, {"element 1 is NaN"}},
    {"truncated.idx.gz", CG_E_FORMAT, {"truncated"}},
    {"corrupt.idx.gz", CG_E_FORMAT, {"corrupt"}},
    {"huge_dims.idx", CG_E_FORMAT, {"dimension sizes overflow"}},
    {"zero_dim_overflow.idx", CG_E_FORMAT, {"dimension sizes overflow"}}, /* fuzzer finding */
};

START_TEST(test_bad_files) {
    const cgt_bad_file *c = &bad_cases[_i];
    char path[512];
    snprintf(path, sizeof path, "%s/idx/%s", cgt_data_dir(), c->file);
    cg_tensor *sentinel = (cg_tensor *)(uintptr_t)0x1dc, *t = sentinel;
    CGT_FAILS(cg_idx_load(path, CG_IDX_NATIVE, CG_CPU, &t), c->status, path, c->kw[0], c->kw[1], c->kw[2]);
    ck_assert_ptr_eq(t, sentinel);
    size_t n;
    uint8_t *b = cgt_slurp(path, &n);
    CGT_FAILS(cg_idx_load_mem(b, n, c->file, CG_IDX_NATIVE, CG_CPU, &t), c->status, c->file, c->kw[0], c->kw[1],
              c->kw[2]);
    ck_assert_ptr_eq(t, sentinel);
    free(b);
}
END_TEST

START_TEST(test_every_truncation) {
    char path[512];
    snprintf(path, sizeof path, "%s/idx/good_images.idx3", cgt_data_dir());
    size_t n;
    uint8_t *b = cgt_slurp(path, &n);
    size_t gn;
    uint8_t *g = gz(b, n, &gn);
    for (size_t k = 0; k < n; k++) {
        cg_tensor *t = NULL;
        CGT_FAILS(cg_idx_load_mem(b, k, "cut", CG_IDX_NATIVE, CG_CPU, &t), CG_E_FORMAT, "cut", "truncated");
        ck_assert_ptr_null(t);
    }
    for (size_t k = 0; k < gn; k++) {
        cg_tensor *t = NULL;
        cg_status s = cg_idx_load_mem(g, k, "cutgz", CG_IDX_NATIVE, CG_CPU, &t);
        ck_assert_msg(s == CG_E_FORMAT, "gzip prefix %zu: %s %s", k, cg_status_str(s), cg_last_error());
        ck_assert_ptr_null(t);
    }
    free(g);
    free(b);
}
END_TEST

START_TEST(test_fashion_mnist) {
    const char *dir = getenv("CG_FASHION_MNIST_DIR");
    if (!dir || !*dir) dir = CG_FASHION_MNIST_DEFAULT_DIR;
    char probe[512];
    snprintf(probe, sizeof probe, "%s/t10k-labels-idx1-ubyte.gz", dir);
    FILE *f = fopen(probe, "rb");
    if (!f) {
        fprintf(stderr, "test_fashion_mnist: SKIPPED, %s absent (apt install dataset-fashion-mnist)\n", probe);
        return;
    }
    fclose(f);
    cg_tensor *x, *y;
    CGT_OK(cg_fashion_mnist_load(NULL, CG_SPLIT_TEST, 1, CG_CPU, &x, &y));
    ck_assert_int_eq(cg_tensor_ndim(x), 3);
    ck_assert_int_eq(cg_tensor_shape(x)[0], 10000);
    ck_assert_int_eq(cg_tensor_shape(x)[1], 28);
    ck_assert_int_eq(cg_tensor_dtype(x), CG_F32);
    ck_assert_int_eq(cg_tensor_shape(y)[0], 10000);
    ck_assert_int_eq(cg_tensor_dtype(y), CG_I64);
    const int64_t *l = cg_tensor_data(y);
    int64_t counts[10] = {0};
    for (int i = 0; i < 10000; i++) counts[l[i]]++;
    for (int c = 0; c < 10; c++) ck_assert_int_eq(counts[c], 1000); /* the test split is balanced */
    const float *p = cg_tensor_data(x);
    double sum = 0;
    float lo = 1, hi = 0;
    for (int64_t i = 0; i < cg_tensor_numel(x); i++) {
        sum += p[i];
        lo = p[i] < lo ? p[i] : lo;
        hi = p[i] > hi ? p[i] : hi;
    }
    ck_assert_float_eq(lo, 0.0f);
    ck_assert_float_eq(hi, 1.0f);
    double mean = sum / (double)cg_tensor_numel(x);
    ck_assert_msg(mean > 0.27 && mean < 0.30, "mean pixel %g, Fashion-MNIST's is about 0.286", mean);
    cg_tensor_release(x);
    cg_tensor_release(y);
    CGT_OK(cg_fashion_mnist_load(dir, CG_SPLIT_TRAIN, 0, CG_CPU, &x, &y));
    ck_assert_int_eq(cg_tensor_shape(x)[0], 60000);
    ck_assert_int_eq(cg_tensor_dtype(x), CG_U8);
    ck_assert_int_eq(cg_tensor_shape(y)[0], 60000);
    cg_tensor_release(x);
    cg_tensor_release(y);
    CGT_FAILS(cg_mnist_load("/nonexistent-dir", CG_SPLIT_TRAIN, 1, CG_CPU, &x, &y), CG_E_IO, "/nonexistent-dir",
              "train-images-idx3-ubyte");
}
END_TEST

START_TEST(test_mnist_dir_checks) {
    /* a directory whose label count disagrees with the images */
    char dir[] = "/tmp/cg_mnist_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    uint8_t img[4 + 12 + 2 * 784] = {0, 0, 8, 3}, lab[4 + 4 + 3] = {0, 0, 8, 1};
    put_be32(img + 4, 2), put_be32(img + 8, 28), put_be32(img + 12, 28);
    put_be32(lab + 4, 3);
    lab[8] = 1, lab[9] = 2, lab[10] = 3;
    char p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/t10k-images-idx3-ubyte", dir);
    snprintf(p2, sizeof p2, "%s/t10k-labels-idx1-ubyte", dir);
    FILE *f = fopen(p1, "wb");
    ck_assert(fwrite(img, 1, sizeof img, f) == sizeof img);
    fclose(f);
    f = fopen(p2, "wb");
    ck_assert(fwrite(lab, 1, sizeof lab, f) == sizeof lab);
    fclose(f);
    cg_tensor *x = NULL, *y = NULL;
    CGT_FAILS(cg_mnist_load(dir, CG_SPLIT_TEST, 1, CG_CPU, &x, &y), CG_E_FORMAT, "3 labels", "2 images");
    ck_assert_ptr_null(x);
    lab[10] = 10; /* out of range label, and a count that matches */
    put_be32(lab + 4, 2);
    f = fopen(p2, "wb");
    ck_assert(fwrite(lab, 1, sizeof lab - 1, f) == sizeof lab - 1);
    fclose(f);
    lab[9] = 12;
    f = fopen(p2, "wb");
    ck_assert(fwrite(lab, 1, sizeof lab - 1, f) == sizeof lab - 1);
    fclose(f);
    CGT_FAILS(cg_mnist_load(dir, CG_SPLIT_TEST, 1, CG_CPU, &x, &y), CG_E_FORMAT, p2, "label 1 is 12");
    unlink(p1);
    unlink(p2);
    rmdir(dir);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("idx");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_every_type_random);
    tcase_add_test(tc, test_good_files_and_modes);
    tcase_add_loop_test(tc, test_bad_files, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, test_every_truncation);
    tcase_add_test(tc, test_fashion_mnist);
    tcase_add_test(tc, test_mnist_dir_checks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
