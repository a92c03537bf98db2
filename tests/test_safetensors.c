/* safetensors and state dicts: bit-exact round trips for every dtype, a file built byte by
 * byte per the format, the crafted bad files in tests/data/safetensors (status and message
 * for each), every truncation and random corruption of a good file, expected-set checks,
 * and atomic replacement (abort and a SIGKILL mid-write both leave a complete file). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgrad/io.h"
#include "cgt.h"
#include "internal.h"

static char g_tmp[256];

static const char *tmpdir(void) {
    strcpy(g_tmp, "/tmp/cg_st_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_tmp));
    return g_tmp;
}

static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void spit(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert(fwrite(b, 1, n, f) == n);
    ck_assert(fclose(f) == 0);
}

/* A tensor of random bytes (every bit pattern, NaN payloads included) in dtype dt. */
static cg_tensor *rand_bytes_tensor(cgt_rand *r, const int64_t *shape, int ndim, cg_dtype dt) {
    cg_tensor *t;
    CGT_OK(cg__tensor_new(shape, ndim, dt, CG_CPU, &t));
    uint8_t *p = cg_tensor_data(t);
    for (size_t i = 0; i < cg_tensor_nbytes(t); i++) p[i] = (uint8_t)cgt_next(r);
    return t;
}

static void assert_same_bytes(const cg_tensor *a, const cg_tensor *b, const char *name) {
    ck_assert_msg(cg_tensor_dtype(a) == cg_tensor_dtype(b), "%s: dtype %s vs %s", name,
                  cg_dtype_name(cg_tensor_dtype(a)), cg_dtype_name(cg_tensor_dtype(b)));
    ck_assert_int_eq(cg_tensor_ndim(a), cg_tensor_ndim(b));
    for (int d = 0; d < cg_tensor_ndim(a); d++) ck_assert_int_eq(cg_tensor_shape(a)[d], cg_tensor_shape(b)[d]);
    size_t n = cg_tensor_nbytes(a);
    ck_assert_uint_eq(n, cg_tensor_nbytes(b));
    uint8_t *x = malloc(n + 1), *y = malloc(n + 1);
    CGT_OK(cg_tensor_to_host(a, x, n));
    CGT_OK(cg_tensor_to_host(b, y, n));
    ck_assert_msg(memcmp(x, y, n) == 0, "%s: bytes differ after the round trip", name);
    free(x);
    free(y);
}

/* ---------------- round trips ---------------- */

START_TEST(test_round_trip_every_dtype) {
    cgt_rand r = cgt_rand_make("st_round_trip");
    const char *dir = tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cg_state_dict *sd;
    CGT_OK(cg_state_dict_create(&sd));
    char name[64];
    int k = 0;
    for (int rep = 0; rep < 3; rep++)
        for (int dt = 0; dt < CG_DTYPE_COUNT; dt++) {
            int ndim = (int)cgt_randint(&r, 0, 5);
            int64_t shape[4];
            for (int d = 0; d < ndim; d++) shape[d] = cgt_randint(&r, rep == 2 && d == 0 ? 0 : 1, 7);
            cg_tensor *t = rand_bytes_tensor(&r, shape, ndim, (cg_dtype)dt);
            snprintf(name, sizeof name, "%d.%s", k++, cg_dtype_name((cg_dtype)dt));
            CGT_OK(cg_state_dict_set(sd, name, t));
            cg_tensor_release(t);
        }
    CGT_OK(cg_state_dict_set_meta(sd, "format", "pt"));
    CGT_OK(cg_state_dict_set_meta(sd, "note", "quotes \" and unicode \xc3\xa9"));
    CGT_OK(cg_safetensors_save(path, sd));

    cg_state_dict *back = NULL;
    CGT_OK(cg_safetensors_load(path, CG_CPU, &back));
    ck_assert_uint_eq(cg_state_dict_count(back), cg_state_dict_count(sd));
    for (size_t i = 0; i < cg_state_dict_count(sd); i++) {
        ck_assert_str_eq(cg_state_dict_name_at(back, i), cg_state_dict_name_at(sd, i)); /* order kept */
        assert_same_bytes(cg_state_dict_tensor_at(back, i), cg_state_dict_tensor_at(sd, i), cg_state_dict_name_at(sd, i));
    }
    ck_assert_uint_eq(cg_state_dict_meta_count(back), 2);
    ck_assert_str_eq(cg_state_dict_get_meta(back, "format"), "pt");
    ck_assert_str_eq(cg_state_dict_get_meta(back, "note"), "quotes \" and unicode \xc3\xa9");
    ck_assert_str_eq(cg_state_dict_source(back), path);

    /* the memory reader agrees */
    size_t n;
    uint8_t *bytes = cgt_slurp(path, &n);
    cg_state_dict *mem = NULL;
    CGT_OK(cg_safetensors_load_mem(bytes, n, "mem", CG_CPU, &mem));
    for (size_t i = 0; i < cg_state_dict_count(sd); i++)
        assert_same_bytes(cg_state_dict_tensor_at(mem, i), cg_state_dict_tensor_at(sd, i), "mem");

    /* saving the loaded dict reproduces the file byte for byte */
    char path2[512];
    snprintf(path2, sizeof path2, "%s/again.safetensors", dir);
    CGT_OK(cg_safetensors_save(path2, back));
    size_t n2;
    uint8_t *bytes2 = cgt_slurp(path2, &n2);
    ck_assert_uint_eq(n, n2);
    ck_assert(memcmp(bytes, bytes2, n) == 0);
    free(bytes);
    free(bytes2);
    cg_state_dict_free(sd);
    cg_state_dict_free(back);
    cg_state_dict_free(mem);
    rm_tree(dir);
}
END_TEST

START_TEST(test_saved_layout) {
    /* header length a multiple of 8 after the 8-byte prefix, space padding, valid JSON */
    cgt_rand r = cgt_rand_make("st_layout");
    const char *dir = tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    for (int trial = 0; trial < 8; trial++) {
        cg_state_dict *sd;
        CGT_OK(cg_state_dict_create(&sd));
        int nt = (int)cgt_randint(&r, 1, 4);
        for (int i = 0; i < nt; i++) {
            int64_t shape[2] = {cgt_randint(&r, 1, 5), cgt_randint(&r, 1, 5)};
            cg_tensor *t = rand_bytes_tensor(&r, shape, 2, (cg_dtype)cgt_randint(&r, 0, CG_DTYPE_COUNT));
            char name[64];
            snprintf(name, sizeof name, "layer%lld.w%d", (long long)cgt_randint(&r, 0, 1000000), i);
            CGT_OK(cg_state_dict_set(sd, name, t));
            cg_tensor_release(t);
        }
        CGT_OK(cg_safetensors_save(path, sd));
        size_t n;
        uint8_t *b = cgt_slurp(path, &n);
        uint64_t hn = 0;
        for (int i = 7; i >= 0; i--) hn = (hn << 8) | b[i];
        ck_assert_uint_eq((8 + hn) % 8, 0);
        ck_assert_int_eq(b[8], '{');
        json_error_t err;
        json_t *root = json_loadb((const char *)b + 8, hn, JSON_REJECT_DUPLICATES, &err);
        ck_assert_msg(root != NULL, "header is not JSON: %s", err.text);
        uint64_t total = 0;
        for (size_t i = 0; i < cg_state_dict_count(sd); i++) {
            json_t *e = json_object_get(root, cg_state_dict_name_at(sd, i));
            ck_assert_ptr_nonnull(e);
            json_t *off = json_object_get(e, "data_offsets");
            ck_assert_uint_eq(json_integer_value(json_array_get(off, 0)), total);
            total += cg_tensor_nbytes(cg_state_dict_tensor_at(sd, i));
            ck_assert_uint_eq(json_integer_value(json_array_get(off, 1)), total);
        }
        ck_assert_uint_eq(n, 8 + hn + total);
        json_decref(root);
        free(b);
        cg_state_dict_free(sd);
    }
    ck_assert_int_eq(count_entries(dir), 1); /* no temporaries left behind */
    rm_tree(dir);
}
END_TEST

START_TEST(test_strided_and_replaced) {
    /* a transposed view is written in logical (row-major) order; set() replaces in place */
    double v[6] = {1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    cg_tensor *t = cgt_tensor(v, shape, 2, CG_F64, CG_CPU), *tv;
    int64_t tshape[2] = {3, 2}, tstr[2] = {1, 3};
    CGT_OK(cg__tensor_view(t, tshape, tstr, 2, 0, &tv));
    cg_state_dict *sd;
    CGT_OK(cg_state_dict_create(&sd));
    CGT_OK(cg_state_dict_set(sd, "a", t));
    CGT_OK(cg_state_dict_set(sd, "b", t));
    CGT_OK(cg_state_dict_set(sd, "a", tv));
    ck_assert_uint_eq(cg_state_dict_count(sd), 2);
    ck_assert_str_eq(cg_state_dict_name_at(sd, 0), "a");
    ck_assert_ptr_eq(cg_state_dict_get(sd, "a"), tv);
    const char *dir = tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    CGT_OK(cg_safetensors_save(path, sd));
    cg_state_dict *back;
    CGT_OK(cg_safetensors_load(path, CG_CPU, &back));
    double *a = cgt_read(cg_state_dict_get(back, "a"));
    const double want[6] = {1, 4, 2, 5, 3, 6};
    for (int i = 0; i < 6; i++) ck_assert_double_eq(a[i], want[i]);
    ck_assert_int_eq(cg_tensor_shape(cg_state_dict_get(back, "a"))[0], 3);
    free(a);
    CGT_FAILS(cg_state_dict_set(sd, "__metadata__", t), CG_E_INVALID, "reserved");
    CGT_FAILS(cg_state_dict_set(sd, "", t), CG_E_INVALID, "empty");
    ck_assert_ptr_null(cg_state_dict_get(sd, "zzz"));
    ck_assert_ptr_null(cg_state_dict_name_at(sd, 2));
    cg_state_dict_free(sd);
    cg_state_dict_free(back);
    cg_tensor_release(tv);
    cg_tensor_release(t);
    rm_tree(dir);
}
END_TEST

/* ---------------- a file built byte by byte ---------------- */

static void put_f32(uint8_t *p, float f) {
    uint32_t w;
    memcpy(&w, &f, 4);
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(w >> (8 * i));
}

START_TEST(test_hand_built_file) {
    /* per the format: u64 LE N, N bytes of JSON, then data (offsets relative to its start) */
    const char *json = "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}, "
                       "\"0.bias\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[16,32]},"
                       "\"__metadata__\":{\"format\":\"pt\",\"epoch\":\"3\"}}";
    size_t hn = strlen(json);
    uint8_t file[512];
    size_t n = 0;
    for (int i = 0; i < 8; i++) file[n++] = (uint8_t)(hn >> (8 * i));
    memcpy(file + n, json, hn);
    n += hn;
    const float w[4] = {1.5f, -2.25f, 3.0e-3f, 65504.0f};
    for (int i = 0; i < 4; i++, n += 4) put_f32(file + n, w[i]);
    const int64_t b[2] = {-7, 1099511627776LL};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 8; k++) file[n++] = (uint8_t)((uint64_t)b[i] >> (8 * k));

    const char *dir = tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/hand.safetensors", dir);
    spit(path, file, n);
    for (int via_mem = 0; via_mem < 2; via_mem++) {
        cg_state_dict *sd = NULL;
        if (via_mem) CGT_OK(cg_safetensors_load_mem(file, n, "hand", CG_CPU, &sd));
        else CGT_OK(cg_safetensors_load(path, CG_CPU, &sd));
        ck_assert_uint_eq(cg_state_dict_count(sd), 2);
        ck_assert_str_eq(cg_state_dict_name_at(sd, 0), "0.weight");
        ck_assert_str_eq(cg_state_dict_name_at(sd, 1), "0.bias");
        cg_tensor *tw = cg_state_dict_get(sd, "0.weight"), *tb = cg_state_dict_get(sd, "0.bias");
        ck_assert_int_eq(cg_tensor_dtype(tw), CG_F32);
        ck_assert_int_eq(cg_tensor_ndim(tw), 2);
        ck_assert_int_eq(cg_tensor_shape(tw)[0], 2);
        ck_assert_int_eq(cg_tensor_shape(tw)[1], 2);
        const float *pw = cg_tensor_data(tw);
        for (int i = 0; i < 4; i++) ck_assert_float_eq(pw[i], w[i]);
        ck_assert_int_eq(cg_tensor_dtype(tb), CG_I64);
        ck_assert_int_eq(cg_tensor_shape(tb)[0], 2);
        const int64_t *pb = cg_tensor_data(tb);
        ck_assert_int_eq(pb[0], -7);
        ck_assert_int_eq(pb[1], 1099511627776LL);
        ck_assert_str_eq(cg_state_dict_get_meta(sd, "format"), "pt");
        ck_assert_str_eq(cg_state_dict_get_meta(sd, "epoch"), "3");
        ck_assert_uint_eq(cg_state_dict_meta_count(sd), 2);
        /* as a model would check it */
        cg_tensor_spec spec[2] = {{"0.weight", CG_F32, 2, {2, 2}}, {"0.bias", CG_I64, 1, {2}}};
        CGT_OK(cg_state_dict_check(sd, spec, 2));
        CGT_OK(cg_state_dict_check_finite(sd));
        cg_state_dict_free(sd);
    }
    rm_tree(dir);
}
END_TEST

/* ---------------- bad files ---------------- */

static const cgt_bad_file bad_cases[] = {
    {"truncated_len.safetensors", CG_E_FORMAT, {"truncated", "5 bytes"}},
    {"header_past_eof.safetensors", CG_E_FORMAT, {"header length 1000", "past the end"}},
    {"header_huge.safetensors", CG_E_FORMAT, {"header length", "past the end"}},
    {"bad_json.safetensors", CG_E_FORMAT, {"bad JSON header"}},
    {"not_object.safetensors", CG_E_FORMAT, {"does not start with '{'"}},
    {"dup_keys.safetensors", CG_E_FORMAT, {"bad JSON header", "duplicate"}},
    {"unknown_dtype.safetensors", CG_E_FORMAT, {"tensor 'w'", "unknown dtype 'F7'"}},
    {"unsupported_dtype.safetensors", CG_E_UNSUPPORTED, {"tensor 'w'", "dtype 'BOOL' is not supported"}},
    {"offset_out_of_range.safetensors", CG_E_FORMAT, {"tensor 'w'", "[0, 64]", "out of range"}},
    {"overlap.safetensors", CG_E_FORMAT, {"tensor 'b'", "[8, 24] overlap tensor 'a'"}},
    {"gap.safetensors", CG_E_FORMAT, {"bytes [16, 24)", "belong to no tensor", "'b'"}},
    {"trailing.safetensors", CG_E_FORMAT, {"data region is 24 bytes", "cover only 16"}},
    {"size_mismatch.safetensors", CG_E_FORMAT, {"tensor '0.weight': data_offsets [0, 20] but F32 shape (2, 3) needs 24 bytes"}},
    {"missing_offsets.safetensors", CG_E_FORMAT, {"tensor 'w'", "missing field 'data_offsets'"}},
    {"negative_shape.safetensors", CG_E_FORMAT, {"tensor 'w'", "shape[0]", "non-negative"}},
    {"end_before_begin.safetensors", CG_E_FORMAT, {"tensor 'w'", "[16, 0]", "end before"}},
    {"meta_not_string.safetensors", CG_E_FORMAT, {"__metadata__", "'step'", "not a string"}},
    {"too_many_dims.safetensors", CG_E_UNSUPPORTED, {"tensor 'w'", "9 dimensions"}},
    {"truncated_data.safetensors", CG_E_FORMAT, {"tensor 'a'", "out of range", "12 bytes"}},
    {"zero_dim_overflow.safetensors", CG_E_FORMAT, {"tensor 'w'", "shape overflows"}}, /* fuzzer finding */
};

START_TEST(test_bad_files) {
    const cgt_bad_file *c = &bad_cases[_i];
    char path[512];
    snprintf(path, sizeof path, "%s/safetensors/%s", cgt_data_dir(), c->file);
    cg_state_dict *sentinel = (cg_state_dict *)(uintptr_t)0x5afe, *sd = sentinel;
    CGT_FAILS(cg_safetensors_load(path, CG_CPU, &sd), c->status, path, c->kw[0], c->kw[1], c->kw[2]);
    ck_assert_ptr_eq(sd, sentinel); /* nothing handed back */
    size_t n;
    uint8_t *b = cgt_slurp(path, &n);
    CGT_FAILS(cg_safetensors_load_mem(b, n, c->file, CG_CPU, &sd), c->status, c->file, c->kw[0], c->kw[1], c->kw[2]);
    ck_assert_ptr_eq(sd, sentinel);
    free(b);
}
END_TEST

START_TEST(test_good_corpus_files) {
    char path[512];
    snprintf(path, sizeof path, "%s/safetensors/good_small.safetensors", cgt_data_dir());
    cg_state_dict *sd;
    CGT_OK(cg_safetensors_load(path, CG_CPU, &sd));
    ck_assert_uint_eq(cg_state_dict_count(sd), 2);
    ck_assert_str_eq(cg_state_dict_get_meta(sd, "step"), "7");
    const float *bias = cg_tensor_data(cg_state_dict_get(sd, "0.bias"));
    ck_assert_float_eq(bias[0], -0.5f);
    ck_assert_float_eq(bias[1], 0.25f);
    cg_state_dict_free(sd);
    snprintf(path, sizeof path, "%s/safetensors/good_empty.safetensors", cgt_data_dir());
    CGT_OK(cg_safetensors_load(path, CG_CPU, &sd));
    ck_assert_uint_eq(cg_state_dict_count(sd), 0);
    cg_state_dict_free(sd);
    snprintf(path, sizeof path, "%s/safetensors/does_not_exist.safetensors", cgt_data_dir());
    CGT_FAILS(cg_safetensors_load(path, CG_CPU, &sd), CG_E_IO, path, "cannot open");
}
END_TEST

START_TEST(test_nan_data) {
    char path[512];
    snprintf(path, sizeof path, "%s/safetensors/nan_data.safetensors", cgt_data_dir());
    cg_state_dict *sd;
    CGT_OK(cg_safetensors_load(path, CG_CPU, &sd)); /* a valid file ... */
    CGT_FAILS(cg_state_dict_check_finite(sd), CG_E_NUMERIC, path, "tensor 'w'", "element 1 is NaN");
    cg_state_dict_free(sd);
}
END_TEST

START_TEST(test_every_truncation_and_corruption) {
    char path[512];
    snprintf(path, sizeof path, "%s/safetensors/good_small.safetensors", cgt_data_dir());
    size_t n;
    uint8_t *b = cgt_slurp(path, &n);
    for (size_t k = 0; k < n; k++) {
        cg_state_dict *sd = NULL;
        cg_status s = cg_safetensors_load_mem(b, k, "cut", CG_CPU, &sd);
        ck_assert_msg(s == CG_E_FORMAT, "prefix of %zu bytes: %s (%s)", k, cg_status_str(s), cg_last_error());
        ck_assert_ptr_null(sd);
        ck_assert_ptr_nonnull(strstr(cg_last_error(), "cut"));
    }
    /* random byte flips: either a clean error or a dict with the declared sizes */
    cgt_rand r = cgt_rand_make("st_corrupt");
    uint8_t *c = malloc(n);
    for (int trial = 0; trial < 2000; trial++) {
        memcpy(c, b, n);
        int flips = (int)cgt_randint(&r, 1, 4);
        for (int f = 0; f < flips; f++) c[cgt_randint(&r, 0, (int64_t)n)] = (uint8_t)cgt_next(&r);
        cg_state_dict *sd = NULL;
        cg_status s = cg_safetensors_load_mem(c, n, "flip", CG_CPU, &sd);
        if (s == CG_OK) {
            size_t total = 0;
            for (size_t i = 0; i < cg_state_dict_count(sd); i++) total += cg_tensor_nbytes(cg_state_dict_tensor_at(sd, i));
            ck_assert_uint_le(total, n);
            cg_state_dict_free(sd);
        } else {
            ck_assert_ptr_null(sd);
            ck_assert(strlen(cg_last_error()) > 0);
        }
    }
    free(c);
    free(b);
}
END_TEST

/* ---------------- expected sets ---------------- */

START_TEST(test_check_expected_set) {
    char path[512];
    snprintf(path, sizeof path, "%s/safetensors/good_small.safetensors", cgt_data_dir());
    cg_state_dict *sd;
    CGT_OK(cg_safetensors_load(path, CG_CPU, &sd));
    cg_tensor_spec ok[2] = {{"0.weight", CG_F32, 2, {2, 2}}, {"0.bias", CG_F32, 1, {2}}};
    CGT_OK(cg_state_dict_check(sd, ok, 2));
    cg_tensor_spec missing[3] = {ok[0], ok[1], {"1.weight", CG_F32, 2, {4, 2}}};
    CGT_FAILS(cg_state_dict_check(sd, missing, 3), CG_E_FORMAT, path, "missing tensor '1.weight'", "(4, 2)");
    CGT_FAILS(cg_state_dict_check(sd, ok, 1), CG_E_FORMAT, path, "unexpected tensor '0.bias'");
    cg_tensor_spec shape[2] = {{"0.weight", CG_F32, 2, {2, 3}}, ok[1]};
    CGT_FAILS(cg_state_dict_check(sd, shape, 2), CG_E_SHAPE, path, "'0.weight'", "(2, 2)", "(2, 3)");
    cg_tensor_spec dt[2] = {ok[0], {"0.bias", CG_F64, 1, {2}}};
    CGT_FAILS(cg_state_dict_check(sd, dt, 2), CG_E_DTYPE, path, "'0.bias' is f32, expected f64");
    cg_state_dict_free(sd);
}
END_TEST

/* ---------------- atomic writes ---------------- */

static cg_state_dict *filled_dict(double value, int64_t n) {
    cg_state_dict *sd;
    CGT_OK(cg_state_dict_create(&sd));
    int64_t shape[1] = {n};
    cg_tensor *t;
    CGT_OK(cg_tensor_full(shape, 1, CG_F64, CG_CPU, value, &t));
    CGT_OK(cg_state_dict_set(sd, "w", t));
    cg_tensor_release(t);
    return sd;
}

/* Value every element of "w" holds; asserts they agree (a torn file would mix). */
static double uniform_value(const char *path) {
    cg_state_dict *sd;
    CGT_OK(cg_safetensors_load(path, CG_CPU, &sd));
    cg_tensor *w = cg_state_dict_get(sd, "w");
    ck_assert_ptr_nonnull(w);
    const double *p = cg_tensor_data(w);
    for (int64_t i = 1; i < cg_tensor_numel(w); i++) ck_assert(p[i] == p[0]);
    double v = p[0];
    cg_state_dict_free(sd);
    return v;
}

START_TEST(test_atomic_abort_keeps_old) {
    const char *dir = tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    cg_state_dict *a = filled_dict(1.0, 1000);
    CGT_OK(cg_safetensors_save(path, a));
    cg_atomic_file *af;
    FILE *fp;
    CGT_OK(cg_atomic_open(path, &af, &fp));
    ck_assert(fputs("half-written garbage", fp) >= 0);
    ck_assert_int_eq(count_entries(dir), 2); /* the temporary sits next to the target */
    cg_atomic_abort(af);
    ck_assert_int_eq(count_entries(dir), 1);
    ck_assert_double_eq(uniform_value(path), 1.0);
    /* commit replaces */
    CGT_OK(cg_atomic_open(path, &af, &fp));
    ck_assert(fputs("new", fp) >= 0);
    CGT_OK(cg_atomic_commit(af));
    size_t n;
    uint8_t *b = cgt_slurp(path, &n);
    ck_assert_uint_eq(n, 3);
    free(b);
    /* unwritable destination: clear error naming the path */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", dir);
    CGT_FAILS(cg_safetensors_save(bad, a), CG_E_IO, bad, "temporary");
    cg_state_dict_free(a);
    rm_tree(dir);
}
END_TEST

START_TEST(test_atomic_survives_kill) {
    /* a child rewrites the checkpoint over and over; SIGKILL at a random moment must leave
     * a complete old or new file, never a torn one */
    cgt_rand r = cgt_rand_make("st_kill");
    const char *dir = tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    cg_state_dict *a = filled_dict(0.0, 1 << 20); /* 8 MB */
    CGT_OK(cg_safetensors_save(path, a));
    cg_state_dict_free(a);
    for (int trial = 0; trial < 4; trial++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            for (int k = 1;; k++) {
                cg_state_dict *sd = filled_dict((double)k, 1 << 20);
                if (cg_safetensors_save(path, sd) != CG_OK) _exit(3);
                cg_state_dict_free(sd);
            }
        }
        struct timespec ts = {0, (long)cgt_randint(&r, 1, 200) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int wst;
        waitpid(pid, &wst, 0);
        ck_assert_msg(WIFSIGNALED(wst), "writer exited on its own (status %d)", wst);
        double v = uniform_value(path);
        ck_assert(v >= 0 && v == floor(v));
    }
    rm_tree(dir);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_round_trip_every_dtype);
    tcase_add_test(tc, test_saved_layout);
    tcase_add_test(tc, test_strided_and_replaced);
    tcase_add_test(tc, test_hand_built_file);
    tcase_add_loop_test(tc, test_bad_files, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, test_good_corpus_files);
    tcase_add_test(tc, test_nan_data);
    tcase_add_test(tc, test_every_truncation_and_corruption);
    tcase_add_test(tc, test_check_expected_set);
    tcase_add_test(tc, test_atomic_abort_keeps_old);
    tcase_add_test(tc, test_atomic_survives_kill);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
