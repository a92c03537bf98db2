/* Per-feature standardisation over dim 0, computed in double on the host (two passes:
 * mean, then the mean squared deviation) so f32 data does not lose precision. */
#include <math.h>
#include <stdlib.h>

#include "../io/io_internal.h"
#include "cgrad/data.h"

/* x's values as doubles (malloc'd), n rows of f features. */
static cg_status host_doubles(const cg_tensor *x, const char *fn, double **out) {
    int64_t numel = cg_tensor_numel(x);
    size_t nb = cg_tensor_nbytes(x);
    void *raw = malloc(nb ? nb : 1);
    double *d = malloc((size_t)(numel ? numel : 1) * sizeof *d);
    if (!raw || !d) {
        free(raw);
        free(d);
        return CG_FAIL(CG_E_OOM, "%s: out of memory", fn);
    }
    cg_status s = cg_tensor_to_host(x, raw, nb);
    if (s != CG_OK) {
        free(raw);
        free(d);
        return s;
    }
    for (int64_t i = 0; i < numel; i++) d[i] = x->dtype == CG_F32 ? ((float *)raw)[i] : ((double *)raw)[i];
    free(raw);
    *out = d;
    return CG_OK;
}

static cg_status from_doubles(const double *d, const int64_t *shape, int ndim, cg_dtype dt, cg_device dev,
                              cg_tensor **out) {
    cg_tensor *t;
    CG_TRY(cg__tensor_new(shape, ndim, dt, CG_CPU, &t));
    int64_t n = cg__numel(shape, ndim);
    void *p = cg_tensor_data(t);
    for (int64_t i = 0; i < n; i++) {
        if (dt == CG_F32) ((float *)p)[i] = (float)d[i];
        else ((double *)p)[i] = d[i];
    }
    cg_status s = cg__move_fresh(&t, dev);
    if (s != CG_OK) return s;
    *out = t;
    return CG_OK;
}

cg_status cg_standardize_fit(const cg_tensor *x, cg_tensor **mean, cg_tensor **std) {
    const char *fn = "cg_standardize_fit";
    CG_ARG_NOT_NULL(x, fn);
    CG_ARG_NOT_NULL(mean, fn);
    CG_ARG_NOT_NULL(std, fn);
    if (x->dtype != CG_F32 && x->dtype != CG_F64)
        return CG_FAIL(CG_E_DTYPE, "%s: x is %s; need f32 or f64 (cast first)", fn, cg_dtype_name(x->dtype));
    if (x->ndim < 1 || x->shape[0] < 1)
        return CG_FAIL(CG_E_SHAPE, "%s: x needs at least one sample along dim 0", fn);
    int64_t n = x->shape[0], f = cg_tensor_numel(x) / n;
    double *d;
    CG_TRY(host_doubles(x, fn, &d));
    double *m = calloc((size_t)(f ? f : 1), sizeof *m), *sd = calloc((size_t)(f ? f : 1), sizeof *sd);
    cg_status s = CG_OK;
    if (!m || !sd) s = CG_FAIL(CG_E_OOM, "%s: out of memory", fn);
    for (int64_t i = 0; i < n * f && s == CG_OK; i++)
        if (!isfinite(d[i]))
            s = CG_FAIL(CG_E_NUMERIC, "%s: x holds %s at sample %lld, feature %lld", fn, isnan(d[i]) ? "NaN" : "Inf",
                        (long long)(i / f), (long long)(i % f));
    if (s == CG_OK) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < f; j++) m[j] += d[i * f + j];
        for (int64_t j = 0; j < f; j++) m[j] /= (double)n;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < f; j++) {
                double e = d[i * f + j] - m[j];
                sd[j] += e * e;
            }
        for (int64_t j = 0; j < f; j++) {
            sd[j] = sqrt(sd[j] / (double)n);
            if (!(sd[j] > 0)) sd[j] = 1.0; /* constant feature */
        }
    }
    cg_tensor *tm = NULL, *ts = NULL;
    if (s == CG_OK) s = from_doubles(m, x->shape + 1, x->ndim - 1, x->dtype, x->st->dev, &tm);
    if (s == CG_OK) s = from_doubles(sd, x->shape + 1, x->ndim - 1, x->dtype, x->st->dev, &ts);
    free(d);
    free(m);
    free(sd);
    if (s != CG_OK) {
        cg_tensor_release(tm);
        return s;
    }
    *mean = cg__autorelease(tm);
    *std = cg__autorelease(ts);
    return CG_OK;
}

cg_status cg_standardize_apply(cg_tensor *x, const cg_tensor *mean, const cg_tensor *std) {
    const char *fn = "cg_standardize_apply";
    CG_ARG_NOT_NULL(x, fn);
    CG_ARG_NOT_NULL(mean, fn);
    CG_ARG_NOT_NULL(std, fn);
    if (x->dtype != CG_F32 && x->dtype != CG_F64)
        return CG_FAIL(CG_E_DTYPE, "%s: x is %s; need f32 or f64", fn, cg_dtype_name(x->dtype));
    int ok = x->ndim >= 1 && mean->ndim == x->ndim - 1 && std->ndim == x->ndim - 1;
    for (int i = 1; ok && i < x->ndim; i++) ok = mean->shape[i - 1] == x->shape[i] && std->shape[i - 1] == x->shape[i];
    if (!ok) {
        char a[128], b[128];
        return CG_FAIL(CG_E_SHAPE, "%s: mean %s does not match the features of x %s (x's shape without dim 0)", fn,
                       cg__shape_str(mean->shape, mean->ndim, a, sizeof a), cg__shape_str(x->shape, x->ndim, b, sizeof b));
    }
    if ((mean->dtype != CG_F32 && mean->dtype != CG_F64) || (std->dtype != CG_F32 && std->dtype != CG_F64))
        return CG_FAIL(CG_E_DTYPE, "%s: mean and std must be f32 or f64", fn);
    int64_t n = x->ndim ? x->shape[0] : 0, f = cg_tensor_numel(mean);
    double *d = NULL, *m = NULL, *sd = NULL;
    cg_status s = host_doubles(x, fn, &d);
    if (s == CG_OK) s = host_doubles(mean, fn, &m);
    if (s == CG_OK) s = host_doubles(std, fn, &sd);
    for (int64_t j = 0; j < f && s == CG_OK; j++)
        if (!(sd[j] > 0) || !isfinite(sd[j]))
            s = CG_FAIL(CG_E_NUMERIC, "%s: std of feature %lld is %g; need a positive finite value", fn, (long long)j,
                        sd[j]);
    void *out = NULL;
    if (s == CG_OK) {
        out = malloc(cg_tensor_nbytes(x) ? cg_tensor_nbytes(x) : 1);
        if (!out) s = CG_FAIL(CG_E_OOM, "%s: out of memory", fn);
    }
    if (s == CG_OK) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < f; j++) {
                double v = (d[i * f + j] - m[j]) / sd[j];
                if (x->dtype == CG_F32) ((float *)out)[i * f + j] = (float)v;
                else ((double *)out)[i * f + j] = v;
            }
        s = cg_tensor_copy_from_host(x, out, cg_tensor_nbytes(x));
    }
    free(out);
    free(d);
    free(m);
    free(sd);
    return s;
}
