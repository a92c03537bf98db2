/* GPU suite: the fused linear (matmul + bias + activation, cuBLASLt epilogues and the
 * unfused fallbacks) forward and backward at odd shapes, NaN in its backward, and the matmul
 * precision modes. */
#include "gpu_suite.h"
#ifdef CG_HAVE_CUDA
#include "cuda/cuda_internal.h" /* cg__cuda_gemm_paths */
#endif

/* ---------------------------------------------------------------- fused linear, forward and backward */

/* arg {act, bias}: bias 0 none, 1 in[2] as given, 2 in[2] holds M + 1 values and the op
 * gets the view [1, M + 1), whose pointer is one element past an aligned block (4 bytes
 * for f32: cuBLASLt's bias epilogue wants 16, so the forward takes the unfused path). */
static cg_status ap_linear(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    const int *a = arg;
    cg_tensor *view = NULL;
    if (a[1] == 2) CG_TRY(cg_slice_rows(in[2], 1, cg_tensor_shape(in[2])[0], &view));
    cg_status st = cg_linear(in[0], in[1], a[1] == 2 ? view : a[1] ? in[2] : NULL, (cg_linear_act)a[0], out);
    cg_tensor_release(view);
    return st;
}

/* CPU and GPU runs of one linear spec with the output gradient g (n values), compared:
 * output, dx, dW, db (whichever the spec differentiates). */
static void linear_compare(const char *what, const spec *s, const int *arg, cg_dtype dt, const double *g, int64_t n,
                           double tol_mul) {
    result a, b;
    run_spec(s, ap_linear, arg, dt, CG_CPU, g, n, &a);
    run_spec(s, ap_linear, arg, dt, GPU, g, n, &b);
    cgt_tol tol = gpu_tol(dt, tol_mul);
    char msg[512];
    ck_assert_msg(a.nout == n && b.nout == n, "%s: %lld outputs on cpu, %lld on cuda, want %lld", what,
                  (long long)a.nout, (long long)b.nout, (long long)n);
    snprintf(msg, sizeof msg, "%s (%s) forward", what, cg_dtype_name(dt));
    CGT_ASSERT_CLOSE_ARR(b.out, a.out, n, tol, msg);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(!a.g[i] == !s->diff[i], "%s: gradient %d on cpu", what, i);
        if (!a.g[i]) continue;
        ck_assert_msg(b.g[i] && a.ng[i] == b.ng[i], "%s: gradient %d missing on cuda", what, i);
        snprintf(msg, sizeof msg, "%s (%s) gradient of input %d", what, cg_dtype_name(dt), i);
        CGT_ASSERT_CLOSE_ARR(b.g[i], a.g[i], a.ng[i], tol, msg);
    }
    result_free(&a);
    result_free(&b);
}

/* Output gradient for a linear case: N(0, 1) rounded to dt; for ReLU zero where the
 * pre-activation (x W^T + b in double, z) is within 1e-4 of 0, where the two devices'
 * rounding may disagree on relu'(z) (that would be a difference of |g|, not a bug). */
static void linear_seed(double *gm, const double *g, const double *z, const double *bv, int64_t N, int64_t M,
                        int act) {
    for (int64_t r = 0; r < N; r++)
        for (int64_t m = 0; m < M; m++) {
            double pre = z[r * M + m] + (bv ? bv[m] : 0.0);
            gm[r * M + m] = act == CG_LINEAR_RELU && fabs(pre) < 1e-4 ? 0.0 : g[r * M + m];
        }
}

static const int64_t LIN_N[] = {1, 3, 130}, LIN_K[] = {1, 3, 127, 1025}, LIN_M[] = {1, 3, 127, 256, 1025};

/* inputs of one linear shape, drawn and rounded to dt: x (N, K), w (M, K), nb bias values,
 * the output gradient g (N, M); z = x w^T in double; gm is room for linear_seed */
typedef struct lin_data {
    double *x, *w, *b, *g, *z, *gm;
} lin_data;

static lin_data lin_data_make(cgt_rand *r, int64_t N, int64_t K, int64_t M, int64_t nb, cg_dtype dt) {
    lin_data d;
    d.x = randn_arr(r, N * K, 0, 1);
    d.w = randn_arr(r, M * K, 0, 1 / sqrt((double)K));
    d.b = randn_arr(r, nb, 0, 0.5);
    d.g = randn_arr(r, N * M, 0, 1);
    d.z = calloc((size_t)(N * M), sizeof *d.z);
    d.gm = malloc((size_t)(N * M) * sizeof *d.gm);
    cgt_round_array(d.x, N * K, dt);
    cgt_round_array(d.w, M * K, dt);
    cgt_round_array(d.b, nb, dt);
    cgt_round_array(d.g, N * M, dt);
    for (int64_t i = 0; i < N; i++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t k = 0; k < K; k++) d.z[i * M + m] += d.x[i * K + k] * d.w[m * K + k];
    return d;
}

static void lin_data_free(lin_data *d) {
    free(d->x);
    free(d->w);
    free(d->b);
    free(d->g);
    free(d->z);
    free(d->gm);
}

/* cg_linear forward and dx, dW, db against the CPU, each activation, no bias / bias / a bias
 * view off 16-byte alignment, on N (batch) 1, 3, 130 x K 1, 3, 127, 1025 x M 1, 3, 127, 256,
 * 1025. Paths covered in f32: forward bias / GELU(+aux, M = 256) epilogues and the unfused
 * fallbacks (bias view, GELU aux ld M % 8 != 0); backward db from the dW gemm's BGRADB
 * epilogue, and the column sums when dW is not wanted. f64 runs the unfused paths. Then all
 * seven gradient subsets on one shape. loop: f32 (0), f64 (1). */
START_TEST(linear_shapes_fwd_bwd) {
    cg_dtype dt = _i % 2 ? CG_F64 : CG_F32;
#if defined(CG_HAVE_CUDA) && !defined(CG_GPU_SUITE_ON_CPU)
    cg_cuda_gemm_paths p0; /* the counters run from process start; this test's share is the difference */
    cg__cuda_gemm_paths(&p0);
#endif
    cgt_rand r = cgt_rand_make("linear shapes");
    for (size_t in = 0; in < sizeof LIN_N / sizeof LIN_N[0]; in++)
        for (size_t ik = 0; ik < sizeof LIN_K / sizeof LIN_K[0]; ik++)
            for (size_t im = 0; im < sizeof LIN_M / sizeof LIN_M[0]; im++) {
                int64_t N = LIN_N[in], K = LIN_K[ik], M = LIN_M[im];
                lin_data d = lin_data_make(&r, N, K, M, M + 1, dt);
                double *b = d.b;
                for (int bias = 0; bias < 3; bias++)
                    for (int act = 0; act < 3; act++) {
                        int arg[2] = {act, bias};
                        spec s = {.n_in = 3, .v = {d.x, d.w, bias ? b : NULL}, .ndim = {2, 2, 1},
                                  .shape = {{N, K}, {M, K}, {bias == 2 ? M + 1 : M}},
                                  .kind = {CG_F32, CG_F32, CG_F32}, .diff = {1, 1, bias != 0}};
                        linear_seed(d.gm, d.g, d.z, bias == 2 ? b + 1 : bias ? b : NULL, N, M, act);
                        char what[128];
                        snprintf(what, sizeof what, "linear N %lld K %lld M %lld act %d bias %d", (long long)N,
                                 (long long)K, (long long)M, act, bias);
                        linear_compare(what, &s, arg, dt, d.gm, N * M, 50);
                    }
                lin_data_free(&d);
            }
    /* every subset of (dx, dW, db): dW without db, db without dW (column sums), ... */
    int64_t N = 130, K = 127, M = 256;
    lin_data d = lin_data_make(&r, N, K, M, M, dt);
    for (int act = 0; act < 3; act++)
        for (int mask = 1; mask < 8; mask++) {
            int arg[2] = {act, 1};
            spec s = {.n_in = 3, .v = {d.x, d.w, d.b}, .ndim = {2, 2, 1}, .shape = {{N, K}, {M, K}, {M}},
                      .kind = {CG_F32, CG_F32, CG_F32}, .diff = {mask & 1, (mask >> 1) & 1, (mask >> 2) & 1}};
            linear_seed(d.gm, d.g, d.z, d.b, N, M, act);
            char what[128];
            snprintf(what, sizeof what, "linear act %d gradients of (x, W, b) %d%d%d", act, mask & 1, (mask >> 1) & 1,
                     (mask >> 2) & 1);
            linear_compare(what, &s, arg, dt, d.gm, N * M, 50);
        }
    lin_data_free(&d);
#if defined(CG_HAVE_CUDA) && !defined(CG_GPU_SUITE_ON_CPU)
    /* which paths ran: a descriptor bug would hide behind "Lt refused" and the fallbacks */
    cg_cuda_gemm_paths p;
    cg__cuda_gemm_paths(&p);
    char line[512];
    cg__cuda_gemm_paths_str(line, sizeof line);
    printf("linear_shapes_fwd_bwd %s: %s\n", cg_dtype_name(dt), line);
    ck_assert_msg(p.heuristic_errors == p0.heuristic_errors, "cuBLASLt's heuristic failed %lld times here (last %s)",
                  p.heuristic_errors - p0.heuristic_errors, p.last_error);
    if (dt == CG_F32)
        ck_assert_msg(p.fused[CG_EPI_BIAS] > p0.fused[CG_EPI_BIAS], "the bias epilogue never ran fused here: %s", line);
#endif
}
END_TEST

/* NaN through the fused linear's backward, like the CPU, f32 (db from the BGRADB epilogue):
 * a NaN in x row 0 makes that output row NaN (ReLU lets it through), relu'(NaN) = 0 on both
 * devices ([NaN > 0] is false) and dW picks the NaN up from x; NaNs in the output gradient
 * reach dx, dW and db where the unit is active (GELU / no activation: always) and are masked
 * to 0 where a ReLU unit is off. Compared element by element by class (NaN, Inf, close). */
/* A layer with no output features (and a bias with no elements): an empty output and
 * zero input gradients, as on the CPU, for every activation. */
START_TEST(linear_no_outputs) {
    cgt_rand r = cgt_rand_make("linear empty");
    double *x = randn_arr(&r, 3 * 5, 0, 1), dummy = 0;
    for (int act = 0; act < 3; act++) {
        int arg[2] = {act, 1};
        spec s = {.n_in = 3, .v = {x, &dummy, &dummy}, .ndim = {2, 2, 1}, .shape = {{3, 5}, {0, 5}, {0}},
                  .kind = {CG_F32, CG_F32, CG_F32}, .diff = {1, 1, 1}};
        compare_spec("linear 3x5 -> 0", &s, ap_linear, arg, CG_F32, 1);
    }
    free(x);
}
END_TEST

START_TEST(linear_nan_backward_like_cpu) {
    cgt_rand r = cgt_rand_make("linear nan backward");
    int64_t N = 6, K = 64, M = 16;
    double *x = randn_arr(&r, N * K, 0, 1), *w = randn_arr(&r, M * K, 0, 0.2), *b = randn_arr(&r, M, 0, 0.2);
    double *g = randn_arr(&r, N * M, 0, 1);
    x[3] = NAN;                    /* x row 0 */
    for (int64_t m = 0; m < M; m++) /* gradient row 2: NaN in every column, some units on, some off */
        g[2 * M + m] = NAN;
    g[4 * M + 5] = NAN;
    cgt_tol tol = gpu_tol(CG_F32, 10);
    for (int act = 0; act < 3; act++)
        for (int with_b = 0; with_b < 2; with_b++) {
            int arg[2] = {act, with_b};
            spec s = {.n_in = 3, .v = {x, w, with_b ? b : NULL}, .ndim = {2, 2, 1}, .shape = {{N, K}, {M, K}, {M}},
                      .kind = {CG_F32, CG_F32, CG_F32}, .diff = {1, 1, with_b}};
            result res[2];
            run_spec(&s, ap_linear, arg, CG_F32, CG_CPU, g, N * M, &res[0]);
            run_spec(&s, ap_linear, arg, CG_F32, GPU, g, N * M, &res[1]);
            for (int64_t i = 0; i < N * M; i++)
                ck_assert_msg(same_class(res[1].out[i], res[0].out[i], tol),
                              "linear act %d bias %d output %lld: cpu %.9g cuda %.9g", act, with_b, (long long)i,
                              res[0].out[i], res[1].out[i]);
            ck_assert(isnan(res[1].out[0])); /* the NaN row stays NaN */
            int nan_seen = 0;
            for (int k = 0; k < 3; k++) {
                if (!res[0].g[k]) continue;
                ck_assert_msg(res[1].g[k] && res[1].ng[k] == res[0].ng[k], "gradient %d missing on cuda", k);
                for (int64_t i = 0; i < res[0].ng[k]; i++) {
                    nan_seen |= isnan(res[0].g[k][i]);
                    ck_assert_msg(same_class(res[1].g[k][i], res[0].g[k][i], tol),
                                  "linear act %d bias %d gradient %d element %lld: cpu %.9g cuda %.9g", act, with_b,
                                  k, (long long)i, res[0].g[k][i], res[1].g[k][i]);
                }
            }
            ck_assert(nan_seen); /* the case does carry NaN into the gradients */
            result_free(&res[0]);
            result_free(&res[1]);
        }
    free(x);
    free(w);
    free(b);
    free(g);
}
END_TEST

/* ---------------------------------------------------------------- matmul precision */

static cg_status ap_matmul(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    const int *t = arg;
    return cg_matmul(in[0], in[1], t[0], t[1], out);
}

/* Odd shapes (127 x 1025 x 65) and an aligned one (128 x 1024 x 64), every transpose pair.
 * TF32 and BF16 round the inputs (10 and 7 mantissa bits kept; round to nearest or toward
 * zero), so the error is absolute, ~ 2^-p sqrt(K) |a| |b|: with unit normal inputs and
 * K ~ 1024 a simulation gave at most 0.05 (TF32, nearest) / 0.11 (toward zero) and 0.41 /
 * 0.91 for BF16. The tolerances sit about 2.5x above those. On the aligned shape, where
 * tensor cores certainly take the product, the largest deviation must also exceed what fp32
 * gives (~1e-5): otherwise the precision setting did not reach cuBLAS. */
START_TEST(matmul_precisions) {
    cgt_rand r = cgt_rand_make("matmul");
    static const int64_t shapes[2][3] = {{127, 1025, 65}, {128, 1024, 64}};
    static const cgt_tol tol_low[3] = {{0, 0}, {0.3, 1e-3}, {2.5, 1e-3}};
#ifndef CG_GPU_SUITE_ON_CPU
    static const double floor_low[3] = {0, 5e-3, 5e-2};
#endif
    for (int sh = 0; sh < 2; sh++) {
        int64_t M = shapes[sh][0], K = shapes[sh][1], N = shapes[sh][2];
        double *a = randn_arr(&r, M * K, 0, 1), *b = randn_arr(&r, K * N, 0, 1);
        for (int prec = 0; prec < 3; prec++) {
            CGT_OK(cg_cuda_set_matmul_precision((cg_cuda_matmul_precision)prec));
            for (int t = 0; t < 4; t++) {
                int tr[2] = {t & 1, (t >> 1) & 1};
                spec s = {.n_in = 2, .v = {a, b}, .ndim = {2, 2}, .kind = {CG_F32, CG_F32}, .diff = {1, 1}};
                s.shape[0][0] = tr[0] ? K : M;
                s.shape[0][1] = tr[0] ? M : K;
                s.shape[1][0] = tr[1] ? N : K;
                s.shape[1][1] = tr[1] ? K : N;
                char what[96];
                snprintf(what, sizeof what, "matmul %lldx%lldx%lld precision %d trans %d%d", (long long)M, (long long)K,
                         (long long)N, prec, tr[0], tr[1]);
                double dev = 0;
                compare_spec_tol(what, &s, ap_matmul, tr, CG_F32, prec ? tol_low[prec] : gpu_tol(CG_F32, 50), &dev);
#ifndef CG_GPU_SUITE_ON_CPU
                if (prec && sh == 1)
                    ck_assert_msg(dev > floor_low[prec], "%s: largest deviation %g, as if in fp32: was %s used?", what,
                                  dev, prec == 1 ? "TF32" : "BF16");
#endif
                if (prec == 0) compare_spec(what, &s, ap_matmul, tr, CG_F64, 100);
            }
        }
        free(a);
        free(b);
    }
    CGT_OK(cg_cuda_set_matmul_precision(CG_MATMUL_FP32));
    CGT_FAILS(cg_cuda_set_matmul_precision((cg_cuda_matmul_precision)7), CG_E_INVALID, "precision");
}
END_TEST

void gpu_add_linear(TCase *ops, TCase *large) {
    (void)large;
    tcase_add_loop_test(ops, linear_shapes_fwd_bwd, 0, 2);
    tcase_add_test(ops, linear_no_outputs);
    tcase_add_test(ops, linear_nan_backward_like_cpu);
#if !defined(CG_GPU_SUITE_ON_CPU) || defined(CG_HAVE_CUDA) /* cg_cuda_set_* need the CUDA build */
    tcase_add_test(ops, matmul_precisions);
#endif
}
