/* CPU dtype conversion: strided copies between any two dtypes, and fill. The element
 * rules (rounding, saturation) live in src/dtype_convert.h, shared with the CUDA kernels. */
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"
#include "dtype_convert.h"

/* ---- strided copy ---- */


cg_status cg_copy_strided_cpu(cg_tensor *dst, const cg_tensor *src) {
    int64_t n = cg_cpu_numel(dst);
    if (n != cg_cpu_numel(src) || dst->ndim != src->ndim) {
        char a[96], b[96];
        return CG_FAIL(CG_E_SHAPE, "copy: shapes %s and %s differ", cg__shape_str(dst->shape, dst->ndim, a, sizeof a),
                       cg__shape_str(src->shape, src->ndim, b, sizeof b));
    }
    for (int d = 0; d < dst->ndim; d++)
        if (dst->shape[d] != src->shape[d]) {
            char a[96], b[96];
            return CG_FAIL(CG_E_SHAPE, "copy: shapes %s and %s differ",
                           cg__shape_str(dst->shape, dst->ndim, a, sizeof a),
                           cg__shape_str(src->shape, src->ndim, b, sizeof b));
        }
    if (cg_dtype_size(dst->dtype) == 0 || cg_dtype_size(src->dtype) == 0)
        return CG_FAIL(CG_E_DTYPE, "copy: invalid dtype %d -> %d", (int)src->dtype, (int)dst->dtype);
    if (n == 0) return CG_OK;
    size_t ds = cg_dtype_size(dst->dtype), ss = cg_dtype_size(src->dtype);
    char *dp = cg__ptr(dst);
    const char *sp = cg__ptr(src);
    int same = dst->dtype == src->dtype;
    if (same && cg_tensor_is_contiguous(dst) && cg_tensor_is_contiguous(src)) {
        memmove(dp, sp, (size_t)n * ds);
        return CG_OK;
    }
    int nd = dst->ndim;
    int64_t inner = nd ? dst->shape[nd - 1] : 1;
    int64_t dstep = nd ? dst->strides[nd - 1] : 0, sstep = nd ? src->strides[nd - 1] : 0;
    int64_t idx[CG_MAX_DIMS] = {0};
    int64_t doff = 0, soff = 0;
    for (int64_t base = 0; base < n; base += inner) {
        for (int64_t k = 0; k < inner; k++) {
            char *d = dp + (size_t)(doff + k * dstep) * ds;
            const char *s = sp + (size_t)(soff + k * sstep) * ss;
            if (same) memcpy(d, s, ds);
            else cg_convert_one(d, dst->dtype, s, src->dtype);
        }
        for (int d = nd - 2; d >= 0; d--) { /* odometer over the outer axes */
            idx[d]++;
            doff += dst->strides[d];
            soff += src->strides[d];
            if (idx[d] < dst->shape[d]) break;
            doff -= dst->strides[d] * dst->shape[d];
            soff -= src->strides[d] * src->shape[d];
            idx[d] = 0;
        }
    }
    return CG_OK;
}

/* ---- fill ---- */

cg_status cg_fill_cpu(cg_tensor *t, double value) {
    size_t es = cg_dtype_size(t->dtype);
    if (es == 0) return CG_FAIL(CG_E_DTYPE, "fill: invalid dtype %d", (int)t->dtype);
    int64_t n = cg_cpu_numel(t);
    if (n == 0) return CG_OK;
    char *p = cg__ptr(t);
    switch (t->dtype) {
    case CG_F32: {
        float v = (float)value, *q = (float *)p;
        for (int64_t i = 0; i < n; i++) q[i] = v;
        return CG_OK;
    }
    case CG_F64: {
        double *q = (double *)p;
        for (int64_t i = 0; i < n; i++) q[i] = value;
        return CG_OK;
    }
    default: {
        char one[8];
        cg_store_f(one, t->dtype, value);
        for (int64_t i = 0; i < n; i++) memcpy(p + (size_t)i * es, one, es);
        return CG_OK;
    }
    }
}
