/* Tensors: creation, geometry, views, host transfer, casts (f16/bf16 rounding), clone,
 * strided copies, reference counting, random fills (moments and reproducibility). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cgt.h"

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

START_TEST(creation) {
    int64_t s[3] = {2, 3, 5};
    cg_tensor *z = NULL, *o = NULL, *f = NULL, *a = NULL;
    CGT_OK(cg_tensor_zeros(s, 3, CG_F32, CG_CPU, &z));
    CGT_OK(cg_tensor_ones(s, 3, CG_F64, CG_CPU, &o));
    CGT_OK(cg_tensor_full(s, 2, CG_I32, CG_CPU, -7.0, &f));
    CGT_OK(cg_tensor_arange(1.5, -0.5, 7, CG_F64, CG_CPU, &a));
    ck_assert_int_eq(cg_tensor_ndim(z), 3);
    ck_assert_int_eq(cg_tensor_numel(z), 30);
    ck_assert_int_eq(cg_tensor_nbytes(z), 120);
    ck_assert_int_eq(cg_tensor_nbytes(o), 240);
    ck_assert_int_eq(cg_tensor_dtype(f), CG_I32);
    ck_assert_int_eq(cg_tensor_dim(z, -1), 5);
    ck_assert_int_eq(cg_tensor_dim(z, 0), 2);
    const int64_t *st = cg_tensor_strides(z);
    ck_assert(st[0] == 15 && st[1] == 5 && st[2] == 1);
    ck_assert(cg_tensor_is_contiguous(z));
    ck_assert_int_eq(cg_tensor_device(z).type, CG_DEVICE_CPU);
    double *zv = cgt_read(z), *ov = cgt_read(o), *fv = cgt_read(f), *av = cgt_read(a);
    for (int i = 0; i < 30; i++) ck_assert(zv[i] == 0.0 && ov[i] == 1.0);
    for (int i = 0; i < 6; i++) ck_assert(fv[i] == -7.0);
    for (int i = 0; i < 7; i++) ck_assert(av[i] == 1.5 - 0.5 * i);
    ck_assert_int_eq(cg_tensor_numel(a), 7);
    free(zv), free(ov), free(fv), free(av);
    cg_tensor_release(z), cg_tensor_release(o), cg_tensor_release(f), cg_tensor_release(a);

    /* 0-d and empty tensors */
    cg_tensor *sc = NULL, *em = NULL;
    CGT_OK(cg_tensor_full(NULL, 0, CG_F64, CG_CPU, 2.5, &sc));
    ck_assert_int_eq(cg_tensor_numel(sc), 1);
    ck_assert(cgt_item(sc) == 2.5);
    int64_t e[2] = {0, 4};
    CGT_OK(cg_tensor_zeros(e, 2, CG_F32, CG_CPU, &em));
    ck_assert_int_eq(cg_tensor_numel(em), 0);
    ck_assert_int_eq(cg_tensor_nbytes(em), 0);
    cg_tensor_release(sc), cg_tensor_release(em);
}
END_TEST

START_TEST(from_host_to_host_round_trip) {
    cgt_rand r = cgt_rand_make("host round trip");
    int64_t s[2] = {7, 13};
    float h[91], back[91];
    for (int i = 0; i < 91; i++) h[i] = (float)cgt_normal(&r);
    cg_tensor *t = NULL;
    CGT_OK(cg_tensor_from_host(h, s, 2, CG_F32, CG_CPU, &t));
    for (int i = 0; i < 91; i++) back[i] = NAN;
    CGT_OK(cg_tensor_to_host(t, back, sizeof back));
    ck_assert(memcmp(h, back, sizeof h) == 0);
    /* copy_from_host overwrites in place and bumps the version */
    uint64_t v0 = cg_tensor_version(t);
    for (int i = 0; i < 91; i++) h[i] = (float)i;
    CGT_OK(cg_tensor_copy_from_host(t, h, sizeof h));
    ck_assert_uint_gt(cg_tensor_version(t), v0);
    CGT_OK(cg_tensor_to_host(t, back, sizeof back));
    ck_assert(memcmp(h, back, sizeof h) == 0);
    /* item */
    int64_t one = 1;
    cg_tensor *x = NULL;
    int64_t iv = -42;
    CGT_OK(cg_tensor_from_host(&iv, &one, 1, CG_I64, CG_CPU, &x));
    ck_assert(cgt_item(x) == -42.0);
    cg_tensor_release(x);
    cg_tensor_release(t);
}
END_TEST

START_TEST(views_share_storage) {
    double v[24];
    for (int i = 0; i < 24; i++) v[i] = i;
    int64_t s[3] = {2, 3, 4};
    cg_tensor *x = cgt_tensor(v, s, 3, CG_F64, CG_CPU), *t = NULL, *sl = NULL, *rs = NULL, *c = NULL;
    CGT_OK(cg_transpose(x, 0, 2, &t));
    ck_assert(cg_tensor_dim(t, 0) == 4 && cg_tensor_dim(t, 1) == 3 && cg_tensor_dim(t, 2) == 2);
    ck_assert(cg_tensor_strides(t)[0] == 1 && cg_tensor_strides(t)[2] == 12);
    ck_assert(!cg_tensor_is_contiguous(t));
    double *tv = cgt_read(t);
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++)
            for (int cc = 0; cc < 2; cc++) ck_assert(tv[(a * 3 + b) * 2 + cc] == v[(cc * 3 + b) * 4 + a]);
    free(tv);
    CGT_OK(cg_slice_rows(x, 1, 2, &sl));
    ck_assert_int_eq(cg_tensor_dim(sl, 0), 1);
    double *sv = cgt_read(sl);
    for (int i = 0; i < 12; i++) ck_assert(sv[i] == 12 + i);
    free(sv);
    int64_t rshape[2] = {6, -1};
    CGT_OK(cg_reshape(x, rshape, 2, &rs));
    ck_assert(cg_tensor_dim(rs, 1) == 4);
    /* a write through the base is seen by the views (they share storage) */
    double *base = cg_tensor_data(x);
    base[13] = 100;
    ck_assert(((double *)cg_tensor_data(sl))[1] == 100);
    ck_assert(((double *)cg_tensor_data(rs))[13] == 100);
    CGT_OK(cg_contiguous(t, &c));
    ck_assert(cg_tensor_is_contiguous(c));
    ck_assert(cg_tensor_data(c) != cg_tensor_data(x));
    cg_tensor_release(t), cg_tensor_release(sl), cg_tensor_release(rs), cg_tensor_release(c);
    cg_tensor_release(x);
}
END_TEST

START_TEST(cast_round_trips) {
    /* values exactly representable in f16 and bf16 survive f32 -> x -> f32 unchanged */
    double vals[] = {0.0, -0.0, 1.0, -2.5, 0.15625, 256.0, -0.75, 3.0, 1024.0, 0.5, -96.0};
    int64_t n = (int64_t)(sizeof vals / sizeof vals[0]);
    cg_dtype dts[] = {CG_F16, CG_BF16, CG_F64, CG_F32};
    for (int k = 0; k < 4; k++) {
        cg_tensor *x = cgt_tensor(vals, &n, 1, CG_F32, CG_CPU), *h = NULL, *b = NULL;
        CGT_OK(cg_tensor_cast(x, dts[k], &h));
        ck_assert_int_eq(cg_tensor_dtype(h), dts[k]);
        ck_assert_int_eq(cg_tensor_nbytes(h), (size_t)n * cg_dtype_size(dts[k]));
        CGT_OK(cg_tensor_cast(h, CG_F32, &b));
        double *bv = cgt_read(b);
        for (int64_t i = 0; i < n; i++) ck_assert_msg(bv[i] == vals[i], "%s: %g -> %g", cg_dtype_name(dts[k]), vals[i], bv[i]);
        ck_assert(signbit(bv[1]));
        free(bv);
        cg_tensor_release(x), cg_tensor_release(h), cg_tensor_release(b);
    }
    /* integers: exact, and float -> int truncates toward zero like C */
    double iv[] = {3.0, -4.0, 100000.0, 7.9, -7.9};
    int64_t ni = 5;
    cg_tensor *x = cgt_tensor(iv, &ni, 1, CG_F64, CG_CPU), *i32 = NULL, *i64 = NULL;
    CGT_OK(cg_tensor_cast(x, CG_I32, &i32));
    CGT_OK(cg_tensor_cast(x, CG_I64, &i64));
    int32_t a[5];
    int64_t b[5];
    CGT_OK(cg_tensor_to_host(i32, a, sizeof a));
    CGT_OK(cg_tensor_to_host(i64, b, sizeof b));
    ck_assert(a[0] == 3 && a[1] == -4 && a[2] == 100000 && a[3] == 7 && a[4] == -7);
    ck_assert(b[0] == 3 && b[1] == -4 && b[2] == 100000 && b[3] == 7 && b[4] == -7);
    cg_tensor_release(x), cg_tensor_release(i32), cg_tensor_release(i64);
}
END_TEST

START_TEST(bf16_and_f16_round_to_nearest_even) {
    /* bf16 keeps the top 16 bits of an f32. 1 + 2^-8 lies exactly between two bf16 values
     * (1 and 1 + 2^-7): ties go to the even mantissa (1). 1 + 3*2^-8 ties between 1+2^-7
     * (odd) and 1 + 2^-6 (even): rounds up. Just above a tie rounds up. */
    float in[6] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, bits_f32(0x3f808001u), -(1.0f + 0x1p-8f), 1.0f + 0x1p-9f,
                   bits_f32(0x3f80ffffu)};
    float bf_want[6] = {1.0f, 1.0f + 0x1p-6f, 1.0f + 0x1p-7f, -1.0f, 1.0f, 1.0f + 0x1p-7f};
    /* f16 has 10 mantissa bits: ulp at 1 is 2^-10 */
    float f16_in[4] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-11f + 0x1p-20f, 2049.0f};
    float f16_want[4] = {1.0f, 1.0f + 0x1p-9f, 1.0f + 0x1p-10f, 2048.0f};
    int64_t n = 6, m = 4;
    cg_tensor *x = NULL, *b = NULL, *back = NULL;
    CGT_OK(cg_tensor_from_host(in, &n, 1, CG_F32, CG_CPU, &x));
    CGT_OK(cg_tensor_cast(x, CG_BF16, &b));
    CGT_OK(cg_tensor_cast(b, CG_F32, &back));
    float got[6];
    CGT_OK(cg_tensor_to_host(back, got, sizeof got));
    for (int i = 0; i < 6; i++) ck_assert_msg(got[i] == bf_want[i], "bf16 case %d: %a, want %a", i, got[i], bf_want[i]);
    cg_tensor_release(x), cg_tensor_release(b), cg_tensor_release(back);
    CGT_OK(cg_tensor_from_host(f16_in, &m, 1, CG_F32, CG_CPU, &x));
    CGT_OK(cg_tensor_cast(x, CG_F16, &b));
    CGT_OK(cg_tensor_cast(b, CG_F32, &back));
    CGT_OK(cg_tensor_to_host(back, got, 4 * sizeof(float)));
    for (int i = 0; i < 4; i++) ck_assert_msg(got[i] == f16_want[i], "f16 case %d: %a, want %a", i, got[i], f16_want[i]);
    cg_tensor_release(x), cg_tensor_release(b), cg_tensor_release(back);
    /* bit patterns: bf16(1.0) = 0x3f80, f16(1.0) = 0x3c00, f16(-2) = 0xc000 */
    float one[2] = {1.0f, -2.0f};
    int64_t two = 2;
    uint16_t bits[2];
    CGT_OK(cg_tensor_from_host(one, &two, 1, CG_F32, CG_CPU, &x));
    CGT_OK(cg_tensor_cast(x, CG_BF16, &b));
    CGT_OK(cg_tensor_to_host(b, bits, sizeof bits));
    ck_assert(bits[0] == 0x3f80 && bits[1] == 0xc000);
    cg_tensor_release(b);
    CGT_OK(cg_tensor_cast(x, CG_F16, &b));
    CGT_OK(cg_tensor_to_host(b, bits, sizeof bits));
    ck_assert(bits[0] == 0x3c00 && bits[1] == 0xc000);
    cg_tensor_release(b), cg_tensor_release(x);
}
END_TEST

/* NaN casts keep the sign and the payload bits that fit and come out quiet (the rule of
 * dtype_convert.h, which both backends run; x86 does the same in hardware, GPUs do not). */
START_TEST(nan_casts_keep_sign_and_payload) {
    uint32_t in[4] = {0x7fc00000u, 0xffc00000u, 0x7f812345u /* signalling */, 0xffa00001u};
    uint64_t want64[4] = {0x7ff8000000000000ull, 0xfff8000000000000ull, 0x7ff82468a0000000ull, 0xfffc000020000000ull};
    uint32_t want32[4] = {0x7fc00000u, 0xffc00000u, 0x7fc12345u, 0xffe00001u};
    uint16_t want_bf[4] = {0x7fc0u, 0xffc0u, 0x7fc1u, 0xffe0u};
    int64_t n = 4;
    cg_tensor *x = NULL, *d = NULL, *back = NULL, *bf = NULL;
    CGT_OK(cg_tensor_from_host(in, &n, 1, CG_F32, CG_CPU, &x));
    CGT_OK(cg_tensor_cast(x, CG_F64, &d));
    CGT_OK(cg_tensor_cast(d, CG_F32, &back));
    CGT_OK(cg_tensor_cast(d, CG_BF16, &bf));
    uint64_t g64[4];
    uint32_t g32[4];
    uint16_t gbf[4];
    CGT_OK(cg_tensor_to_host(d, g64, sizeof g64));
    CGT_OK(cg_tensor_to_host(back, g32, sizeof g32));
    CGT_OK(cg_tensor_to_host(bf, gbf, sizeof gbf));
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(g64[i] == want64[i], "f32 %08x -> f64 %016llx, want %016llx", in[i], (unsigned long long)g64[i],
                      (unsigned long long)want64[i]);
        ck_assert_msg(g32[i] == want32[i], "f32 %08x -> f64 -> f32 %08x, want %08x", in[i], g32[i], want32[i]);
        ck_assert_msg(gbf[i] == want_bf[i], "f32 %08x -> f64 -> bf16 %04x, want %04x", in[i], gbf[i], want_bf[i]);
    }
    cg_tensor_release(x), cg_tensor_release(d), cg_tensor_release(back), cg_tensor_release(bf);
}
END_TEST

START_TEST(clone_and_strided_copy) {
    cgt_rand r = cgt_rand_make("clone");
    int64_t s[2] = {5, 7}, ts[2] = {7, 5};
    cg_tensor *x = cgt_randn(&r, s, 2, CG_F64, CG_CPU), *c = NULL, *t = NULL, *dst = NULL, *dstT = NULL;
    CGT_OK(cg_tensor_clone(x, &c));
    ck_assert(cg_tensor_data(c) != cg_tensor_data(x));
    double *xv = cgt_read(x), *cv = cgt_read(c);
    ck_assert(memcmp(xv, cv, sizeof(double) * 35) == 0);
    /* clone is independent: writing x leaves c alone */
    ((double *)cg_tensor_data(x))[0] = xv[0] + 1;
    ck_assert(((double *)cg_tensor_data(c))[0] == xv[0]);
    ((double *)cg_tensor_data(x))[0] = xv[0]; /* restore exactly ((v + 1) - 1 may round) */
    /* copy a transposed (strided) source into a contiguous f32 destination */
    CGT_OK(cg_transpose(x, 0, 1, &t));
    CGT_OK(cg_tensor_empty(ts, 2, CG_F32, CG_CPU, &dst));
    cgt_poison(dst);
    CGT_OK(cg_tensor_copy_(dst, t));
    double *dv = cgt_read(dst);
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 5; j++) ck_assert(dv[i * 5 + j] == (double)(float)xv[j * 7 + i]);
    /* copy into a strided destination: dst^T <- x */
    CGT_OK(cg_tensor_zeros(ts, 2, CG_F64, CG_CPU, &dstT));
    cg_tensor *view = NULL;
    CGT_OK(cg_transpose(dstT, 0, 1, &view));
    CGT_OK(cg_tensor_copy_(view, x));
    double *vv = cgt_read(dstT);
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 5; j++) ck_assert(vv[i * 5 + j] == xv[j * 7 + i]);
    free(xv), free(cv), free(dv), free(vv);
    cg_tensor_release(view), cg_tensor_release(dstT), cg_tensor_release(dst), cg_tensor_release(t);
    cg_tensor_release(c), cg_tensor_release(x);
}
END_TEST

START_TEST(refcount) {
    int64_t s = 4;
    cg_tensor *x = NULL, *v = NULL;
    CGT_OK(cg_tensor_ones(&s, 1, CG_F32, CG_CPU, &x));
    ck_assert_ptr_eq(cg_tensor_retain(x), x);
    cg_tensor_release(x); /* back to one reference */
    CGT_OK(cg_reshape(x, &s, 1, &v));
    cg_tensor_release(x); /* the view keeps the storage alive */
    double *vv = cgt_read(v);
    for (int i = 0; i < 4; i++) ck_assert(vv[i] == 1.0);
    free(vv);
    cg_tensor_release(v);
    cg_tensor_release(NULL); /* allowed */
    ck_assert_ptr_null(cg_tensor_retain(NULL));
}
END_TEST

static void moments(const double *v, int64_t n, double *mean, double *sd) {
    double m = 0, s = 0;
    for (int64_t i = 0; i < n; i++) m += v[i];
    m /= (double)n;
    for (int64_t i = 0; i < n; i++) s += (v[i] - m) * (v[i] - m);
    *mean = m;
    *sd = sqrt(s / (double)(n - 1));
}

START_TEST(random_moments_and_reproducibility) {
    cgt_rand r = cgt_rand_make("rand moments");
    const int64_t n = 100001; /* odd: the last Philox block is partly used */
    for (int k = 0; k < 2; k++) {
        cg_dtype dt = k ? CG_F64 : CG_F32;
        cg_rng rng = cgt_lib_rng(&r), start = rng;
        cg_tensor *u = NULL, *g = NULL, *u2 = NULL, *g2 = NULL;
        CGT_OK(cg_tensor_rand_uniform(&n, 1, dt, CG_CPU, -1.0, 3.0, &rng, &u));
        ck_assert_uint_eq(rng.offset, start.offset + (uint64_t)(n + 3) / 4);
        cg_rng mid = rng;
        CGT_OK(cg_tensor_rand_normal(&n, 1, dt, CG_CPU, 2.0, 0.5, &rng, &g));
        double *uv = cgt_read(u), *gv = cgt_read(g), m, sd;
        moments(uv, n, &m, &sd);
        /* U(-1, 3): mean 1, sd 4/sqrt(12); 6 sigma of the sampling error */
        ck_assert_msg(fabs(m - 1.0) < 6 * (4 / sqrt(12.0)) / sqrt((double)n), "uniform mean %g", m);
        ck_assert_msg(fabs(sd - 4 / sqrt(12.0)) < 0.01, "uniform sd %g", sd);
        for (int64_t i = 0; i < n; i++) ck_assert(uv[i] >= -1.0 && uv[i] < 3.0);
        moments(gv, n, &m, &sd);
        ck_assert_msg(fabs(m - 2.0) < 6 * 0.5 / sqrt((double)n), "normal mean %g", m);
        ck_assert_msg(fabs(sd - 0.5) < 0.01, "normal sd %g", sd);
        ck_assert(cgt_all_finite(gv, n));
        /* same seed and offset: same values; the offset moved on, so the next draw differs */
        cg_rng again = start;
        CGT_OK(cg_tensor_rand_uniform(&n, 1, dt, CG_CPU, -1.0, 3.0, &again, &u2));
        ck_assert_uint_eq(again.offset, mid.offset);
        CGT_OK(cg_tensor_rand_normal(&n, 1, dt, CG_CPU, 2.0, 0.5, &again, &g2));
        double *u2v = cgt_read(u2), *g2v = cgt_read(g2);
        ck_assert(memcmp(uv, u2v, (size_t)n * sizeof(double)) == 0);
        ck_assert(memcmp(gv, g2v, (size_t)n * sizeof(double)) == 0);
        cg_tensor_release(u2);
        CGT_OK(cg_tensor_rand_uniform(&n, 1, dt, CG_CPU, -1.0, 3.0, &again, &u2));
        free(u2v);
        u2v = cgt_read(u2);
        int64_t same = 0;
        for (int64_t i = 0; i < n; i++) same += u2v[i] == uv[i];
        ck_assert_msg(same < n / 100, "a draw at a later offset repeated %lld values", (long long)same);
        /* fill_* on an existing tensor draws the same stream */
        cg_rng f = start;
        CGT_OK(cg_tensor_fill_uniform(u2, -1.0, 3.0, &f));
        free(u2v);
        u2v = cgt_read(u2);
        ck_assert(memcmp(uv, u2v, (size_t)n * sizeof(double)) == 0);
        free(uv), free(gv), free(u2v), free(g2v);
        cg_tensor_release(u), cg_tensor_release(g), cg_tensor_release(u2), cg_tensor_release(g2);
    }
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("tensor");
    TCase *t = tcase_create("tensor");
    tcase_add_test(t, creation);
    tcase_add_test(t, from_host_to_host_round_trip);
    tcase_add_test(t, views_share_storage);
    tcase_add_test(t, cast_round_trips);
    tcase_add_test(t, bf16_and_f16_round_to_nearest_even);
    tcase_add_test(t, nan_casts_keep_sign_and_payload);
    tcase_add_test(t, clone_and_strided_copy);
    tcase_add_test(t, refcount);
    tcase_add_test(t, random_moments_and_reproducibility);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
