/* GPU suite: what must match the CPU bit for bit: dropout masks, Philox streams, dtype
 * conversions, strided copies, cg_scale, and the BLAS-1 helpers. */
#include "gpu_suite.h"

/* ---------------------------------------------------------------- bit-exact streams */

START_TEST(dropout_mask_matches_cpu_bitwise) {
    cgt_rand r = cgt_rand_make("dropout");
    int64_t n = 1025 * 3 + 1; /* odd: the tail block of 4 */
    cg_tensor *xc = cgt_randn(&r, &n, 1, CG_F32, CG_CPU), *xg = NULL, *yc = NULL, *yg = NULL;
    CGT_OK(cg_tensor_to(xc, GPU, &xg));
    cg_rng a = cgt_lib_rng(&r), b = a;
    CGT_OK(cg_dropout(xc, 0.3, 1, &a, &yc));
    CGT_OK(cg_dropout(xg, 0.3, 1, &b, &yg));
    ck_assert_msg(a.offset == b.offset, "rng offsets differ");
    float *hc = malloc((size_t)n * 4), *hg = malloc((size_t)n * 4);
    CGT_OK(cg_tensor_to_host(yc, hc, (size_t)n * 4));
    CGT_OK(cg_tensor_to_host(yg, hg, (size_t)n * 4));
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(memcmp(&hc[i], &hg[i], 4) == 0, "dropout element %lld: cpu %.9g cuda %.9g", (long long)i, hc[i],
                      hg[i]);
    free(hc);
    free(hg);
    cg_tensor *all[] = {xc, xg, yc, yg};
    for (int i = 0; i < 4; i++) cg_tensor_release(all[i]);
}
END_TEST

START_TEST(rand_streams_match_cpu) {
    /* k 0-1: uniform on [-1, 3) (exact arithmetic), 2-3: normal, 4-5: uniform on the bounds of a
       Kaiming init (+-1/sqrt(3)), where a fused multiply-add would round differently */
    for (int k = 0; k < 6; k++) {
        cg_dtype dt = k % 2 ? CG_F64 : CG_F32;
        int normal = k == 2 || k == 3;
        double lo = k >= 4 ? -1.0 / sqrt(3.0) : -1.0, hi = k >= 4 ? 1.0 / sqrt(3.0) : 3.0;
        int64_t n = 4099;
        cg_rng a = cg_rng_make(1234 + (uint64_t)k), b = a;
        a.offset = b.offset = 77;
        cg_tensor *tc = NULL, *tg = NULL;
        if (normal) {
            CGT_OK(cg_tensor_rand_normal(&n, 1, dt, CG_CPU, 0.5, 2.0, &a, &tc));
            CGT_OK(cg_tensor_rand_normal(&n, 1, dt, GPU, 0.5, 2.0, &b, &tg));
        } else {
            CGT_OK(cg_tensor_rand_uniform(&n, 1, dt, CG_CPU, lo, hi, &a, &tc));
            CGT_OK(cg_tensor_rand_uniform(&n, 1, dt, GPU, lo, hi, &b, &tg));
        }
        ck_assert(a.offset == b.offset);
        double *vc = cgt_read(tc), *vg = cgt_read(tg);
        /* uniform: exact; normal: device log/sin/cos may differ from libm in the last bits */
        cgt_tol tol = normal ? (cgt_tol){1e-12, 1e-12} : (cgt_tol){0, 0};
        if (normal && dt == CG_F32) tol = (cgt_tol){1e-6, 1e-6};
        for (int64_t i = 0; i < n; i++)
            ck_assert_msg(vc[i] == vg[i] || cgt_close(vg[i], vc[i], tol), "%s %s element %lld: cpu %.17g cuda %.17g",
                          normal ? "normal" : "uniform", cg_dtype_name(dt), (long long)i, vc[i], vg[i]);
        free(vc);
        free(vg);
        cg_tensor_release(tc);
        cg_tensor_release(tg);
    }
}
END_TEST

START_TEST(conversions_match_cpu_bitwise) {
    double vals[] = {0.0,  -0.0, 1.0,     -1.5,     65504.0, 65520.0, 1e-8,  -3e-5, 6.1e-5, 2.5,
                     3.5,  1e10, -1e10,   INFINITY, -INFINITY, NAN,   255.7, 256.2, -7.9, 3e38,
                     1e-40, 0.1, 2147483648.0, -2147483649.0, 0.33333, -NAN, 0.0, 0.0};
    int64_t n = sizeof vals / sizeof vals[0];
    /* NaNs with payloads (quiet and signalling): the GPU's own conversions would give its
     * canonical NaN; dtype_convert.h keeps sign and payload on both backends */
    uint64_t nan_bits[2] = {0x7ff8123456789abcull, 0xfff4000020000001ull};
    memcpy(&vals[n - 2], &nan_bits[0], 8);
    memcpy(&vals[n - 1], &nan_bits[1], 8);
    static const cg_dtype to[] = {CG_F16, CG_BF16, CG_I32, CG_I64, CG_U8, CG_F64, CG_F32};
    for (int src = 0; src < 2; src++) {
        cg_dtype sdt = src ? CG_F64 : CG_F32;
        cg_tensor *hc = cgt_tensor(vals, &n, 1, sdt, CG_CPU), *hg = NULL;
        CGT_OK(cg_tensor_to(hc, GPU, &hg));
        for (size_t k = 0; k < sizeof to / sizeof to[0]; k++) {
            cg_tensor *cc = NULL, *cg = NULL, *back = NULL;
            CGT_OK(cg_tensor_cast(hc, to[k], &cc));
            CGT_OK(cg_tensor_cast(hg, to[k], &cg));
            size_t nb = cg_tensor_nbytes(cc);
            unsigned char *bc = malloc(nb), *bg = malloc(nb);
            CGT_OK(cg_tensor_to_host(cc, bc, nb));
            CGT_OK(cg_tensor_to_host(cg, bg, nb));
            ck_assert_msg(memcmp(bc, bg, nb) == 0, "%s -> %s: bytes differ between cpu and cuda", cg_dtype_name(sdt),
                          cg_dtype_name(to[k]));
            /* and back to f32 on the device */
            CGT_OK(cg_tensor_cast(cg, CG_F32, &back));
            cg_tensor *backc = NULL;
            CGT_OK(cg_tensor_cast(cc, CG_F32, &backc));
            float *fb = malloc((size_t)n * 4), *fc = malloc((size_t)n * 4);
            CGT_OK(cg_tensor_to_host(back, fb, (size_t)n * 4));
            CGT_OK(cg_tensor_to_host(backc, fc, (size_t)n * 4));
            ck_assert_msg(memcmp(fb, fc, (size_t)n * 4) == 0, "%s -> f32 differs", cg_dtype_name(to[k]));
            free(bc);
            free(bg);
            free(fb);
            free(fc);
            cg_tensor_release(cc);
            cg_tensor_release(cg);
            cg_tensor_release(back);
            cg_tensor_release(backc);
        }
        cg_tensor_release(hc);
        cg_tensor_release(hg);
    }
    /* integer to integer keeps 64 bits / wraps like a C cast */
    static const double iv[] = {0, 1, -1, 300, -129, 4294967297.0, 9007199254740993.0};
    int64_t m = 7;
    cg_tensor *ic = cgt_tensor(iv, &m, 1, CG_I64, CG_CPU), *ig = NULL, *a = NULL, *b = NULL;
    CGT_OK(cg_tensor_to(ic, GPU, &ig));
    for (int k = 0; k < 2; k++) {
        cg_dtype d = k ? CG_U8 : CG_I32;
        CGT_OK(cg_tensor_cast(ic, d, &a));
        CGT_OK(cg_tensor_cast(ig, d, &b));
        size_t nb = cg_tensor_nbytes(a);
        unsigned char ba[64], bb[64];
        CGT_OK(cg_tensor_to_host(a, ba, nb));
        CGT_OK(cg_tensor_to_host(b, bb, nb));
        ck_assert_msg(memcmp(ba, bb, nb) == 0, "i64 -> %s differs", cg_dtype_name(d));
        cg_tensor_release(a);
        cg_tensor_release(b);
    }
    cg_tensor_release(ic);
    cg_tensor_release(ig);
}
END_TEST

START_TEST(strided_copy_matches_cpu) {
    cgt_rand r = cgt_rand_make("strided");
    int64_t shape[3] = {127, 3, 1025};
    cg_tensor *xc = cgt_randn(&r, shape, 3, CG_F32, CG_CPU), *xg = NULL;
    CGT_OK(cg_tensor_to(xc, GPU, &xg));
    cg_tensor *tc = NULL, *tg = NULL, *cc = NULL, *cgpu = NULL;
    CGT_OK(cg_transpose(xc, 0, 2, &tc));
    CGT_OK(cg_transpose(xg, 0, 2, &tg));
    CGT_OK(cg_contiguous(tc, &cc));
    CGT_OK(cg_contiguous(tg, &cgpu));
    double *a = cgt_read(cc), *b = cgt_read(cgpu);
    CGT_ASSERT_CLOSE_ARR(b, a, cg_tensor_numel(cc), ((cgt_tol){0, 0}), "transposed contiguous copy");
    free(a);
    free(b);
    cg_tensor *all[] = {xc, xg, tc, tg, cc, cgpu};
    for (int i = 0; i < 6; i++) cg_tensor_release(all[i]);
}
END_TEST

/* cg_scale forward and backward bit for bit like the CPU (computed in double, rounded once),
 * f32 and f64, the float4 path (n % 4 == 0) and the scalar one, -0 kept in the backward, an
 * alpha beyond float's range on tiny f32 values (finite on both). */
START_TEST(scale_matches_cpu_bitwise) {
    cgt_rand r = cgt_rand_make("scale bits");
    static const double ab[3][2] = {{0.1, 1.0 / 3.0}, {-7.25, 0.0}, {1e40, 0.0}};
    for (int dk = 0; dk < 2; dk++)
        for (int64_t n = 1024; n <= 1027; n += 3)
            for (int k = 0; k < 3; k++) {
                cg_dtype dt = dk ? CG_F64 : CG_F32;
                double *x = randn_arr(&r, n, 0, 1e3), *g = randn_arr(&r, n, 0, 1);
                x[0] = -0.0, g[1] = -0.0, x[2] = 1e-38, x[3] = -3e-39;
                if (k == 2)
                    for (int64_t i = 4; i < n; i++) x[i] *= 1e-42; /* alpha x stays in range */
                unsigned char *bytes[2][2];
                size_t nb = (size_t)n * cg_dtype_size(dt);
                for (int dv = 0; dv < 2; dv++) {
                    cg_tensor *tx = cgt_tensor(x, &n, 1, dt, dv ? GPU : CG_CPU), *tg = cgt_tensor(g, &n, 1, dt, dv ? GPU : CG_CPU);
                    CGT_OK(cg_tensor_set_requires_grad(tx, 1));
                    cg_tensor *y = NULL;
                    CGT_OK(cg_scale(tx, ab[k][0], ab[k][1], &y));
                    CGT_OK(cg_backward_ex(y, tg, 0));
                    bytes[dv][0] = malloc(nb), bytes[dv][1] = malloc(nb);
                    CGT_OK(cg_tensor_to_host(y, bytes[dv][0], nb));
                    CGT_OK(cg_tensor_to_host(cg_tensor_grad(tx), bytes[dv][1], nb));
                    cg_tensor_release(y), cg_tensor_release(tx), cg_tensor_release(tg);
                }
                ck_assert_msg(memcmp(bytes[0][0], bytes[1][0], nb) == 0, "scale %s n %lld alpha %g: forward bits differ",
                              cg_dtype_name(dt), (long long)n, ab[k][0]);
                ck_assert_msg(memcmp(bytes[0][1], bytes[1][1], nb) == 0, "scale %s n %lld alpha %g: backward bits differ",
                              cg_dtype_name(dt), (long long)n, ab[k][0]);
                if (k == 2 && dt == CG_F32) {
                    float v;
                    memcpy(&v, bytes[1][0] + 8, 4);
                    ck_assert_msg(isfinite(v) && fabsf(v - 1e2f) < 1e-3f, "alpha 1e40 on 1e-38: %g", v);
                }
                for (int dv = 0; dv < 2; dv++) free(bytes[dv][0]), free(bytes[dv][1]);
                free(x), free(g);
            }
}
END_TEST

START_TEST(blas1_helpers_match_cpu) {
    cgt_rand r = cgt_rand_make("blas1");
    int64_t n = 100003;
    for (int k = 0; k < 2; k++) {
        cg_dtype dt = k ? CG_F64 : CG_F32;
        double *x = randn_arr(&r, n, 0, 1), *y = randn_arr(&r, n, 0, 1);
        double *res[2], ss[2];
        for (int dv = 0; dv < 2; dv++) {
            cg_device dev = dv ? GPU : CG_CPU;
            cg_tensor *tx = cgt_tensor(x, &n, 1, dt, dev), *ty = cgt_tensor(y, &n, 1, dt, dev);
            CGT_OK(cg_add_(ty, -0.75, tx));
            CGT_OK(cg_scale_(ty, 1.5));
            CGT_OK(cg_sumsq(ty, &ss[dv]));
            res[dv] = cgt_read(ty);
            cg_tensor_release(tx);
            cg_tensor_release(ty);
        }
        CGT_ASSERT_CLOSE_ARR(res[1], res[0], n, gpu_tol(dt, 1), "axpy + scal");
        ck_assert_msg(cgt_close(ss[1], ss[0], gpu_tol(dt, 10)), "sumsq cpu %.17g cuda %.17g", ss[0], ss[1]);
        free(res[0]);
        free(res[1]);
        free(x);
        free(y);
    }
}
END_TEST

void gpu_add_bitwise(TCase *ops, TCase *large) {
    (void)large;
    tcase_add_test(ops, dropout_mask_matches_cpu_bitwise);
    tcase_add_test(ops, rand_streams_match_cpu);
    tcase_add_test(ops, conversions_match_cpu_bitwise);
    tcase_add_test(ops, strided_copy_matches_cpu);
    tcase_add_test(ops, scale_matches_cpu_bitwise);
    tcase_add_test(ops, blas1_helpers_match_cpu);
}
