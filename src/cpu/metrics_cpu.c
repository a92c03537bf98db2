/* CPU accuracy count and scalar reductions into an f64 slot: the device-side bookkeeping of
 * the training loop (see reduce_to / count_correct in backend.h). On the CPU "device-side"
 * is plain memory, but the loop is the same code on both backends. */
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"
#include "dtype_convert.h"

cg_status cg_reduce_to_cpu(cg_tensor *dst, const cg_tensor *x, double alpha, int square, int accumulate) {
    int64_t n = cg_cpu_numel(x);
    double s = 0.0;
    if (x->dtype == CG_F32) {
        const float *p = cg__ptr(x);
        if (square)
            for (int64_t i = 0; i < n; i++) s += (double)p[i] * (double)p[i];
        else
            for (int64_t i = 0; i < n; i++) s += (double)p[i];
    } else if (x->dtype == CG_F64) {
        const double *p = cg__ptr(x);
        if (square)
            for (int64_t i = 0; i < n; i++) s += p[i] * p[i];
        else
            for (int64_t i = 0; i < n; i++) s += p[i];
    } else {
        return CG_CPU_BAD_DTYPE("reduce", x->dtype);
    }
    double *d = cg__ptr(dst);
    double v = alpha * s;
    *d = accumulate ? *d + v : v;
    return CG_OK;
}

/* The first maximum of a row; a NaN in column 0 wins, later NaNs never compare greater. */
#define ROW_ARGMAX(T)                                                                                         \
    static int64_t argmax_##T(const T *row, int64_t c) {                                                      \
        int64_t best = 0;                                                                                     \
        for (int64_t j = 1; j < c; j++)                                                                       \
            if (row[j] > row[best]) best = j;                                                                 \
        return best;                                                                                          \
    }
ROW_ARGMAX(float)
ROW_ARGMAX(double)

cg_status cg_count_correct_cpu(cg_tensor *dst, const cg_tensor *pred, const cg_tensor *target, int accumulate) {
    int64_t n = pred->ndim ? pred->shape[0] : 1;
    int64_t c = pred->ndim == 2 ? pred->shape[1] : 1;
    const char *tp = cg__ptr(target);
    size_t ts = cg_dtype_size(target->dtype);
    int f64 = pred->dtype == CG_F64;
    if (!f64 && pred->dtype != CG_F32) return CG_CPU_BAD_DTYPE("accuracy", pred->dtype);
    int64_t ok = 0;
    for (int64_t i = 0; i < n; i++) {
        double t = cg_load_f(tp + (size_t)i * ts, (int)target->dtype);
        if (c == 1) {
            double p = f64 ? ((const double *)cg__ptr(pred))[i] : (double)((const float *)cg__ptr(pred))[i];
            ok += (p > 0) == (t > 0.5);
        } else {
            int64_t best = f64 ? argmax_double((const double *)cg__ptr(pred) + i * c, c)
                               : argmax_float((const float *)cg__ptr(pred) + i * c, c);
            ok += (double)best == t;
        }
    }
    double *d = cg__ptr(dst);
    *d = accumulate ? *d + (double)ok : (double)ok;
    return CG_OK;
}

cg_status cg_copy_gated_cpu(cg_tensor *dst, const cg_tensor *src, const cg_tensor *gate) {
    if (!isfinite(*(const double *)cg__ptr(gate))) return CG_OK;
    memmove(cg__ptr(dst), cg__ptr(src), cg_tensor_nbytes(src));
    return CG_OK;
}
