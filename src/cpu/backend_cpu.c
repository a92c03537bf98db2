/* The CPU reference backend: memory, fills, random draws, BLAS-1 helpers and the
 * forward/backward kernel tables. Every other backend is checked against this one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "philox.h"

/* ---- memory ---- */

static cg_status alloc_cpu(int dev, size_t nbytes, void **ptr) {
    (void)dev;
    /* malloc(0) may return NULL; ask for one byte so a live tensor always has a pointer */
    void *p = malloc(nbytes ? nbytes : 1);
    if (!p) return CG_FAIL(CG_E_OOM, "cpu: out of host memory allocating %zu bytes", nbytes);
    *ptr = p;
    return CG_OK;
}

static void free_cpu(int dev, void *ptr) {
    (void)dev;
    free(ptr);
}

static cg_status memcpy_cpu(int dev, void *dst, const void *src, size_t nbytes, cg_copy_kind kind) {
    (void)dev;
    (void)kind;
    if (nbytes) memmove(dst, src, nbytes);
    return CG_OK;
}

static cg_status sync_cpu(int dev) {
    (void)dev;
    return CG_OK;
}

/* ---- random fills (Philox stream layout of philox.h) ---- */

#define RAND_LOOP(T)                                                                                          \
    do {                                                                                                      \
        T *y = (T *)cg__ptr(t);                                                                               \
        for (int64_t i0 = 0; i0 < n; i0 += 4) {                                                               \
            cg_philox4 r = cg_philox4x32_10(offset + (uint64_t)i0 / 4, seed);                                 \
            if (dist == CG_RAND_UNIFORM) {                                                                    \
                for (int j = 0; j < 4 && i0 + j < n; j++) y[i0 + j] = (T)(a + (b - a) * (double)cg_u01(r.v[j])); \
            } else { /* Box-Muller: elements 2k, 2k+1 share words 2k, 2k+1 */                                 \
                for (int j = 0; j < 4 && i0 + j < n; j += 2) {                                                \
                    double u1 = cg_u01_open0(r.v[j]), u2 = cg_u01(r.v[j + 1]);                                \
                    double rad = sqrt(-2.0 * log(u1)), th = 2.0 * CG_CPU_PI * u2;                             \
                    y[i0 + j] = (T)(a + b * rad * cos(th));                                                   \
                    if (i0 + j + 1 < n) y[i0 + j + 1] = (T)(a + b * rad * sin(th));                           \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
    } while (0)

static cg_status rand_cpu(cg_tensor *t, cg_rand_dist dist, double a, double b, uint64_t seed, uint64_t offset) {
    int64_t n = cg_cpu_numel(t);
    switch (t->dtype) {
    case CG_F32: RAND_LOOP(float); return CG_OK;
    case CG_F64: RAND_LOOP(double); return CG_OK;
    default: return CG_CPU_BAD_DTYPE(dist == CG_RAND_UNIFORM ? "rand_uniform" : "rand_normal", t->dtype);
    }
}
#undef RAND_LOOP

/* ---- BLAS-1 helpers ---- */

static cg_status axpy_cpu(cg_tensor *y, double alpha, const cg_tensor *x) {
    int64_t n = cg_cpu_numel(y);
    if (x->dtype != y->dtype)
        return CG_FAIL(CG_E_DTYPE, "axpy: dtypes %s and %s differ", cg_dtype_name(y->dtype), cg_dtype_name(x->dtype));
    if (cg_cpu_numel(x) != n) return CG_FAIL(CG_E_SHAPE, "axpy: %lld vs %lld elements", (long long)n, (long long)cg_cpu_numel(x));
    if (y->dtype == CG_F32) {
        float *py = cg__ptr(y);
        const float *px = cg__ptr(x);
        for (int64_t i = 0; i < n; i++) py[i] = (float)((double)py[i] + alpha * (double)px[i]);
    } else if (y->dtype == CG_F64) {
        double *py = cg__ptr(y);
        const double *px = cg__ptr(x);
        for (int64_t i = 0; i < n; i++) py[i] += alpha * px[i];
    } else {
        return CG_CPU_BAD_DTYPE("axpy", y->dtype);
    }
    return CG_OK;
}

static cg_status scal_cpu(cg_tensor *y, double alpha) {
    int64_t n = cg_cpu_numel(y);
    if (y->dtype == CG_F32) {
        float *py = cg__ptr(y);
        for (int64_t i = 0; i < n; i++) py[i] = (float)((double)py[i] * alpha);
    } else if (y->dtype == CG_F64) {
        double *py = cg__ptr(y);
        for (int64_t i = 0; i < n; i++) py[i] *= alpha;
    } else {
        return CG_CPU_BAD_DTYPE("scale_", y->dtype);
    }
    return CG_OK;
}

/* ---- contiguous: the one kernel that reads a strided input ---- */

cg_status cg_contiguous_fwd_cpu(const cg_op_call *c) { return cg_copy_strided_cpu(c->out, c->in[0]); }

cg_status cg_contiguous_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    (void)c;
    if (!gin[0]) return CG_OK;
    return cg_copy_strided_cpu(gin[0], gout);
}

/* ---- the tables ---- */

static const cg_fwd_fn cpu_forward[CG_OP_COUNT] = {
    [CG_OP_MATMUL] = cg_matmul_fwd_cpu,
    [CG_OP_LINEAR] = cg_linear_fwd_cpu,
    [CG_OP_ADD] = cg_binary_fwd_cpu,
    [CG_OP_SUB] = cg_binary_fwd_cpu,
    [CG_OP_MUL] = cg_binary_fwd_cpu,
    [CG_OP_DIV] = cg_binary_fwd_cpu,
    [CG_OP_SCALE] = cg_scale_fwd_cpu,
    [CG_OP_SUM] = cg_reduce_fwd_cpu,
    [CG_OP_MEAN] = cg_reduce_fwd_cpu,
    [CG_OP_EXP] = cg_unary_fwd_cpu,
    [CG_OP_LOG] = cg_unary_fwd_cpu,
    [CG_OP_SQRT] = cg_unary_fwd_cpu,
    [CG_OP_SIGMOID] = cg_unary_fwd_cpu,
    [CG_OP_TANH] = cg_unary_fwd_cpu,
    [CG_OP_RELU] = cg_unary_fwd_cpu,
    [CG_OP_LEAKY_RELU] = cg_unary_fwd_cpu,
    [CG_OP_GELU] = cg_unary_fwd_cpu,
    [CG_OP_SOFTMAX] = cg_softmax_fwd_cpu,
    [CG_OP_LOG_SOFTMAX] = cg_softmax_fwd_cpu,
    [CG_OP_LAYERNORM] = cg_layernorm_fwd_cpu,
    [CG_OP_BATCHNORM] = cg_batchnorm_fwd_cpu,
    [CG_OP_DROPOUT] = cg_dropout_fwd_cpu,
    [CG_OP_MSE] = cg_mse_fwd_cpu,
    [CG_OP_BCE_LOGITS] = cg_bce_logits_fwd_cpu,
    [CG_OP_SOFTMAX_CE] = cg_softmax_ce_fwd_cpu,
    /* RESHAPE, TRANSPOSE, SLICE_ROWS are views: no kernel */
    [CG_OP_CONTIGUOUS] = cg_contiguous_fwd_cpu,
};

static const cg_bwd_fn cpu_backward[CG_OP_COUNT] = {
    [CG_OP_MATMUL] = cg_matmul_bwd_cpu,
    [CG_OP_LINEAR] = cg_linear_bwd_cpu,
    [CG_OP_ADD] = cg_binary_bwd_cpu,
    [CG_OP_SUB] = cg_binary_bwd_cpu,
    [CG_OP_MUL] = cg_binary_bwd_cpu,
    [CG_OP_DIV] = cg_binary_bwd_cpu,
    [CG_OP_SCALE] = cg_scale_bwd_cpu,
    [CG_OP_SUM] = cg_reduce_bwd_cpu,
    [CG_OP_MEAN] = cg_reduce_bwd_cpu,
    [CG_OP_EXP] = cg_unary_bwd_cpu,
    [CG_OP_LOG] = cg_unary_bwd_cpu,
    [CG_OP_SQRT] = cg_unary_bwd_cpu,
    [CG_OP_SIGMOID] = cg_unary_bwd_cpu,
    [CG_OP_TANH] = cg_unary_bwd_cpu,
    [CG_OP_RELU] = cg_unary_bwd_cpu,
    [CG_OP_LEAKY_RELU] = cg_unary_bwd_cpu,
    [CG_OP_GELU] = cg_unary_bwd_cpu,
    [CG_OP_SOFTMAX] = cg_softmax_bwd_cpu,
    [CG_OP_LOG_SOFTMAX] = cg_softmax_bwd_cpu,
    [CG_OP_LAYERNORM] = cg_layernorm_bwd_cpu,
    [CG_OP_BATCHNORM] = cg_batchnorm_bwd_cpu,
    [CG_OP_DROPOUT] = cg_dropout_bwd_cpu,
    [CG_OP_MSE] = cg_mse_bwd_cpu,
    [CG_OP_BCE_LOGITS] = cg_bce_logits_bwd_cpu,
    [CG_OP_SOFTMAX_CE] = cg_softmax_ce_bwd_cpu,
    [CG_OP_CONTIGUOUS] = cg_contiguous_bwd_cpu,
};

const cg_backend cg_cpu_backend = {
    .name = "cpu",
    .type = CG_DEVICE_CPU,
    .alloc = alloc_cpu,
    .free = free_cpu,
    .memcpy = memcpy_cpu,
    .copy_strided = cg_copy_strided_cpu,
    .fill = cg_fill_cpu,
    .rand = rand_cpu,
    .axpy = axpy_cpu,
    .scal = scal_cpu,
    .reduce_to = cg_reduce_to_cpu,
    .copy_gated = cg_copy_gated_cpu,
    .count_correct = cg_count_correct_cpu,
    .optim = cg_optim_cpu,
    .sync = sync_cpu,
    .forward = cpu_forward,
    .backward = cpu_backward,
};
