/* The GPU suite's CPU-vs-GPU runner (declared in gpu_suite.h): tolerances, cache poisoning,
 * and run_spec / compare_spec, which run one op on both backends with the same inputs and
 * output gradient and compare values and gradients. */
#include "gpu_suite.h"

/* f32: the GPU sums in float (the CPU in double) and uses float libm: wider than the
 * CPU-vs-float64 tolerance. f64: both sides in double, different summation orders. */
cgt_tol gpu_tol(cg_dtype dt, double mul) {
    cgt_tol t = dt == CG_F64 ? (cgt_tol){1e-10, 1e-10} : (cgt_tol){2e-5, 1e-4};
    return cgt_tol_scaled(t, mul > 0 ? mul : 1);
}

/* NaN-filled blocks of these element counts go into the device cache: all are allocated
 * before any is freed, so equal counts leave as many distinct NaN blocks (freed one by one,
 * the cache would hand the same block back each time). */
#define POISON_MAX 8
void poison_cache(const int64_t *counts, int k, cg_dtype dt) {
    cg_tensor *t[POISON_MAX] = {NULL};
    ck_assert(k <= POISON_MAX);
    for (int i = 0; i < k; i++) {
        if (counts[i] <= 0) continue;
        int64_t n = counts[i];
        CGT_OK(cg_tensor_full(&n, 1, dt, GPU, NAN, &t[i]));
    }
    for (int i = 0; i < k; i++) cg_tensor_release(t[i]);
}

void reset_settings(void) {
#ifdef CG_HAVE_CUDA
    (void)cg_cuda_set_impl(CG_IMPL_OWN);
    (void)cg_cuda_set_matmul_precision(CG_MATMUL_FP32);
#endif
}

void result_free(result *r) {
    free(r->out);
    for (int i = 0; i < CGT_MAX_IN; i++) free(r->g[i]);
    memset(r, 0, sizeof *r);
}

void run_spec(const spec *s, apply_fn f, const void *arg, cg_dtype dt, cg_device dev, const double *gseed,
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

void compare_spec_tol(const char *what, const spec *s, apply_fn f, const void *arg, cg_dtype dt, cgt_tol tol,
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

void compare_spec(const char *what, const spec *s, apply_fn f, const void *arg, cg_dtype dt, double tol_mul) {
    compare_spec_tol(what, s, f, arg, dt, gpu_tol(dt, tol_mul), NULL);
}

double *randn_arr(cgt_rand *r, int64_t n, double mean, double std) {
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = mean + std * cgt_normal(r);
    return v;
}

/* same class: both NaN, or equal infinities, or close */
int same_class(double g, double c, cgt_tol tol) {
    if (isnan(c) || isnan(g)) return isnan(c) && isnan(g);
    if (isinf(c) || isinf(g)) return g == c;
    return cgt_close(g, c, tol);
}
