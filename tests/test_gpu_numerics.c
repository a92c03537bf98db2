/* GPU numerics: every op forward and backward on CUDA against the CPU reference backend,
 * on fresh random inputs (the op-case table of tests/support plus odd and large shapes:
 * 1, 3, 127, 1025, 4099 columns; split reductions), in f32 and f64; bit-exact dropout
 * masks, Philox draws and dtype conversions; NaN/Inf propagation; optimizer, BLAS-1
 * helpers, matmul precision modes, the cuDNN twins, determinism of reductions, and the
 * caching allocator (stats, reuse, empty_cache, OOM status); the data loader's prefetching
 * uploads against the CPU loader, bit for bit.
 *
 * Poisoning: before each GPU run the allocator cache is stocked with NaN-filled blocks of
 * the sizes the op will ask for (bins are LIFO), so an output the kernel forgets to write
 * comes back NaN and fails (NaN never passes cgt_close).
 *
 * Two test cases: "ops" and "large" (widest rows, longest reductions); CK_RUN_CASE picks one.
 *
 * Skips (exit 77, shown by ctest as skipped) with "no CUDA device: skipping GPU suite" in a CPU-only build or when
 * cg_device_count() == 0. Compiles in both builds (only public API + backend.h). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cgrad/cuda.h"
#ifdef CG_HAVE_CUDA
#include "cuda/cuda_internal.h" /* cg__cuda_gemm_paths */
#endif
#include "cgt.h"
#include "op_cases.h"

/* CG_GPU_SUITE_ON_CPU (the test_gpu_harness build, tests/CMakeLists.txt): the "GPU" side is
 * the CPU backend, so CI runs the suite's own logic (sizing runs, seeds, poisoning, the
 * comparisons) everywhere; the tests that only mean something on a device are left out. */
#ifdef CG_GPU_SUITE_ON_CPU
#define GPU CG_CPU
#pragma GCC diagnostic ignored "-Wunused-variable" /* the device-only tests are not added */
#else
#define GPU CG_CUDA(0)
#endif

/* f32: the GPU sums in float (the CPU in double) and uses float libm: wider than the
 * CPU-vs-float64 tolerance. f64: both sides in double, different summation orders. */
static cgt_tol gpu_tol(cg_dtype dt, double mul) {
    cgt_tol t = dt == CG_F64 ? (cgt_tol){1e-10, 1e-10} : (cgt_tol){2e-5, 1e-4};
    return cgt_tol_scaled(t, mul > 0 ? mul : 1);
}

/* NaN-filled blocks of these element counts go into the device cache: all are allocated
 * before any is freed, so equal counts leave as many distinct NaN blocks (freed one by one,
 * the cache would hand the same block back each time). */
#define POISON_MAX 8
static void poison_cache(const int64_t *counts, int k, cg_dtype dt) {
    cg_tensor *t[POISON_MAX] = {NULL};
    ck_assert(k <= POISON_MAX);
    for (int i = 0; i < k; i++) {
        if (counts[i] <= 0) continue;
        int64_t n = counts[i];
        CGT_OK(cg_tensor_full(&n, 1, dt, GPU, NAN, &t[i]));
    }
    for (int i = 0; i < k; i++) cg_tensor_release(t[i]);
}

static void reset_settings(void) {
#ifdef CG_HAVE_CUDA
    (void)cg_cuda_set_impl(CG_IMPL_OWN);
    (void)cg_cuda_set_matmul_precision(CG_MATMUL_FP32);
#endif
}

/* ---------------------------------------------------------------- generic CPU-vs-GPU runner */

typedef cg_status (*apply_fn)(cg_tensor *const *in, cg_tensor **out, const void *arg);

typedef struct spec {
    int n_in;
    const double *v[CGT_MAX_IN]; /* NULL: the op gets NULL */
    int ndim[CGT_MAX_IN];
    int64_t shape[CGT_MAX_IN][4];
    cg_dtype kind[CGT_MAX_IN]; /* CG_F32 means "the float dtype under test"; else as given */
    int diff[CGT_MAX_IN];
} spec;

typedef struct result {
    double *out;
    int64_t nout;
    double *g[CGT_MAX_IN];
    int64_t ng[CGT_MAX_IN];
} result;

static void result_free(result *r) {
    free(r->out);
    for (int i = 0; i < CGT_MAX_IN; i++) free(r->g[i]);
    memset(r, 0, sizeof *r);
}

static void run_spec(const spec *s, apply_fn f, const void *arg, cg_dtype dt, cg_device dev, const double *gseed,
                     int64_t gseed_n, result *r) {
    memset(r, 0, sizeof *r);
    cg_tensor *in[CGT_MAX_IN] = {0}, *out = NULL;
    int any = 0;
    for (int i = 0; i < s->n_in; i++) {
        if (!s->v[i]) continue;
        cg_dtype k = s->kind[i] == CG_F32 ? dt : s->kind[i];
        in[i] = cgt_tensor(s->v[i], s->shape[i], s->ndim[i], k, dev);
        if (s->diff[i]) {
            CGT_OK(cg_tensor_set_requires_grad(in[i], 1));
            any = 1;
        }
    }
    if (dev.type == CG_DEVICE_CUDA && gseed_n > 0) { /* expected sizes from the CPU run */
        int64_t counts[1 + CGT_MAX_IN];
        int k = 0;
        counts[k++] = gseed_n;
        for (int i = 0; i < s->n_in; i++)
            if (in[i]) counts[k++] = cg_tensor_numel(in[i]);
        poison_cache(counts, k, dt);
    }
    CGT_OK(f(in, &out, arg));
    r->nout = cg_tensor_numel(out);
    r->out = cgt_read(out);
    if (any && gseed && cg_tensor_requires_grad(out)) { /* no seed: the sizing run, forward only */
        ck_assert_msg(gseed_n >= r->nout, "gradient seed too short");
        cg_tensor *gt = cgt_tensor(gseed, cg_tensor_shape(out), cg_tensor_ndim(out), dt, dev);
        CGT_OK(cg_backward_ex(out, gt, 0));
        cg_tensor_release(gt);
        for (int i = 0; i < s->n_in; i++) {
            if (!in[i] || !s->diff[i]) continue;
            cg_tensor *g = cg_tensor_grad(in[i]);
            ck_assert_msg(g != NULL, "input %d got no gradient on %s", i, cg_device_str(dev));
            r->ng[i] = cg_tensor_numel(g);
            r->g[i] = cgt_read(g);
        }
    }
    cg_tensor_release(out);
    for (int i = 0; i < CGT_MAX_IN; i++) cg_tensor_release(in[i]);
}

/* CPU and GPU on the same inputs and output gradient; values and gradients compared. */
/* CPU against GPU with tolerance tol; *max_dev (may be NULL) gets the largest |gpu - cpu| of
 * the forward output. */
static void compare_spec_tol(const char *what, const spec *s, apply_fn f, const void *arg, cg_dtype dt, cgt_tol tol,
                             double *max_dev) {
    cgt_rand r = cgt_rand_make(what);
    result a, b;
    run_spec(s, f, arg, dt, CG_CPU, NULL, 0, &a);
    int64_t nout = a.nout; /* the first run only learns the output size */
    double *gseed = malloc((size_t)(nout ? nout : 1) * sizeof(double));
    for (int64_t k = 0; k < nout; k++) gseed[k] = cgt_round_to(cgt_normal(&r), dt);
    result_free(&a);
    run_spec(s, f, arg, dt, CG_CPU, gseed, nout, &a);
    run_spec(s, f, arg, dt, GPU, gseed, nout, &b);
    char msg[512];
    ck_assert_msg(a.nout == b.nout, "%s: %lld outputs on cpu, %lld on cuda", what, (long long)a.nout,
                  (long long)b.nout);
    snprintf(msg, sizeof msg, "%s (%s) forward", what, cg_dtype_name(dt));
    CGT_ASSERT_CLOSE_ARR(b.out, a.out, a.nout, tol, msg);
    if (max_dev) {
        *max_dev = 0;
        for (int64_t k = 0; k < a.nout; k++)
            if (fabs(b.out[k] - a.out[k]) > *max_dev) *max_dev = fabs(b.out[k] - a.out[k]);
    }
    for (int i = 0; i < CGT_MAX_IN; i++) {
        if (!a.g[i]) continue;
        ck_assert_msg(b.g[i] && a.ng[i] == b.ng[i], "%s: gradient %d missing on cuda", what, i);
        snprintf(msg, sizeof msg, "%s (%s) gradient of input %d", what, cg_dtype_name(dt), i);
        CGT_ASSERT_CLOSE_ARR(b.g[i], a.g[i], a.ng[i], tol, msg);
    }
    free(gseed);
    result_free(&a);
    result_free(&b);
}

static void compare_spec(const char *what, const spec *s, apply_fn f, const void *arg, cg_dtype dt, double tol_mul) {
    compare_spec_tol(what, s, f, arg, dt, gpu_tol(dt, tol_mul), NULL);
}

static double *randn_arr(cgt_rand *r, int64_t n, double mean, double std) {
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = mean + std * cgt_normal(r);
    return v;
}

/* ---------------------------------------------------------------- the op-case table */

/* loop index: case i / 2 in f32 (even) or f64 (odd) */
START_TEST(case_vs_cpu) {
    const cgt_case *c = &cgt_cases[_i / 2];
    cg_dtype dt = _i % 2 ? CG_F64 : CG_F32;
    char tag[256];
    snprintf(tag, sizeof tag, "gpu %s %s %s", c->op, c->name, cg_dtype_name(dt));
    cgt_rand r = cgt_rand_make(tag);
    cgt_inst I;
    cgt_inst_make(c, &r, dt, &I);
    cg_tensor *in[CGT_MAX_IN], *out[2] = {NULL, NULL};
    double *vals[2] = {NULL, NULL}, *grads[2][CGT_MAX_IN] = {{0}};
    int64_t nout = 0, ngr[CGT_MAX_IN] = {0};
    double *gseed = NULL;
    for (int k = 0; k < 2; k++) { /* k = 0 cpu, 1 cuda */
        cg_device dev = k ? GPU : CG_CPU;
        if (k) {
            int64_t counts[1 + CGT_MAX_IN] = {nout};
            for (int i = 0; i < I.n_in; i++) counts[1 + i] = I.in[i].present ? cgt_arg_numel(&I.in[i]) : 0;
            poison_cache(counts, 1 + I.n_in, dt);
        }
        CGT_OK(cgt_inst_run(&I, dt, dev, 1, in, &out[k]));
        if (!k) {
            nout = cg_tensor_numel(out[0]);
            gseed = malloc((size_t)(nout ? nout : 1) * sizeof(double));
            for (int64_t j = 0; j < nout; j++) gseed[j] = cgt_round_to(cgt_normal(&r), dt);
        }
        ck_assert_int_eq(cg_tensor_numel(out[k]), nout);
        vals[k] = cgt_read(out[k]);
        if (cg_tensor_requires_grad(out[k]) && cg_tensor_has_grad_fn(out[k])) {
            cg_tensor *gt = cgt_tensor(gseed, cg_tensor_shape(out[k]), cg_tensor_ndim(out[k]), dt, dev);
            CGT_OK(cg_backward_ex(out[k], gt, 0));
            cg_tensor_release(gt);
            for (int i = 0; i < I.n_in; i++)
                if (in[i] && I.in[i].diff && cg_tensor_grad(in[i])) {
                    grads[k][i] = cgt_read(cg_tensor_grad(in[i]));
                    ngr[i] = cg_tensor_numel(in[i]);
                }
        }
        cgt_tensors_release(in, CGT_MAX_IN);
        cg_tensor_release(out[k]);
    }
    cgt_tol tol = gpu_tol(dt, c->tol_mul);
    char what[512];
    snprintf(what, sizeof what, "%s / %s (%s) forward", c->op, c->name, cg_dtype_name(dt));
    CGT_ASSERT_CLOSE_ARR(vals[1], vals[0], nout, tol, what);
    for (int i = 0; i < CGT_MAX_IN; i++) {
        ck_assert_msg((grads[0][i] == NULL) == (grads[1][i] == NULL), "%s / %s: gradient %d on one device only", c->op,
                      c->name, i);
        if (!grads[0][i]) continue;
        snprintf(what, sizeof what, "%s / %s (%s) gradient of input %d", c->op, c->name, cg_dtype_name(dt), i);
        CGT_ASSERT_CLOSE_ARR(grads[1][i], grads[0][i], ngr[i], tol, what);
        free(grads[0][i]);
        free(grads[1][i]);
    }
    free(vals[0]);
    free(vals[1]);
    free(gseed);
    cgt_inst_free(&I);
}
END_TEST

/* ---------------------------------------------------------------- row ops at odd widths */

static cg_status ap_softmax(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    return *(const int *)arg ? cg_log_softmax(in[0], out) : cg_softmax(in[0], out);
}
static cg_status ap_layernorm(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    (void)arg;
    return cg_layernorm(in[0], in[1], in[2], 1e-5, out);
}
static cg_status ap_ce(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    const int *a = arg; /* reduction, label smoothing x 10 */
    return cg_softmax_cross_entropy(in[0], in[1], (cg_reduction)a[0], a[1] / 10.0, out);
}

/* 1028, 4096, 8192: the f32 register-row kernels (d % 4 == 0, up to 8192); the others the
 * warp and block kernels */
static const int64_t ODD_D[] = {1, 3, 127, 1025, 1028, 4096, 4099, 8192, 13000};
static const int64_t ODD_R[] = {1, 3, 130};

START_TEST(rows_odd_widths) {
    cg_dtype dt = _i % 2 ? CG_F64 : CG_F32;
    cgt_rand r = cgt_rand_make("rows odd");
    for (size_t a = 0; a < sizeof ODD_D / sizeof ODD_D[0]; a++)
        for (size_t b = 0; b < sizeof ODD_R / sizeof ODD_R[0]; b++) {
            int64_t d = ODD_D[a], rows = ODD_R[b], n = rows * d;
            double *x = randn_arr(&r, n, 0.3, 2.0), *g = randn_arr(&r, d, 1.0, 0.5), *be = randn_arr(&r, d, 0, 0.5);
            double *lab = malloc((size_t)rows * sizeof *lab);
            for (int64_t k = 0; k < rows; k++) lab[k] = (double)cgt_randint(&r, 0, d);
            char what[128];
            spec s = {.n_in = 1, .v = {x}, .ndim = {2}, .shape = {{rows, d}}, .kind = {CG_F32}, .diff = {1}};
            for (int logsm = 0; logsm < 2; logsm++) {
                snprintf(what, sizeof what, "%s rows %lld x %lld", logsm ? "log_softmax" : "softmax", (long long)rows,
                         (long long)d);
                compare_spec(what, &s, ap_softmax, &logsm, dt, 1);
            }
            spec ln = {.n_in = 3, .v = {x, g, be}, .ndim = {2, 1, 1}, .shape = {{rows, d}, {d}, {d}},
                       .kind = {CG_F32, CG_F32, CG_F32}, .diff = {1, 1, 1}};
            snprintf(what, sizeof what, "layernorm rows %lld x %lld", (long long)rows, (long long)d);
            compare_spec(what, &ln, ap_layernorm, NULL, dt, 10);
            spec ce = {.n_in = 2, .v = {x, lab}, .ndim = {2, 1}, .shape = {{rows, d}, {rows}},
                       .kind = {CG_F32, CG_I64}, .diff = {1, 0}};
            for (int red = 0; red < 3; red++) {
                int arg[2] = {red, red == 1 ? 1 : 0};
                snprintf(what, sizeof what, "softmax_ce rows %lld x %lld red %d", (long long)rows, (long long)d, red);
                compare_spec(what, &ce, ap_ce, arg, dt, 10);
            }
            free(x);
            free(g);
            free(be);
            free(lab);
        }
}
END_TEST

/* cg_backward on a softmax-CE loss hands the forward's gradient on (bw_softmax_ce): on the
 * GPU it must equal the scaling kernel's result (cg_backward_ex with ones) bit for bit, and
 * the CPU's within tolerance; rows that fit a warp and rows that take a block. */
START_TEST(ce_seeded_backward_matches_kernel) {
    cgt_rand r = cgt_rand_make("ce seeded");
    static const int64_t shapes[][2] = {{3, 1025}, {130, 4099}, {257, 10}, {64, 4096}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t N = shapes[si][0], C = shapes[si][1], xs[2] = {N, C};
        double *x = randn_arr(&r, N * C, 0.3, 2.0), *lab = malloc((size_t)N * sizeof *lab);
        for (int64_t k = 0; k < N; k++) lab[k] = (double)cgt_randint(&r, 0, C);
        x[1] = -INFINITY; /* a masked class: probability 0, a finite gradient */
        double *g[3];
        for (int run = 0; run < 3; run++) { /* 0: CPU seeded, 1: GPU seeded, 2: GPU kernel */
            cg_device dev = run ? GPU : CG_CPU;
            cg_tensor *xt = cgt_tensor(x, xs, 2, CG_F32, dev), *lt = cgt_tensor(lab, &N, 1, CG_I64, dev), *l = NULL;
            CGT_OK(cg_tensor_set_requires_grad(xt, 1));
            if (run) {
                int64_t counts[2] = {N * C, N * C};
                poison_cache(counts, 2, CG_F32);
            }
            CGT_OK(cg_softmax_cross_entropy(xt, lt, CG_REDUCE_MEAN, 0.1, &l));
            if (run == 2) {
                cg_tensor *one = NULL;
                CGT_OK(cg_tensor_ones(NULL, 0, CG_F32, dev, &one));
                CGT_OK(cg_backward_ex(l, one, 0));
                cg_tensor_release(one);
            } else {
                CGT_OK(cg_backward(l));
            }
            g[run] = cgt_read(cg_tensor_grad(xt));
            cg_tensor_release(l), cg_tensor_release(lt), cg_tensor_release(xt);
        }
        char what[96];
        snprintf(what, sizeof what, "softmax_ce seeded backward %lld x %lld", (long long)N, (long long)C);
        CGT_ASSERT_CLOSE_ARR(g[1], g[0], N * C, gpu_tol(CG_F32, 10), what);
        ck_assert_msg(!memcmp(g[1], g[2], (size_t)(N * C) * sizeof(double)), "%s: differs from the kernel path", what);
        for (int k = 0; k < 3; k++) free(g[k]);
        free(x), free(lab);
    }
}
END_TEST

/* More rows than the LayerNorm backward's 512 blocks: each block walks several rows and
 * accumulates dgamma/dbeta over them (register rows at 1028 and 4096, block rows at 1027). */
START_TEST(layernorm_many_rows) {
    cgt_rand r = cgt_rand_make("layernorm rows");
    static const int64_t S[][2] = {{1030, 1028}, {600, 4096}, {1100, 1027}};
    for (size_t k = 0; k < sizeof S / sizeof S[0]; k++) {
        int64_t rows = S[k][0], d = S[k][1];
        double *x = randn_arr(&r, rows * d, 0.3, 2.0), *g = randn_arr(&r, d, 1.0, 0.5), *be = randn_arr(&r, d, 0, 0.5);
        /* with gamma and beta, without both (no parameter gradients), gamma only, and
         * parameter gradients without dx */
        static const int variants[][5] = {{1, 1, 1, 1, 1}, {0, 0, 1, 0, 0}, {1, 0, 1, 1, 0}, {1, 1, 0, 1, 1}};
        for (int v = 0; v < 4; v++) {
            const int *u = variants[v];
            spec ln = {.n_in = 3, .v = {x, u[0] ? g : NULL, u[1] ? be : NULL}, .ndim = {2, 1, 1},
                       .shape = {{rows, d}, {d}, {d}}, .kind = {CG_F32, CG_F32, CG_F32}, .diff = {u[2], u[3], u[4]}};
            char what[96];
            snprintf(what, sizeof what, "layernorm %lld x %lld variant %d", (long long)rows, (long long)d, v);
            compare_spec(what, &ln, ap_layernorm, NULL, CG_F32, 10);
        }
        free(x), free(g), free(be);
    }
}
END_TEST

/* ---------------------------------------------------------------- reductions */

static cg_status ap_reduce(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    const int *a = arg; /* mean?, axis, keepdim */
    return a[0] ? cg_mean(in[0], a[1], a[2], out) : cg_sum(in[0], a[1], a[2], out);
}

START_TEST(reductions_all_paths) {
    cg_dtype dt = _i % 2 ? CG_F64 : CG_F32;
    cgt_rand r = cgt_rand_make("reduce paths");
    /* warp rows, block rows, split rows, columns, split columns */
    static const int64_t shapes[][3] = {{1, 1, 1}, {3, 127, 1}, {1025, 3, 1}, {127, 1025, 3}, {2, 300001, 1},
                                        {3000, 5, 1}, {70000, 3, 1}, {5, 4099, 1}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int nd = shapes[k][2] > 1 ? 3 : 2;
        int64_t n = shapes[k][0] * shapes[k][1] * shapes[k][2];
        double *x = randn_arr(&r, n, 0.1, 1.0);
        spec s = {.n_in = 1, .v = {x}, .ndim = {nd}, .shape = {{shapes[k][0], shapes[k][1], shapes[k][2]}},
                  .kind = {CG_F32}, .diff = {1}};
        for (int mean = 0; mean < 2; mean++)
            for (int axis = -1; axis < nd; axis++) {
                int arg[3] = {mean, axis < 0 ? CG_ALL_AXES : axis, axis == 1};
                char what[128];
                snprintf(what, sizeof what, "%s axis %d of shape %lld", mean ? "mean" : "sum", axis, (long long)k);
                /* long f32 sums: float accumulation vs the CPU's double */
                compare_spec(what, &s, ap_reduce, arg, dt, dt == CG_F32 ? 20 : 100);
            }
        free(x);
    }
}
END_TEST

START_TEST(reductions_are_deterministic) {
    cgt_rand r = cgt_rand_make("reduce determinism");
    int64_t shape[2] = {3, 1 << 20};
    cg_tensor *x = cgt_randn(&r, shape, 2, CG_F32, GPU), *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    CGT_OK(cg_sum(x, CG_ALL_AXES, 0, &a));
    CGT_OK(cg_sum(x, CG_ALL_AXES, 0, &b));
    CGT_OK(cg_sum(x, 0, 0, &c));
    CGT_OK(cg_sum(x, 0, 0, &d));
    float va, vb;
    CGT_OK(cg_tensor_to_host(a, &va, sizeof va));
    CGT_OK(cg_tensor_to_host(b, &vb, sizeof vb));
    ck_assert_msg(memcmp(&va, &vb, sizeof va) == 0, "sum of all: %.9g then %.9g", va, vb);
    size_t nb = cg_tensor_nbytes(c);
    void *hc = malloc(nb), *hd = malloc(nb);
    CGT_OK(cg_tensor_to_host(c, hc, nb));
    CGT_OK(cg_tensor_to_host(d, hd, nb));
    ck_assert_msg(memcmp(hc, hd, nb) == 0, "column sums differ between two runs");
    double s1, s2;
    CGT_OK(cg_sumsq(x, &s1));
    CGT_OK(cg_sumsq(x, &s2));
    ck_assert_msg(s1 == s2, "sumsq %.17g then %.17g", s1, s2);
    free(hc);
    free(hd);
    cg_tensor *all[] = {x, a, b, c, d};
    for (int i = 0; i < 5; i++) cg_tensor_release(all[i]);
}
END_TEST

/* ---------------------------------------------------------------- broadcasting */

static cg_status ap_binary(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    switch (*(const int *)arg) {
    case 0: return cg_add(in[0], in[1], out);
    case 1: return cg_sub(in[0], in[1], out);
    case 2: return cg_mul(in[0], in[1], out);
    default: return cg_div(in[0], in[1], out);
    }
}

START_TEST(broadcast_shapes) {
    cg_dtype dt = _i % 2 ? CG_F64 : CG_F32;
    cgt_rand r = cgt_rand_make("broadcast");
    static const struct {
        int na, nb;
        int64_t a[4], b[4];
    } P[] = {{2, 1, {127, 1025}, {1025}},    {3, 3, {3, 1, 5}, {1, 4, 1}},    {1, 2, {1}, {3, 127}},
             {4, 3, {2, 3, 4, 5}, {3, 1, 5}}, {2, 2, {1025, 1}, {1, 3}},       {2, 2, {4096, 1024}, {4096, 1024}},
             {2, 2, {3, 127}, {3, 127}},      {2, 2, {0, 3}, {1, 3}}};
    for (size_t k = 0; k < sizeof P / sizeof P[0]; k++) {
        int64_t na = 1, nb = 1;
        for (int i = 0; i < P[k].na; i++) na *= P[k].a[i];
        for (int i = 0; i < P[k].nb; i++) nb *= P[k].b[i];
        double *a = randn_arr(&r, na, 0, 1), *b = randn_arr(&r, nb, 0, 1);
        for (int64_t i = 0; i < nb; i++) b[i] = (b[i] < 0 ? -0.5 : 0.5) + b[i]; /* away from 0 for div */
        spec s = {.n_in = 2, .v = {a, b}, .ndim = {P[k].na, P[k].nb}, .kind = {CG_F32, CG_F32}, .diff = {1, 1}};
        memcpy(s.shape[0], P[k].a, sizeof P[k].a);
        memcpy(s.shape[1], P[k].b, sizeof P[k].b);
        for (int op = 0; op < 4; op++) {
            char what[96];
            snprintf(what, sizeof what, "binary op %d, shape pair %zu", op, k);
            compare_spec(what, &s, ap_binary, &op, dt, 10);
        }
        free(a);
        free(b);
    }
}
END_TEST

/* ---------------------------------------------------------------- batchnorm */

/* f32 div backward where b*b leaves the float range (tiny and huge b) but the gradient
 * -g a / b^2 does not: finite like the CPU's double arithmetic, and close to it. */
START_TEST(div_backward_extreme_b) {
    double a[4] = {1e-30, 1e-20, 3.0, -2e15}, b[4] = {1e-23, -3e-22, 3e19, 2e20};
    int op = 3;
    spec s = {.n_in = 2, .v = {a, b}, .ndim = {1, 1}, .shape = {{4}, {4}}, .kind = {CG_F32, CG_F32}, .diff = {1, 1}};
    compare_spec("div extreme b", &s, ap_binary, &op, CG_F32, 10);
}
END_TEST

static cg_status ap_mse_mean(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    (void)arg;
    return cg_mse_loss(in[0], in[1], CG_REDUCE_MEAN, out);
}

/* f32 MSE mean where a term or a - b leaves the float range but what the CPU's double
 * arithmetic returns does not: one term 4e38 (a mean of ~2.5e37), then a - b = 3.6e38 (the
 * loss is inf on both, the gradient 2 (a - b) g / 16 finite for any |g| < 7). Random
 * values around them, 16 terms. */
START_TEST(mse_extreme_values_like_cpu) {
    cgt_rand r = cgt_rand_make("mse extreme");
    for (int k = 0; k < 2; k++) {
        double *a = randn_arr(&r, 16, 0, 1), *b = randn_arr(&r, 16, 0, 1);
        int at = (int)cgt_uniform(&r, 0, 16) % 16;
        if (k == 0) a[at] = 2e19;
        else {
            a[at] = 1.8e38;
            b[at] = -1.8e38;
        }
        spec s = {.n_in = 2, .v = {a, b}, .ndim = {1, 1}, .shape = {{16}, {16}}, .kind = {CG_F32, CG_F32},
                  .diff = {1, 1}};
        compare_spec(k ? "mse mean, a - b out of range" : "mse mean, a term out of range", &s, ap_mse_mean, NULL,
                     CG_F32, 10);
        free(a);
        free(b);
    }
}
END_TEST

static cg_status ap_bn(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    const int *a = arg; /* training */
    return cg_batchnorm(in[0], in[1], in[2], in[3], in[4], a[0], 0.1, 1e-5, out);
}

static void bn_shapes(cg_dtype dt, double tol_mul) {
    cgt_rand r = cgt_rand_make("batchnorm");
    /* C % 4 == 0 (16, 64, 4096) takes the float4 kernels; C / 4 < 32 packs several rows
     * into a warp, as C < 32 does for the others */
    static const int64_t S[][2] = {{2, 1},    {3, 127},  {1025, 3}, {4096, 33}, {600, 1025},
                                   {300, 16}, {513, 64}, {64, 4096}, {4099, 8}};
    for (size_t k = 0; k < sizeof S / sizeof S[0]; k++) {
        int64_t N = S[k][0], C = S[k][1];
        double *x = randn_arr(&r, N * C, 0.5, 2.0), *g = randn_arr(&r, C, 1, 0.5), *b = randn_arr(&r, C, 0, 0.5);
        double *rm = randn_arr(&r, C, 0, 0.3), *rv = randn_arr(&r, C, 0, 0.3);
        for (int64_t i = 0; i < C; i++) rv[i] = 0.5 + fabs(rv[i]);
        for (int training = 0; training < 2; training++) {
            spec s = {.n_in = 5, .v = {x, g, b, rm, rv}, .ndim = {2, 1, 1, 1, 1},
                      .shape = {{N, C}, {C}, {C}, {C}, {C}}, .kind = {CG_F32, CG_F32, CG_F32, CG_F32, CG_F32},
                      .diff = {1, 1, 1, 0, 0}};
            char what[96];
            snprintf(what, sizeof what, "batchnorm %lld x %lld training %d", (long long)N, (long long)C, training);
            compare_spec(what, &s, ap_bn, &training, dt, tol_mul);
        }
        /* running statistics after one training step */
        cg_tensor *t[2][5] = {{0}}, *out = NULL;
        double *after[2][2];
        for (int dv = 0; dv < 2; dv++) {
            cg_device dev = dv ? GPU : CG_CPU;
            const double *v[5] = {x, g, b, rm, rv};
            int64_t sh[5][2] = {{N, C}, {C}, {C}, {C}, {C}};
            for (int i = 0; i < 5; i++) t[dv][i] = cgt_tensor(v[i], sh[i], i ? 1 : 2, dt, dev);
            CGT_OK(cg_batchnorm(t[dv][0], t[dv][1], t[dv][2], t[dv][3], t[dv][4], 1, 0.1, 1e-5, &out));
            cg_tensor_release(out);
            after[dv][0] = cgt_read(t[dv][3]);
            after[dv][1] = cgt_read(t[dv][4]);
            for (int i = 0; i < 5; i++) cg_tensor_release(t[dv][i]);
        }
        CGT_ASSERT_CLOSE_ARR(after[1][0], after[0][0], C, gpu_tol(dt, tol_mul), "batchnorm running_mean");
        CGT_ASSERT_CLOSE_ARR(after[1][1], after[0][1], C, gpu_tol(dt, tol_mul), "batchnorm running_var");
        for (int dv = 0; dv < 2; dv++) {
            free(after[dv][0]);
            free(after[dv][1]);
        }
        free(x);
        free(g);
        free(b);
        free(rm);
        free(rv);
    }
}

START_TEST(batchnorm_shapes) { bn_shapes(_i % 2 ? CG_F64 : CG_F32, 10); }
END_TEST

/* f32 BatchNorm with a value far out (1e20: its squared deviation overflows float, where the
 * CPU's double statistics do not) in one channel, one chunk (N 64) and several (N 600), the
 * scalar and the float4 kernels (C 5, 64): forward, backward and the running statistics
 * match the CPU and are finite. */
START_TEST(batchnorm_huge_values_like_cpu) {
    cgt_rand r = cgt_rand_make("batchnorm huge");
    static const int64_t S[][2] = {{64, 5}, {600, 64}};
    for (size_t k = 0; k < 2; k++) {
        int64_t N = S[k][0], C = S[k][1];
        double *x = randn_arr(&r, N * C, 0.5, 2.0), *g = randn_arr(&r, C, 1, 0.5), *b = randn_arr(&r, C, 0, 0.5);
        double *rm = randn_arr(&r, C, 0, 0.3), *rv = randn_arr(&r, C, 1, 0.1);
        x[3 * C + 2] = 1e20;
        x[(N - 1) * C + C - 1] = -3e19;
        int training = 1;
        spec s = {.n_in = 5, .v = {x, g, b, rm, rv}, .ndim = {2, 1, 1, 1, 1},
                  .shape = {{N, C}, {C}, {C}, {C}, {C}}, .kind = {CG_F32, CG_F32, CG_F32, CG_F32, CG_F32},
                  .diff = {1, 1, 1, 0, 0}};
        compare_spec("batchnorm huge values", &s, ap_bn, &training, CG_F32, 10);
        double *after[2][2];
        for (int dv = 0; dv < 2; dv++) {
            cg_tensor *t[5], *out = NULL;
            const double *v[5] = {x, g, b, rm, rv};
            int64_t sh[5][2] = {{N, C}, {C}, {C}, {C}, {C}};
            for (int i = 0; i < 5; i++) t[i] = cgt_tensor(v[i], sh[i], i ? 1 : 2, CG_F32, dv ? GPU : CG_CPU);
            CGT_OK(cg_batchnorm(t[0], t[1], t[2], t[3], t[4], 1, 0.1, 1e-5, &out));
            cg_tensor_release(out);
            after[dv][0] = cgt_read(t[3]);
            after[dv][1] = cgt_read(t[4]);
            for (int i = 0; i < 5; i++) cg_tensor_release(t[i]);
        }
        ck_assert(cgt_all_finite(after[1][0], C) && cgt_all_finite(after[1][1], C));
        CGT_ASSERT_CLOSE_ARR(after[1][0], after[0][0], C, gpu_tol(CG_F32, 10), "huge values: running_mean");
        CGT_ASSERT_CLOSE_ARR(after[1][1], after[0][1], C, gpu_tol(CG_F32, 10), "huge values: running_var");
        for (int dv = 0; dv < 2; dv++) free(after[dv][0]), free(after[dv][1]);
        free(x), free(g), free(b), free(rm), free(rv);
    }
}
END_TEST

/* ---------------------------------------------------------------- cuDNN twins */

START_TEST(cudnn_twins_match_cpu) {
#ifndef CG_GPU_SUITE_ON_CPU
    /* without a cuDNN handle every twin would hand back to the own kernels and this would
     * test them again */
    cg_cuda_device_info info;
    CGT_OK(cg_cuda_device_info_get(0, &info));
    ck_assert_msg(info.cudnn_version > 0, "cuDNN did not initialise on cuda:0: the twins cannot be tested");
#endif
    CGT_OK(cg_cuda_set_impl(CG_IMPL_CUDNN));
    cgt_rand r = cgt_rand_make("cudnn");
    int64_t rows = 130, d = 1025;
    double *x = randn_arr(&r, rows * d, 0.3, 2.0);
    spec s = {.n_in = 1, .v = {x}, .ndim = {2}, .shape = {{rows, d}}, .kind = {CG_F32}, .diff = {1}};
    for (int logsm = 0; logsm < 2; logsm++) compare_spec("cudnn softmax", &s, ap_softmax, &logsm, CG_F32, 10);
    free(x);
    bn_shapes(CG_F32, 50);
    CGT_OK(cg_cuda_set_impl(CG_IMPL_OWN));
    ck_assert_int_eq(cg_cuda_get_impl(), CG_IMPL_OWN);
}
END_TEST

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

/* ---------------------------------------------------------------- NaN / Inf */

static cg_status ap_unary(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    switch (*(const int *)arg) {
    case 0: return cg_exp(in[0], out);
    case 1: return cg_log(in[0], out);
    case 2: return cg_sqrt(in[0], out);
    case 3: return cg_sigmoid(in[0], out);
    case 4: return cg_tanh(in[0], out);
    case 5: return cg_relu(in[0], out);
    case 6: return cg_leaky_relu(in[0], 0.01, out);
    case 7: return cg_gelu(in[0], CG_GELU_ERF, out);
    case 8: return cg_gelu(in[0], CG_GELU_TANH, out);
    case 9: return cg_softmax(in[0], out);
    case 10: return cg_layernorm(in[0], NULL, NULL, 1e-5, out);
    default: return cg_sum(in[0], 1, 0, out);
    }
}

/* same class: both NaN, or equal infinities, or close */
static int same_class(double g, double c, cgt_tol tol) {
    if (isnan(c) || isnan(g)) return isnan(c) && isnan(g);
    if (isinf(c) || isinf(g)) return g == c;
    return cgt_close(g, c, tol);
}

START_TEST(nan_inf_propagate_like_cpu) {
    cgt_rand r = cgt_rand_make("nan inf");
    for (int wi = 0; wi < 2; wi++) { /* block kernels, then the register-row kernels */
        int64_t w = wi ? 4096 : 1025, shape[2] = {5, w}, n = shape[0] * shape[1];
        double *x = randn_arr(&r, n, 0.5, 1.0);
        x[3] = NAN;                  /* row 0 */
        x[w + 7] = INFINITY;         /* row 1 */
        x[2 * w + 9] = -INFINITY;    /* row 2 */
        x[3 * w + 11] = 1e30;        /* row 3 overflows exp */
        for (int f = 0; f < 12; f++) {
            double *res[2];
            for (int dv = 0; dv < 2; dv++) {
                cg_tensor *t = cgt_tensor(x, shape, 2, CG_F32, dv ? GPU : CG_CPU), *o = NULL;
                CGT_OK(ap_unary(&t, &o, &f));
                res[dv] = cgt_read(o);
                if (!dv) n = cg_tensor_numel(o);
                cg_tensor_release(t);
                cg_tensor_release(o);
            }
            for (int64_t i = 0; i < n; i++)
                ck_assert_msg(same_class(res[1][i], res[0][i], gpu_tol(CG_F32, 10)), "fn %d element %lld: cpu %.9g cuda %.9g",
                              f, (long long)i, res[0][i], res[1][i]);
            n = shape[0] * shape[1];
            free(res[0]);
            free(res[1]);
        }
        free(x);
    }
}
END_TEST

/* tanh-GELU far out (f32 |v| beyond ~1.8e19, where v^2 overflows in float): the gradient is
 * exactly 1 or 0 on both backends, through cg_gelu and through the fused linear (GELU aux). */
START_TEST(gelu_tanh_gradient_saturates_like_cpu) {
    double xs[8] = {1e20, -1e20, 3e38, -3e38, 20.0, -20.0, 2e19, -2e19};
    for (int via = 0; via < 2; via++) {
        double *g = cgt_gelu_tanh_grads(xs, 8, CG_F32, GPU, via);
        for (int i = 0; i < 8; i++)
            ck_assert_msg(g[i] == (xs[i] > 0 ? 1.0 : 0.0), "via %s: x %g grad %g", via ? "linear" : "gelu", xs[i], g[i]);
        free(g);
    }
}
END_TEST

/* The fused linear keeps NaN like the CPU, ReLU included: cuBLASLt's ReLU epilogue would
 * turn it into 0 (a known pitfall), so a NaN row must come out NaN on both devices. */
START_TEST(linear_nan_like_cpu) {
    cgt_rand r = cgt_rand_make("linear nan");
    int64_t xs[2] = {5, 64}, ws[2] = {16, 64}, bs = 16;
    double *x = randn_arr(&r, 5 * 64, 0, 1), *w = randn_arr(&r, 16 * 64, 0, 0.2), *b = randn_arr(&r, 16, 0, 0.2);
    x[3] = NAN;           /* row 0 */
    x[64 + 5] = INFINITY; /* row 1 */
    for (int act = 0; act < 3; act++)
        for (int with_b = 0; with_b < 2; with_b++) {
            double *res[2];
            for (int dv = 0; dv < 2; dv++) {
                cg_device dev = dv ? GPU : CG_CPU;
                cg_tensor *tx = cgt_tensor(x, xs, 2, CG_F32, dev), *tw = cgt_tensor(w, ws, 2, CG_F32, dev);
                cg_tensor *tb = with_b ? cgt_tensor(b, &bs, 1, CG_F32, dev) : NULL, *o = NULL;
                CGT_OK(cg_linear(tx, tw, tb, (cg_linear_act)act, &o));
                res[dv] = cgt_read(o);
                cg_tensor_release(tx);
                cg_tensor_release(tw);
                cg_tensor_release(tb);
                cg_tensor_release(o);
            }
            for (int64_t i = 0; i < 5 * 16; i++)
                ck_assert_msg(same_class(res[1][i], res[0][i], gpu_tol(CG_F32, 10)),
                              "linear act %d bias %d element %lld: cpu %.9g cuda %.9g", act, with_b, (long long)i,
                              res[0][i], res[1][i]);
            ck_assert(isnan(res[1][0])); /* the NaN row stays NaN */
            free(res[0]);
            free(res[1]);
        }
    free(x);
    free(w);
    free(b);
}
END_TEST
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
                double *x = randn_arr(&r, N * K, 0, 1), *w = randn_arr(&r, M * K, 0, 1 / sqrt((double)K));
                double *b = randn_arr(&r, M + 1, 0, 0.5), *g = randn_arr(&r, N * M, 0, 1);
                double *z = calloc((size_t)(N * M), sizeof *z), *gm = malloc((size_t)(N * M) * sizeof *gm);
                cgt_round_array(x, N * K, dt);
                cgt_round_array(w, M * K, dt);
                cgt_round_array(b, M + 1, dt);
                cgt_round_array(g, N * M, dt);
                for (int64_t i = 0; i < N; i++)
                    for (int64_t m = 0; m < M; m++)
                        for (int64_t k = 0; k < K; k++) z[i * M + m] += x[i * K + k] * w[m * K + k];
                for (int bias = 0; bias < 3; bias++)
                    for (int act = 0; act < 3; act++) {
                        int arg[2] = {act, bias};
                        spec s = {.n_in = 3, .v = {x, w, bias ? b : NULL}, .ndim = {2, 2, 1},
                                  .shape = {{N, K}, {M, K}, {bias == 2 ? M + 1 : M}},
                                  .kind = {CG_F32, CG_F32, CG_F32}, .diff = {1, 1, bias != 0}};
                        linear_seed(gm, g, z, bias == 2 ? b + 1 : bias ? b : NULL, N, M, act);
                        char what[128];
                        snprintf(what, sizeof what, "linear N %lld K %lld M %lld act %d bias %d", (long long)N,
                                 (long long)K, (long long)M, act, bias);
                        linear_compare(what, &s, arg, dt, gm, N * M, 50);
                    }
                free(x);
                free(w);
                free(b);
                free(g);
                free(z);
                free(gm);
            }
    /* every subset of (dx, dW, db): dW without db, db without dW (column sums), ... */
    int64_t N = 130, K = 127, M = 256;
    double *x = randn_arr(&r, N * K, 0, 1), *w = randn_arr(&r, M * K, 0, 1 / sqrt((double)K));
    double *b = randn_arr(&r, M, 0, 0.5), *g = randn_arr(&r, N * M, 0, 1);
    double *z = calloc((size_t)(N * M), sizeof *z), *gm = malloc((size_t)(N * M) * sizeof *gm);
    cgt_round_array(x, N * K, dt);
    cgt_round_array(w, M * K, dt);
    cgt_round_array(b, M, dt);
    cgt_round_array(g, N * M, dt);
    for (int64_t i = 0; i < N; i++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t k = 0; k < K; k++) z[i * M + m] += x[i * K + k] * w[m * K + k];
    for (int act = 0; act < 3; act++)
        for (int mask = 1; mask < 8; mask++) {
            int arg[2] = {act, 1};
            spec s = {.n_in = 3, .v = {x, w, b}, .ndim = {2, 2, 1}, .shape = {{N, K}, {M, K}, {M}},
                      .kind = {CG_F32, CG_F32, CG_F32}, .diff = {mask & 1, (mask >> 1) & 1, (mask >> 2) & 1}};
            linear_seed(gm, g, z, b, N, M, act);
            char what[128];
            snprintf(what, sizeof what, "linear act %d gradients of (x, W, b) %d%d%d", act, mask & 1, (mask >> 1) & 1,
                     (mask >> 2) & 1);
            linear_compare(what, &s, arg, dt, gm, N * M, 50);
        }
    free(x);
    free(w);
    free(b);
    free(g);
    free(z);
    free(gm);
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

/* ---------------------------------------------------------------- backend services */

START_TEST(optimizers_match_cpu) {
    const cg_backend *bc = cg__backend(CG_CPU), *bg = cg__backend(GPU);
    ck_assert_ptr_nonnull(bg);
    cgt_rand r = cgt_rand_make("optim");
    int64_t n = 4099;
    for (int k = 0; k < 8; k++) {
        cg_dtype dt = k % 2 ? CG_F64 : CG_F32;
        cg_optim_kind kind = k < 4 ? CG_OPTIM_SGD : k < 6 ? CG_OPTIM_ADAM : CG_OPTIM_ADAMW;
        double *p = randn_arr(&r, n, 0, 1), *g = randn_arr(&r, n, 0, 1), *m = randn_arr(&r, n, 0, 0.1),
               *v = randn_arr(&r, n, 0, 0.1);
        for (int64_t i = 0; i < n; i++) v[i] = fabs(v[i]);
        double *res[2][3];
        for (int dv = 0; dv < 2; dv++) {
            cg_device dev = dv ? GPU : CG_CPU;
            cg_tensor *tp = cgt_tensor(p, &n, 1, dt, dev), *tg = cgt_tensor(g, &n, 1, dt, dev),
                      *tm = cgt_tensor(m, &n, 1, dt, dev), *tv = cgt_tensor(v, &n, 1, dt, dev);
            cg_optim_call c = {.kind = kind, .param = tp, .grad = tg, .m = tm, .v = tv, .lr = 0.01, .momentum = 0.9,
                               .dampening = k == 2 ? 0.1 : 0.0, .weight_decay = 0.01, .beta1 = 0.9, .beta2 = 0.999,
                               .eps = 1e-8, .nesterov = k == 3, .step = 3};
            for (int step = 1; step <= 3; step++) {
                c.step = step;
                CGT_OK((dv ? bg : bc)->optim(&c));
            }
            res[dv][0] = cgt_read(tp);
            res[dv][1] = cgt_read(tm);
            res[dv][2] = cgt_read(tv);
            cg_tensor_release(tp);
            cg_tensor_release(tg);
            cg_tensor_release(tm);
            cg_tensor_release(tv);
        }
        for (int j = 0; j < (kind == CG_OPTIM_SGD ? 2 : 3); j++) {
            char what[64];
            snprintf(what, sizeof what, "optimizer case %d buffer %d", k, j);
            /* src/optim_math.h runs the same rounded operations on both sides: bit for bit */
            CGT_ASSERT_CLOSE_ARR(res[1][j], res[0][j], n, ((cgt_tol){0, 0}), what);
        }
        for (int dv = 0; dv < 2; dv++)
            for (int j = 0; j < 3; j++) free(res[dv][j]);
        free(p);
        free(g);
        free(m);
        free(v);
    }
}
END_TEST

/* The optimizer's device-side gate (cg_optim_call.gate / clip_sumsq, read by the kernel
 * itself): skip on a NaN gate or an infinite norm, clip in the kernel above the threshold,
 * nothing scaled under it; GPU bit for bit equal to the CPU in every mode. */
START_TEST(gated_optimizer_matches_cpu) {
    const cg_backend *bc = cg__backend(CG_CPU), *bg = cg__backend(GPU);
    cgt_rand r = cgt_rand_make("gate");
    int64_t n = 4099, one = 1;
    for (int k = 0; k < 4; k++) {
        cg_dtype dt = k % 2 ? CG_F64 : CG_F32;
        double *p0 = randn_arr(&r, n, 0, 1), *g0 = randn_arr(&r, n, 0, 3);
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += g0[i] * g0[i];
        for (int mode = 0; mode < 4; mode++) {
            double gate_v = mode == 0 ? NAN : 0.0, sq_v = mode == 1 ? INFINITY : ss;
            double *res[2][2];
            for (int dv = 0; dv < 2; dv++) {
                cg_device dev = dv ? GPU : CG_CPU;
                cg_tensor *p = cgt_tensor(p0, &n, 1, dt, dev), *g = cgt_tensor(g0, &n, 1, dt, dev),
                          *m = cgt_tensor(g0, &n, 1, dt, dev), *v = cgt_tensor(p0, &n, 1, dt, dev);
                for (int64_t i = 0; i < 1; i++) CGT_OK(cg_tensor_fill(v, 0.25));
                cg_tensor *gate = cgt_tensor(&gate_v, &one, 1, CG_F64, dev), *sq = cgt_tensor(&sq_v, &one, 1, CG_F64, dev);
                cg_optim_call c = {.kind = k < 2 ? CG_OPTIM_SGD : CG_OPTIM_ADAMW, .param = p, .grad = g, .m = m, .v = v,
                                   .lr = 0.05, .momentum = 0.9, .weight_decay = 0.01, .beta1 = 0.9, .beta2 = 0.999,
                                   .eps = 1e-8, .step = 4, .gate = gate, .clip_sumsq = sq,
                                   .clip_max = mode == 3 ? 2 * sqrt(ss) : 0.3 * sqrt(ss)};
                CGT_OK((dv ? bg : bc)->optim(&c));
                res[dv][0] = cgt_read(p);
                res[dv][1] = cgt_read(m);
                cg_tensor *all[6] = {p, g, m, v, gate, sq};
                for (int i = 0; i < 6; i++) cg_tensor_release(all[i]);
            }
            char what[64];
            snprintf(what, sizeof what, "gated optimizer case %d mode %d", k, mode);
            for (int j = 0; j < 2; j++) CGT_ASSERT_CLOSE_ARR(res[1][j], res[0][j], n, ((cgt_tol){0, 0}), what);
            if (mode < 2) CGT_ASSERT_CLOSE_ARR(res[1][0], p0, n, gpu_tol(dt, 1), what); /* untouched */
            for (int dv = 0; dv < 2; dv++) free(res[dv][0]), free(res[dv][1]);
        }
        free(p0), free(g0);
    }
}
END_TEST

/* Accuracy counted on the device (backend count_correct: a warp per row, first maximum,
 * NaNs skipped unless in column 0) equals the CPU count: planted ties, NaNs and infinities,
 * widths 1 to 1025, i32/i64/f32 targets, f32/f64 predictions. */
START_TEST(accuracy_count_matches_cpu) {
    cgt_rand r = cgt_rand_make("acc");
    const int64_t widths[] = {1, 2, 10, 31, 33, 1025};
    const cg_dtype tdts[] = {CG_I32, CG_I64, CG_F32};
    for (int w = 0; w < 6; w++)
        for (int k = 0; k < 6; k++) {
            int64_t c = widths[w], n = k < 3 ? cgt_randint(&r, 1, 9) : cgt_randint(&r, 1000, 5000);
            cg_dtype pdt = k % 2 ? CG_F64 : CG_F32, tdt = tdts[k % 3];
            double *pv = malloc((size_t)(n * c) * sizeof *pv), *tv = malloc((size_t)n * sizeof *tv);
            for (int64_t i = 0; i < n * c; i++) {
                double u = cgt_uniform(&r, 0, 1);
                pv[i] = u < 0.03 ? NAN : u < 0.05 ? -INFINITY : u < 0.06 ? INFINITY : (double)cgt_randint(&r, -2, 3);
            }
            for (int64_t i = 0; i < n; i++) tv[i] = (double)cgt_randint(&r, 0, c == 1 ? 2 : c);
            int64_t shape[2] = {n, c}, got[2];
            for (int dv = 0; dv < 2; dv++) {
                cg_device dev = dv ? GPU : CG_CPU;
                cg_tensor *pt = cgt_tensor(pv, shape, 2, pdt, dev), *tt = cgt_tensor(tv, &n, 1, tdt, dev);
                CGT_OK(cg_accuracy_count(pt, tt, &got[dv], NULL));
                cg_tensor_release(pt), cg_tensor_release(tt);
            }
            ck_assert_msg(got[0] == got[1], "n %lld c %lld: cpu %lld gpu %lld", (long long)n, (long long)c,
                          (long long)got[0], (long long)got[1]);
            free(pv), free(tv);
        }
}
END_TEST

/* fit on the GPU queues every step without a host wait; it must still match the CPU: the
 * same losses and accuracies per epoch (f64 model), and the same failure on a NaN after a
 * full step-log window, with the skipped steps' counters taken back. */
/* 6 -> hidden (ReLU) -> 3 classes, Adam 1e-2 (clip_norm when > 0), cross-entropy, accuracy */
static cg_model *fit_model(cg_device dev, cg_dtype dt, int64_t hidden, double clip) {
    cg_model *m;
    CGT_OK(cg_model_create(dev, dt, 5, &m));
    CGT_OK(cg_model_add_dense(m, 6, hidden, CG_ACT_RELU));
    CGT_OK(cg_model_add_dense(m, hidden, 3, CG_ACT_NONE));
    cg_optim_config o = cg_optim_adam(1e-2);
    o.clip_norm = clip;
    cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    CGT_OK(cg_model_compile(m, &o, &l, CG_METRIC_ACCURACY));
    return m;
}

START_TEST(fit_matches_cpu_and_rolls_back) {
    cgt_rand r = cgt_rand_make("fit");
    int64_t n = 100, shape[2] = {100, 6};
    double *xv = randn_arr(&r, n * 6, 0, 1), *yv = malloc((size_t)n * sizeof *yv);
    for (int64_t i = 0; i < n; i++) yv[i] = (double)(i % 3), xv[i * 6 + i % 3] += 2;
    for (int bad = 0; bad < 2; bad++) {
        if (bad) xv[80 * 6 + 1] = NAN;
        cg_epoch_logs logs[2][2];
        int64_t steps[2];
        double *w[2];
        for (int dv = 0; dv < 2; dv++) {
            cg_tensor *x = cgt_tensor(xv, shape, 2, CG_F64, CG_CPU), *y = cgt_tensor(yv, &n, 1, CG_I64, CG_CPU);
            cg_model *m = fit_model(dv ? GPU : CG_CPU, CG_F64, 16, 1.0);
            cg_fit_config fc = cg_fit_config_default();
            fc.epochs = 2;
            fc.batch_size = bad ? 1 : 7;
            fc.shuffle = !bad;
            fc.verbose = CG_VERBOSE_QUIET;
            cg_history *h = NULL;
            if (bad) {
                CGT_FAILS(cg_model_fit(m, x, y, &fc, &h), CG_E_NUMERIC, "epoch 1, step 81 of 100");
            } else {
                CGT_OK(cg_model_fit(m, x, y, &fc, &h));
                for (int e = 0; e < 2; e++) logs[dv][e] = *cg_history_at(h, e);
                cg_history_free(h);
            }
            steps[dv] = cg_optimizer_steps(cg_model_optimizer(m));
            w[dv] = cgt_read(cg_model_flat_params(m));
            int64_t nw = cg_tensor_numel(cg_model_flat_params(m));
            ck_assert(cgt_all_finite(w[dv], nw));
            if (dv) CGT_ASSERT_CLOSE_ARR(w[1], w[0], nw, gpu_tol(CG_F64, 100), bad ? "weights at the failure" : "weights");
            cg_model_free(m);
            cg_tensor_release(x), cg_tensor_release(y);
        }
        ck_assert_int_eq(steps[0], steps[1]);
        ck_assert_int_eq(steps[0], bad ? 80 : 2 * 15);
        if (!bad)
            for (int e = 0; e < 2; e++) {
                ck_assert_msg(cgt_close(logs[1][e].loss, logs[0][e].loss, gpu_tol(CG_F64, 100)), "epoch %d loss", e);
                ck_assert(logs[1][e].accuracy == logs[0][e].accuracy);
            }
        free(w[0]), free(w[1]);
    }
    free(xv), free(yv);
}
END_TEST

/* A NaN at step 81 of 100 (batch 8) in a model with BatchNorm: the forwards of steps 81..100
 * changed the running statistics on the device before the step log was read; fit puts them
 * back from the device copy of step 81's start. Every state-dict tensor (parameters, running
 * statistics, num_batches_tracked) is finite and matches the CPU. */
START_TEST(fit_restores_batchnorm_like_cpu) {
    cgt_rand r = cgt_rand_make("fit batchnorm");
    /* batches of 8, not 2: BatchNorm over two rows outputs +-1 whatever the input, so the
       first layer's gradient is only eps's trace, rounding noise that Adam grows into
       weights the backends cannot agree on at 1e-8 (seen on the emulator) */
    int64_t n = 800, shape[2] = {800, 6};
    double *xv = randn_arr(&r, n * 6, 0, 1), *yv = malloc((size_t)n * sizeof *yv);
    for (int64_t i = 0; i < n; i++) yv[i] = (double)(i % 3), xv[i * 6 + i % 3] += 2;
    xv[(80 * 8 + 1) * 6 + 2] = NAN; /* in the 81st batch */
    cg_state_dict *sd[2];
    for (int dv = 0; dv < 2; dv++) {
        cg_tensor *x = cgt_tensor(xv, shape, 2, CG_F64, CG_CPU), *y = cgt_tensor(yv, &n, 1, CG_I64, CG_CPU);
        cg_model *m;
        CGT_OK(cg_model_create(dv ? GPU : CG_CPU, CG_F64, 6, &m));
        /* no bias before BatchNorm: its gradient is 0 up to rounding, and Adam would grow
           that noise into a bias the two backends cannot agree on */
        CGT_OK(cg_model_add_linear(m, 6, 24, 0, CG_INIT_AUTO));
        CGT_OK(cg_model_add_batchnorm1d(m, 24, 0, 0));
        CGT_OK(cg_model_add_activation(m, CG_ACT_RELU, 0));
        CGT_OK(cg_model_add_dense(m, 24, 3, CG_ACT_NONE));
        cg_optim_config o = cg_optim_adam(1e-2);
        cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
        CGT_OK(cg_model_compile(m, &o, &l, 0));
        cg_fit_config fc = cg_fit_config_default();
        fc.batch_size = 8;
        fc.shuffle = 0;
        fc.verbose = CG_VERBOSE_QUIET;
        CGT_FAILS(cg_model_fit(m, x, y, &fc, NULL), CG_E_NUMERIC, "epoch 1, step 81 of 100");
        ck_assert_int_eq(cg_optimizer_steps(cg_model_optimizer(m)), 80);
        CGT_OK(cg_model_state_dict(m, &sd[dv]));
        cg_model_free(m);
        cg_tensor_release(x), cg_tensor_release(y);
    }
    ck_assert_uint_eq(cg_state_dict_count(sd[0]), cg_state_dict_count(sd[1]));
    for (size_t i = 0; i < cg_state_dict_count(sd[0]); i++) {
        const char *name = cg_state_dict_name_at(sd[0], i);
        cg_tensor *c = cg_state_dict_tensor_at(sd[0], i), *g = cg_state_dict_get(sd[1], name);
        ck_assert_ptr_nonnull(g);
        int64_t k = cg_tensor_numel(c);
        double *cv = cgt_read(c), *gv = cgt_read(g);
        ck_assert_msg(cgt_all_finite(gv, k), "%s is not finite", name);
        CGT_ASSERT_CLOSE_ARR(gv, cv, k, gpu_tol(CG_F64, 100), name);
        free(cv), free(gv);
    }
    cg_state_dict_free(sd[0]), cg_state_dict_free(sd[1]);
    free(xv), free(yv);
}
END_TEST

/* ---------------------------------------------------------------- thread-safe inference */

typedef struct predict_job {
    const cg_model *m;
    const cg_tensor *x; /* on the host: each call uploads it, as a service's request would be */
    const float *ref;   /* the single-thread GPU output */
    int64_t n;
    int bad, iters;
} predict_job;

static void *predict_worker(void *arg) {
    predict_job *j = arg;
    float *v = malloc((size_t)j->n * sizeof *v);
    for (int it = 0; it < j->iters; it++) {
        cg_tensor *y = NULL;
        if (!v || cg_model_predict(j->m, j->x, &y) != CG_OK ||
            cg_tensor_to_host(y, v, (size_t)j->n * sizeof *v) != CG_OK || memcmp(v, j->ref, (size_t)j->n * sizeof *v))
            j->bad++;
        cg_tensor_release(y);
    }
    free(v);
    return NULL;
}

/* cg_model_predict from four host threads at once on one model on the GPU (the embedding
 * service's call): every output equals the single-thread GPU output bit for bit (the same
 * kernels on the same shapes, one stream), which matches the CPU; the model is unchanged. */
START_TEST(predict_threads_match_one_thread) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 23, &m));
    CGT_OK(cg_model_add_dense(m, 20, 48, CG_ACT_GELU));
    CGT_OK(cg_model_add_batchnorm1d(m, 48, 0, 0));
    CGT_OK(cg_model_add_dropout(m, 0.3));
    CGT_OK(cg_model_add_layernorm(m, 48, 0));
    CGT_OK(cg_model_add_dense(m, 48, 7, CG_ACT_RELU));
    CGT_OK(cg_model_add_dense(m, 7, 5, CG_ACT_SIGMOID));
    cgt_rand r = cgt_rand_make("predict threads");
    int64_t s[2] = {37, 20}, n = 37 * 5;
    cg_tensor *x = cgt_randn(&r, s, 2, CG_F32, CG_CPU), *y = NULL;
    CGT_OK(cg_model_forward(m, x, &y)); /* a training forward moves the running statistics */
    cg_tensor_release(y);
    CGT_OK(cg_model_predict(m, x, &y));
    double *cpu = cgt_read(y);
    cg_tensor_release(y);
    CGT_OK(cg_model_to(m, GPU));
    cg_state_dict *before, *after;
    CGT_OK(cg_model_state_dict(m, &before));
    CGT_OK(cg_model_predict(m, x, &y));
    double *gpu = cgt_read(y);
    CGT_ASSERT_CLOSE_ARR(gpu, cpu, n, gpu_tol(CG_F32, 10), "predict on the GPU");
    float *ref = malloc((size_t)n * sizeof *ref);
    CGT_OK(cg_tensor_to_host(y, ref, (size_t)n * sizeof *ref));
    cg_tensor_release(y);
    pthread_t th[4];
    predict_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (predict_job){m, x, ref, n, 0, 25};
        ck_assert_int_eq(pthread_create(&th[i], NULL, predict_worker, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) ck_assert_msg(jobs[i].bad == 0, "thread %d: %d of 25 predictions differ or failed", i, jobs[i].bad);
    CGT_OK(cg_model_state_dict(m, &after));
    for (size_t i = 0; i < cg_state_dict_count(before); i++) {
        cg_tensor *a = cg_state_dict_tensor_at(before, i), *b = cg_state_dict_tensor_at(after, i);
        int64_t k = cg_tensor_numel(a);
        double *av = cgt_read(a), *bv = cgt_read(b);
        ck_assert_msg(memcmp(av, bv, (size_t)k * sizeof *av) == 0, "%s changed", cg_state_dict_name_at(before, i));
        free(av), free(bv);
    }
    cg_state_dict_free(before), cg_state_dict_free(after);
    free(cpu), free(gpu), free(ref);
    cg_tensor_release(x);
    cg_model_free(m);
}
END_TEST

/* A label out of range during fit: on the GPU the kernel's report waits for the step log's
 * read (or for the gradient-norm check's read, on an epoch's first step); either way fit
 * fails with CG_E_INVALID naming the label, after the same optimizer steps as the CPU, which
 * fails at the step itself, and with the same weights. */
START_TEST(fit_bad_label_like_cpu) {
    cgt_rand r = cgt_rand_make("fit bad label");
    int64_t n = 60, shape[2] = {60, 6};
    double *xv = randn_arr(&r, n * 6, 0, 1), *yv = malloc((size_t)n * sizeof *yv);
    for (int hook = 0; hook < 2; hook++) {
        for (int64_t i = 0; i < n; i++) yv[i] = (double)(i % 3);
        yv[hook ? 2 : 20] = 7; /* batch 1 (the norm check reads there) or batch 4 of epoch 1 */
        int64_t steps[2];
        double *w[2];
        for (int dv = 0; dv < 2; dv++) {
            cg_tensor *x = cgt_tensor(xv, shape, 2, CG_F32, CG_CPU), *y = cgt_tensor(yv, &n, 1, CG_I64, CG_CPU);
            cg_model *m = fit_model(dv ? GPU : CG_CPU, CG_F32, 8, 0.0);
            cg_fit_config fc = cg_fit_config_default();
            fc.epochs = 2;
            fc.batch_size = 6;
            fc.shuffle = 0;
            FILE *sink = fopen("/dev/null", "w");
            fc.out = sink;
            fc.verbose = hook ? CG_VERBOSE_EPOCH : CG_VERBOSE_QUIET;
            cg_history *h = NULL;
            CGT_FAILS(cg_model_fit(m, x, y, &fc, &h), CG_E_INVALID, "label 7 at row 2 is outside [0, 3)");
            fclose(sink);
            steps[dv] = cg_optimizer_steps(cg_model_optimizer(m));
            w[dv] = cgt_read(cg_model_flat_params(m));
            int64_t nw = cg_tensor_numel(cg_model_flat_params(m));
            ck_assert(cgt_all_finite(w[dv], nw));
            if (dv) CGT_ASSERT_CLOSE_ARR(w[1], w[0], nw, gpu_tol(CG_F32, 100), "weights at the failure");
            cg_model_free(m);
            cg_tensor_release(x), cg_tensor_release(y);
        }
        ck_assert_int_eq(steps[0], steps[1]);
        ck_assert_int_eq(steps[0], hook ? 0 : 3);
        free(w[0]), free(w[1]);
    }
    free(xv), free(yv);
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

/* ---------------------------------------------------------------- sticky device error */

/* A label outside [0, C) cannot be checked on the GPU without a host wait: the CE kernel
 * records it in the context's sticky error word (NaN for that row as before), the CE call
 * itself returns CG_OK, and the next host wait (item, to_host, cg_cuda_synchronize)
 * returns CG_E_INVALID naming label and row like the CPU message. The word is then clear:
 * a sync passes and a valid call gives the CPU's value. Warp (C 10) and block (C 1500)
 * paths, i64 and i32 labels, label C and -1. */
START_TEST(ce_bad_label_reported_at_next_sync) {
    cgt_rand r = cgt_rand_make("ce bad label");
    for (int k = 0; k < 8; k++) {
        /* 10: warp rows; 1500: register rows (f32, C % 4 == 0); 1501: block rows */
        int64_t N = 6, C = k & 1 ? (k & 4 ? 1501 : 1500) : 10, xs[2] = {N, C};
        cg_dtype ldt = k & 2 ? CG_I32 : CG_I64;
        long long bad = k & 4 ? -1 : (long long)C;
        int how = k % 3; /* 0: item of the mean, 1: to_host of the rows, 2: cg_cuda_synchronize */
        cg_reduction red = how == 1 ? CG_REDUCE_NONE : CG_REDUCE_MEAN;
        double lab[6];
        for (int i = 0; i < N; i++) lab[i] = (double)cgt_randint(&r, 0, C);
        cg_tensor *x = cgt_randn(&r, xs, 2, CG_F32, GPU);
        double *xh = cgt_read(x);
        cg_tensor *good = cgt_tensor(lab, &N, 1, ldt, GPU);
        cg_tensor *xc = cgt_tensor(xh, xs, 2, CG_F32, CG_CPU), *goodc = cgt_tensor(lab, &N, 1, ldt, CG_CPU);
        lab[3] = (double)bad;
        cg_tensor *badl = cgt_tensor(lab, &N, 1, ldt, GPU), *badc = cgt_tensor(lab, &N, 1, ldt, CG_CPU);
        char want[96];
        snprintf(want, sizeof want, "label %lld at row 3 is outside [0, %lld)", bad, (long long)C);
        cg_tensor *loss = NULL, *lc = NULL;
        CGT_FAILS(cg_softmax_cross_entropy(xc, badc, red, 0.1, &lc), CG_E_INVALID, want); /* the CPU's words */
        CGT_OK(cg_softmax_cross_entropy(x, badl, red, 0.1, &loss)); /* no host wait: nothing known yet */
        if (how == 0) {
            double v = 0;
            CGT_FAILS(cg_tensor_item(loss, &v), CG_E_INVALID, want, "softmax_cross_entropy", "synchronisation");
        } else if (how == 1) {
            float h[6];
            CGT_FAILS(cg_tensor_to_host(loss, h, sizeof h), CG_E_INVALID, want);
            for (int i = 0; i < N; i++) /* the data still comes back: NaN only for the bad row */
                ck_assert_msg(i == 3 ? isnan(h[i]) : isfinite(h[i]), "case %d row %d: %g", k, i, (double)h[i]);
        } else {
            CGT_FAILS(cg_cuda_synchronize(0), CG_E_INVALID, want);
        }
        CGT_OK(cg_cuda_synchronize(0)); /* reported once, then clear */
        cg_tensor_release(loss);
        loss = NULL;
        CGT_OK(cg_softmax_cross_entropy(x, good, CG_REDUCE_MEAN, 0.1, &loss));
        CGT_OK(cg_softmax_cross_entropy(xc, goodc, CG_REDUCE_MEAN, 0.1, &lc));
        double g = cgt_item(loss), c = cgt_item(lc);
        ck_assert_msg(cgt_close(g, c, gpu_tol(CG_F32, 10)), "case %d after the error: cpu %.9g cuda %.9g", k, c, g);
        cg_tensor_release(loss);
        cg_tensor_release(lc);
        cg_tensor_release(x);
        cg_tensor_release(xc);
        cg_tensor_release(good);
        cg_tensor_release(goodc);
        cg_tensor_release(badl);
        cg_tensor_release(badc);
        free(xh);
    }
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

/* ---------------------------------------------------------------- allocator */

START_TEST(allocator_stats_reuse_and_oom) {
    cg_cuda_mem_stats s0, s1, s2, s3;
    int caching_before; /* the suite may run with CG_CUDA_NO_CACHING=1: put it back after */
    CGT_OK(cg_cuda_get_caching(0, &caching_before));
    CGT_OK(cg_cuda_set_caching(0, 1));
    CGT_OK(cg_cuda_empty_cache(0));
    CGT_OK(cg_cuda_memory_stats(0, &s0));
    ck_assert_uint_eq(s0.cached, 0);
    int64_t n = 1 << 20;
    cg_tensor *t = NULL;
    CGT_OK(cg_tensor_zeros(&n, 1, CG_F32, GPU, &t));
    CGT_OK(cg_cuda_memory_stats(0, &s1));
    ck_assert_msg(s1.in_use >= s0.in_use + (size_t)n * 4, "in_use did not grow");
    ck_assert(s1.peak_in_use >= s1.in_use);
    cg_tensor_release(t);
    CGT_OK(cg_cuda_memory_stats(0, &s2));
    ck_assert_msg(s2.cached >= (size_t)n * 4, "a freed block was not cached");
    CGT_OK(cg_tensor_zeros(&n, 1, CG_F32, GPU, &t));
    CGT_OK(cg_cuda_memory_stats(0, &s3));
    ck_assert_msg(s3.n_cache_hit > s2.n_cache_hit, "same-size allocation was not served from the cache");
    ck_assert_msg(s3.n_cuda_malloc == s2.n_cuda_malloc, "a cache hit called cudaMalloc");
    cg_tensor_release(t);
    CGT_OK(cg_cuda_empty_cache(0));
    CGT_OK(cg_cuda_memory_stats(0, &s3));
    ck_assert_uint_eq(s3.cached, 0);
    /* far beyond any device: a status, not a crash */
    int64_t huge[2] = {(int64_t)1 << 22, (int64_t)1 << 22};
    int64_t small = 1000;
    CGT_OK(cg_tensor_zeros(&small, 1, CG_F32, GPU, &t));
    cg_tensor_release(t); /* one cached block for the OOM path to give back */
    cg_cuda_mem_stats s4, s5;
    CGT_OK(cg_cuda_memory_stats(0, &s4));
    ck_assert(s4.cached > 0);
    CGT_FAILS(cg_tensor_empty(huge, 2, CG_F32, GPU, &t), CG_E_OOM, "bytes", "free");
    CGT_OK(cg_cuda_memory_stats(0, &s5));
    ck_assert_msg(s5.n_oom_retry == s4.n_oom_retry + 1, "the OOM path did not retry once (%llu -> %llu)",
                  (unsigned long long)s4.n_oom_retry, (unsigned long long)s5.n_oom_retry);
    ck_assert_msg(s5.cached == 0, "the OOM path kept %llu cached bytes", (unsigned long long)s5.cached);
    cg_cuda_device_info info;
    CGT_OK(cg_cuda_device_info_get(0, &info));
    ck_assert(info.sm_count > 0);
    CGT_FAILS(cg_cuda_device_info_get(999, &info), CG_E_DEVICE, "cuda:999");
    CGT_OK(cg_cuda_synchronize(0));
    CGT_OK(cg_cuda_set_caching(0, caching_before));
}
END_TEST

/* Caching off: exact-size blocks from cudaMalloc, handed back at their free; kernels that
 * run in between still see their data (the free waits for the stream). */
START_TEST(allocator_without_caching) {
    int64_t small = 1000;
    cg_tensor *t = NULL;
    int caching_before, on;
    CGT_OK(cg_cuda_get_caching(0, &caching_before));
    const char *env = getenv("CG_CUDA_NO_CACHING"); /* test_gpu_emu_nocache sets it to 1 */
    if (env && strcmp(env, "1") == 0) ck_assert_msg(!caching_before, "CG_CUDA_NO_CACHING=1 left caching on");
    CGT_OK(cg_cuda_set_caching(0, 1));
    CGT_OK(cg_tensor_zeros(&small, 1, CG_F32, GPU, &t));
    cg_tensor_release(t); /* a cached block that switching off must give back */
    cg_cuda_mem_stats s0, s1, s2, s3;
    CGT_OK(cg_cuda_set_caching(0, 0));
    CGT_OK(cg_cuda_get_caching(0, &on));
    ck_assert_int_eq(on, 0);
    CGT_OK(cg_cuda_memory_stats(0, &s0));
    ck_assert_uint_eq(s0.cached, 0);
    int64_t n = 1003; /* 4012 bytes: a size class would round it to 4096 */
    CGT_OK(cg_tensor_zeros(&n, 1, CG_F32, GPU, &t));
    CGT_OK(cg_cuda_memory_stats(0, &s1));
    ck_assert_uint_eq(s1.in_use, s0.in_use + (size_t)n * 4);
    ck_assert_uint_eq(s1.reserved, s0.reserved + (size_t)n * 4);
    ck_assert_uint_eq(s1.n_cuda_malloc, s0.n_cuda_malloc + 1);
    ck_assert_uint_eq(s1.n_cache_hit, s0.n_cache_hit);
    /* work on the block, queued before its free, still reads the right data */
    cgt_rand r = cgt_rand_make("allocator_without_caching");
    float *h = malloc((size_t)n * sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (int64_t i = 0; i < n; i++) h[i] = (float)cgt_uniform(&r, -2, 2);
    cg_tensor *x = NULL, *y = NULL, *yc = NULL;
    CGT_OK(cg_tensor_from_host(h, &n, 1, CG_F32, GPU, &x));
    CGT_OK(cg_relu(x, &y));
    cg_tensor_release(x);
    CGT_OK(cg_tensor_to(y, CG_CPU, &yc));
    const float *yd = cg_tensor_data(yc);
    for (int64_t i = 0; i < n; i++) ck_assert_float_eq(yd[i], h[i] > 0 ? h[i] : 0.0f);
    cg_tensor_release(yc);
    cg_tensor_release(y);
    cg_tensor_release(t);
    CGT_OK(cg_cuda_memory_stats(0, &s2));
    ck_assert_uint_eq(s2.cached, 0);
    ck_assert_uint_eq(s2.in_use, s0.in_use);
    ck_assert_uint_eq(s2.reserved, s0.reserved);
    ck_assert_uint_eq(s2.n_cuda_free - s0.n_cuda_free, s2.n_cuda_malloc - s0.n_cuda_malloc);
    ck_assert_uint_eq(s2.n_cache_hit, s0.n_cache_hit);
    /* back on: a freed block is cached again */
    CGT_OK(cg_cuda_set_caching(0, 1));
    CGT_OK(cg_tensor_zeros(&n, 1, CG_F32, GPU, &t));
    cg_tensor_release(t);
    CGT_OK(cg_cuda_memory_stats(0, &s3));
    ck_assert_msg(s3.cached >= 4096, "caching back on: the freed block was not cached");
    CGT_OK(cg_cuda_get_caching(0, &on));
    ck_assert_int_eq(on, 1);
    CGT_FAILS(cg_cuda_set_caching(999, 0), CG_E_DEVICE, "cuda:999");
    CGT_FAILS(cg_cuda_get_caching(0, NULL), CG_E_INVALID, "enabled");
    CGT_OK(cg_cuda_set_caching(0, caching_before));
    free(h);
}
END_TEST

/* ---------------------------------------------------------------- data loader prefetch */

/* A CPU copy of t (caller releases); NULL stays NULL. */
static cg_tensor *to_host(const cg_tensor *t) {
    if (!t) return NULL;
    cg_tensor *h = NULL;
    CGT_OK(cg_tensor_to(t, CG_CPU, &h));
    return h;
}

static void assert_same_batch(cg_tensor *ref, cg_tensor *got, const char *what, int call) {
    if (!ref || !got) {
        ck_assert_msg(ref == got, "%s, call %d: one loader ended the epoch, the other did not", what, call);
        return;
    }
    ck_assert_msg(cg_tensor_device(got).type == CG_DEVICE_CUDA, "%s, call %d: batch not on the GPU", what, call);
    cg_tensor *h = to_host(got);
    ck_assert_int_eq(cg_tensor_ndim(h), cg_tensor_ndim(ref));
    for (int d = 0; d < cg_tensor_ndim(h); d++) ck_assert_int_eq(cg_tensor_shape(h)[d], cg_tensor_shape(ref)[d]);
    ck_assert_int_eq(cg_tensor_dtype(h), cg_tensor_dtype(ref));
    ck_assert_msg(memcmp(cg_tensor_data(h), cg_tensor_data(ref), cg_tensor_nbytes(ref)) == 0,
                  "%s, call %d: batch differs from the CPU loader's", what, call);
    cg_tensor_release(h);
}

/* Two epochs (plus the end-of-epoch returns) on cuda:0, prefetching and not, against the
 * CPU loader bit for bit. Between calls the batch is used on the compute stream (x * 2,
 * checked too) so uploads really overlap queued work; the allocator cache is stocked with
 * NaN blocks of the batch sizes so a batch read before its upload landed shows up. */
START_TEST(loader_prefetch_matches_cpu) {
    cgt_rand r = cgt_rand_make("gpu_loader");
    for (int trial = 0; trial < 8; trial++) {
        int64_t n = trial == 0 ? 1 : cgt_randint(&r, 2, 3000), f = cgt_randint(&r, 1, 300);
        int64_t bs = cgt_randint(&r, 1, trial < 4 ? 64 : 1024);
        if (trial == 7) bs = n / 4 > 0 ? n / 4 : 1; /* at least 4 batches: a restart inside the epoch */
        int drop = trial & 1, no_pf = trial == 6, with_y = trial != 3;
        double *xv = randn_arr(&r, n * f, 0, 1);
        double *yv = malloc((size_t)n * sizeof *yv);
        for (int64_t i = 0; i < n; i++) yv[i] = (double)(i % 10);
        int64_t xs[2] = {n, f}, ys[1] = {n};
        cg_tensor *x = cgt_tensor(xv, xs, 2, CG_F32, CG_CPU), *y = cgt_tensor(yv, ys, 1, CG_I64, CG_CPU);
        cg_dataset *ds;
        CGT_OK(cg_dataset_from_tensors(x, with_y ? y : NULL, &ds));
        cg_loader_opts o = {.batch_size = bs, .shuffle = trial % 3 != 2, .seed = cgt_next(&r), .drop_last = drop,
                            .device = CG_CPU};
        cg_loader *ref, *gl;
        CGT_OK(cg_loader_create(ds, &o, &ref));
        o.device = GPU;
        o.no_prefetch = no_pf;
        CGT_OK(cg_loader_create(ds, &o, &gl));
        int64_t full = (bs < n ? bs : n) * f, part = (n % bs) * f;
        int64_t pc[4] = {full, full, part, part};
        poison_cache(pc, 4, CG_F32);
        char what[96];
        snprintf(what, sizeof what, "trial %d (n %lld, f %lld, bs %lld, drop %d, y %d, prefetch %d)", trial,
                 (long long)n, (long long)f, (long long)bs, drop, with_y, !no_pf);
        int64_t nb = cg_loader_num_batches(ref);
        int calls = 2 * (int)(nb + 1) + 1; /* two epochs and a bit */
        /* trial 5: fit's restart at the end of epoch 0 (the prefetched first batch of epoch 1
         * is kept); trial 7: a jump to epoch 1 from the middle of epoch 0, which drops the
         * prefetched batch of epoch 0 */
        int restart_at = trial == 5 ? (int)nb + 1 : trial == 7 ? (int)(nb / 2) : -1;
        for (int c = 0; c < calls; c++) {
            if (c == restart_at) {
                CGT_OK(cg_loader_set_epoch(ref, 1));
                CGT_OK(cg_loader_set_epoch(gl, 1));
            }
            cg_tensor *ax, *ay, *gx, *gy;
            CGT_OK(cg_loader_next(ref, &ax, &ay));
            CGT_OK(cg_loader_next(gl, &gx, &gy));
            ck_assert_int_eq((int64_t)cg_loader_epoch(ref), (int64_t)cg_loader_epoch(gl));
            if (gx) { /* queue work on the batch before reading it back */
                cg_tensor *g2 = NULL, *a2 = NULL;
                CGT_OK(cg_scale(gx, 2.0, 0.0, &g2));
                CGT_OK(cg_scale(ax, 2.0, 0.0, &a2));
                assert_same_batch(a2, g2, what, c);
                cg_tensor_release(g2);
                cg_tensor_release(a2);
            }
            assert_same_batch(ax, gx, what, c);
            assert_same_batch(ay, gy, what, c);
            cg_tensor_release(ax);
            cg_tensor_release(ay);
            cg_tensor_release(gx);
            cg_tensor_release(gy);
        }
        cg_loader_free(gl); /* with a batch in flight */
        cg_loader_free(ref);
        cg_dataset_free(ds);
        cg_tensor_release(x);
        cg_tensor_release(y);
        free(xv);
        free(yv);
    }
    CGT_OK(cg_cuda_synchronize(0));
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("gpu_numerics");
    /* "ops": every kernel at small and odd shapes; "large": the same kernels again on the
     * widest rows and longest reductions (multi-chunk paths). compute-sanitizer runs "ops"
     * first (CK_RUN_CASE=ops), because under it the large shapes take minutes. */
    TCase *tc = tcase_create("ops"), *tl = tcase_create("large");
    /* tests run in one process (CK_FORK=no in ctest and on the device): a test that fails
     * half way must not leave cuDNN or a low matmul precision on for the ones after it */
    tcase_add_checked_fixture(tc, NULL, reset_settings);
    tcase_add_checked_fixture(tl, NULL, reset_settings);
    tcase_set_timeout(tc, 600);
    tcase_set_timeout(tl, 600);
    tcase_add_loop_test(tc, case_vs_cpu, 0, 2 * cgt_n_cases);
    tcase_add_loop_test(tl, rows_odd_widths, 0, 2);
    tcase_add_test(tl, layernorm_many_rows);
    tcase_add_test(tc, ce_seeded_backward_matches_kernel);
    tcase_add_loop_test(tl, reductions_all_paths, 0, 2);
    tcase_add_test(tc, reductions_are_deterministic);
    tcase_add_loop_test(tc, broadcast_shapes, 0, 2);
    tcase_add_test(tc, div_backward_extreme_b);
    tcase_add_test(tc, mse_extreme_values_like_cpu);
    tcase_add_loop_test(tl, batchnorm_shapes, 0, 2);
    tcase_add_test(tc, batchnorm_huge_values_like_cpu);
#if !defined(CG_GPU_SUITE_ON_CPU) || defined(CG_HAVE_CUDA) /* cg_cuda_set_* need the CUDA build */
    tcase_add_test(tc, cudnn_twins_match_cpu);
#endif
    tcase_add_test(tc, dropout_mask_matches_cpu_bitwise);
    tcase_add_test(tc, rand_streams_match_cpu);
    tcase_add_test(tc, conversions_match_cpu_bitwise);
    tcase_add_test(tc, strided_copy_matches_cpu);
    tcase_add_test(tc, nan_inf_propagate_like_cpu);
    tcase_add_test(tc, gelu_tanh_gradient_saturates_like_cpu);
    tcase_add_test(tc, linear_nan_like_cpu);
    tcase_add_loop_test(tc, linear_shapes_fwd_bwd, 0, 2);
    tcase_add_test(tc, linear_nan_backward_like_cpu);
    tcase_add_test(tc, linear_no_outputs);
    tcase_add_test(tc, optimizers_match_cpu);
    tcase_add_test(tc, blas1_helpers_match_cpu);
    tcase_add_test(tc, scale_matches_cpu_bitwise);
    tcase_add_test(tc, gated_optimizer_matches_cpu);
    tcase_add_test(tc, accuracy_count_matches_cpu);
    tcase_add_test(tc, fit_matches_cpu_and_rolls_back);
    tcase_add_test(tc, fit_restores_batchnorm_like_cpu);
    tcase_add_test(tc, fit_bad_label_like_cpu);
    tcase_add_test(tc, predict_threads_match_one_thread);
#if !defined(CG_GPU_SUITE_ON_CPU) || defined(CG_HAVE_CUDA) /* cg_cuda_set_* need the CUDA build */
    tcase_add_test(tc, matmul_precisions);
#endif
#ifndef CG_GPU_SUITE_ON_CPU /* device behaviour: deferred label errors, the allocator, async uploads */
    tcase_add_test(tc, ce_bad_label_reported_at_next_sync);
    tcase_add_test(tc, allocator_stats_reuse_and_oom);
    tcase_add_test(tc, allocator_without_caching);
    tcase_add_test(tc, loader_prefetch_matches_cpu);
#endif
    suite_add_tcase(s, tc);
    suite_add_tcase(s, tl);
    return s;
}

int main(void) {
#ifdef CG_GPU_SUITE_ON_CPU
    printf("GPU suite harness: the device side runs on the CPU backend\n");
#else
    if (!cg_cuda_built() || cg_device_count() == 0) {
        printf("no CUDA device: skipping GPU suite (%s)\n", cg_cuda_availability());
        return 77; /* ctest reports it as skipped (SKIP_RETURN_CODE) */
    }
#endif
    return cgt_run_suite(suite());
}
