/* CPU inverted dropout. Element i is kept iff cg_dropout_keep(seed, offset, i, p) (the
 * Philox stream of philox.h, so every backend draws the same mask); kept elements are
 * scaled by 1/(1-p). Backward regenerates the mask instead of storing one. */
#include "cpu_kernels.h"
#include "philox.h"

/* y[i] = keep(i) ? x[i] * scale : 0, one Philox block per 4 elements */
#define DROPOUT_LOOP(T, x, y)                                                                                 \
    do {                                                                                                      \
        float pf = (float)p->p;                                                                               \
        T sc = (T)(p->p < 1.0 ? 1.0 / (1.0 - p->p) : 0.0);                                                    \
        for (int64_t i0 = 0; i0 < n; i0 += 4) {                                                               \
            cg_philox4 r = cg_philox4x32_10(p->offset + (uint64_t)i0 / 4, p->seed);                           \
            for (int j = 0; j < 4 && i0 + j < n; j++)                                                         \
                (y)[i0 + j] = (cg_u01(r.v[j]) >= pf) ? (x)[i0 + j] * sc : (T)0;                               \
        }                                                                                                     \
    } while (0)

static cg_status dropout_apply(const cg_op_params *p, const cg_tensor *src, cg_tensor *dst) {
    int64_t n = cg_cpu_numel(dst);
    if (p->p < 0.0 || p->p > 1.0) return CG_FAIL(CG_E_INVALID, "dropout: p = %g is outside [0, 1]", p->p);
    switch (dst->dtype) {
    case CG_F32: {
        const float *x = cg__ptr(src);
        float *y = cg__ptr(dst);
        DROPOUT_LOOP(float, x, y);
        return CG_OK;
    }
    case CG_F64: {
        const double *x = cg__ptr(src);
        double *y = cg__ptr(dst);
        DROPOUT_LOOP(double, x, y);
        return CG_OK;
    }
    default: return CG_CPU_BAD_DTYPE("dropout", dst->dtype);
    }
}
#undef DROPOUT_LOOP

cg_status cg_dropout_fwd_cpu(const cg_op_call *c) { return dropout_apply(c->p, c->in[0], c->out); }

/* The same mask and scale applied to the output gradient. */
cg_status cg_dropout_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    return dropout_apply(c->p, gout, gin[0]);
}
