/* cuDNN, emulated on the host (tests/cuda_emu/README.md): 4-d NCHW tensor descriptors
 * (fully packed), softmax forward/backward in INSTANCE mode (over C*H*W per n; ACCURATE,
 * FAST and LOG), and the legacy BatchNorm calls in PER_ACTIVATION mode (per (c, h, w),
 * over n), with the documented semantics, in double:
 *   forward training: y = alpha (scale (x - mean) * invstd + bias) + beta y, invstd =
 *     1 / sqrt(var_biased + eps); running = (1 - factor) running + factor batch, the
 *     variance unbiased (n / (n - 1)); saveMean / saveInvVariance when not NULL;
 *   inference: the same with the running statistics (estimatedMean / Variance);
 *   backward: dx, dscale, dbias from x, dy and the saved mean / invstd (recomputed when
 *     NULL), with the alpha/beta pairs for data and parameter gradients.
 * Every pointer must lie in device memory; CUDNN_BN_MIN_EPSILON is enforced. Arguments are
 * checked at the call, the work runs when the handle's stream runs (emu_stream.cpp). */
#include <cudnn.h>
#include <math.h>
#include <string.h>

#include <vector>

#include "emu_internal.h"

namespace {

struct handle_obj {
    int magic;
    cudaStream_t stream = 0;
};

struct tensor_obj {
    cudnnDataType_t type = CUDNN_DATA_FLOAT;
    int n = 0, c = 0, h = 0, w = 0;
    bool set = false;
    size_t es() const { return type == CUDNN_DATA_DOUBLE ? 8 : 4; }
    int64_t count() const { return (int64_t)n * c * h * w; }
};

double get(const void *p, cudnnDataType_t t, int64_t i) {
    return t == CUDNN_DATA_DOUBLE ? ((const double *)p)[i] : (double)((const float *)p)[i];
}
void put(void *p, cudnnDataType_t t, int64_t i, double v) {
    if (t == CUDNN_DATA_DOUBLE) ((double *)p)[i] = v;
    else ((float *)p)[i] = (float)v;
}
/* alpha/beta are float for float tensors and double for double ones */
double scalar(const void *p, cudnnDataType_t t) {
    return t == CUDNN_DATA_DOUBLE ? *(const double *)p : (double)*(const float *)p;
}
/* y = alpha v + beta y, and y is not read when beta is 0 (as cuDNN documents) */
void blend(void *y, cudnnDataType_t t, int64_t i, double alpha, double beta, double v) {
    put(y, t, i, beta == 0 ? alpha * v : alpha * v + beta * get(y, t, i));
}

bool on_device(const void *p, int64_t count, size_t es) { return cgemu::is_device_range(p, (size_t)count * es); }

bool same_shape(const tensor_obj *a, const tensor_obj *b) {
    return a->set && b->set && a->n == b->n && a->c == b->c && a->h == b->h && a->w == b->w && a->type == b->type;
}

/* PER_ACTIVATION: the parameter descriptor is 1 x C x H x W, float for float data */
bool bn_param_ok(const tensor_obj *x, const tensor_obj *p) {
    return p->set && p->n == 1 && p->c == x->c && p->h == x->h && p->w == x->w;
}

} // namespace

extern "C" {

cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    cgemu::touch_context(); /* a library handle needs the device's context */
    *h = (cudnnHandle_t) new handle_obj{3};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
    delete (handle_obj *)h;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
    ((handle_obj *)h)->stream = s;
    return CUDNN_STATUS_SUCCESS;
}
size_t cudnnGetVersion(void) { return CUDNN_VERSION; }
const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    default: return "CUDNN_STATUS_INTERNAL_ERROR";
    }
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *t) {
    *t = (cudnnTensorDescriptor_t) new tensor_obj;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t t) {
    delete (tensor_obj *)t;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t t, cudnnTensorFormat_t f, cudnnDataType_t ty, int n,
                                         int c, int h, int w) {
    if (f != CUDNN_TENSOR_NCHW || n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (ty != CUDNN_DATA_FLOAT && ty != CUDNN_DATA_DOUBLE) return CUDNN_STATUS_NOT_SUPPORTED;
    if ((int64_t)n * c * h * w > 0x7fffffff) return CUDNN_STATUS_NOT_SUPPORTED;
    tensor_obj *o = (tensor_obj *)t;
    o->type = ty, o->n = n, o->c = c, o->h = h, o->w = w, o->set = true;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDeriveBNTensorDescriptor(cudnnTensorDescriptor_t p, const cudnnTensorDescriptor_t x,
                                            cudnnBatchNormMode_t mode) {
    const tensor_obj *xo = (const tensor_obj *)x;
    if (!xo->set || mode != CUDNN_BATCHNORM_PER_ACTIVATION) return CUDNN_STATUS_NOT_SUPPORTED;
    tensor_obj *o = (tensor_obj *)p;
    *o = *xo;
    o->n = 1;
    o->type = xo->type == CUDNN_DATA_DOUBLE ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    return CUDNN_STATUS_SUCCESS;
}

/* ---------------------------------------------------------------- softmax */

cudnnStatus_t cudnnSoftmaxForward(cudnnHandle_t h, cudnnSoftmaxAlgorithm_t algo, cudnnSoftmaxMode_t mode,
                                  const void *alpha, const cudnnTensorDescriptor_t xd, const void *x, const void *beta,
                                  const cudnnTensorDescriptor_t yd, void *y) {
    const tensor_obj *xo = (const tensor_obj *)xd, *yo = (const tensor_obj *)yd;
    if (mode != CUDNN_SOFTMAX_MODE_INSTANCE) return CUDNN_STATUS_NOT_SUPPORTED;
    if (!same_shape(xo, yo)) return CUDNN_STATUS_BAD_PARAM;
    if (!on_device(x, xo->count(), xo->es()) || !on_device(y, yo->count(), yo->es())) return CUDNN_STATUS_EXECUTION_FAILED;
    int64_t d = (int64_t)xo->c * xo->h * xo->w, rows = xo->n;
    cudnnDataType_t t = xo->type;
    double a = scalar(alpha, t), b = scalar(beta, t);
    cgemu::enqueue(((handle_obj *)h)->stream, [=] {
        std::vector<double> out((size_t)d);
        for (int64_t r = 0; r < rows; r++) {
            double m = -INFINITY;
            for (int64_t j = 0; j < d; j++) {
                double v = get(x, t, r * d + j);
                m = (v > m || v != v) ? v : m;
            }
            if (algo == CUDNN_SOFTMAX_FAST) m = 0;
            double s = 0;
            for (int64_t j = 0; j < d; j++) s += exp(get(x, t, r * d + j) - m);
            for (int64_t j = 0; j < d; j++) {
                double v = get(x, t, r * d + j) - m;
                out[(size_t)j] = algo == CUDNN_SOFTMAX_LOG ? v - log(s) : exp(v) / s;
            }
            for (int64_t j = 0; j < d; j++) blend(y, t, r * d + j, a, b, out[(size_t)j]);
        }
    });
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSoftmaxBackward(cudnnHandle_t h, cudnnSoftmaxAlgorithm_t algo, cudnnSoftmaxMode_t mode,
                                   const void *alpha, const cudnnTensorDescriptor_t yd, const void *y,
                                   const cudnnTensorDescriptor_t dyd, const void *dy, const void *beta,
                                   const cudnnTensorDescriptor_t dxd, void *dx) {
    const tensor_obj *yo = (const tensor_obj *)yd, *go = (const tensor_obj *)dyd, *xo = (const tensor_obj *)dxd;
    if (mode != CUDNN_SOFTMAX_MODE_INSTANCE) return CUDNN_STATUS_NOT_SUPPORTED;
    if (!same_shape(yo, go) || !same_shape(yo, xo)) return CUDNN_STATUS_BAD_PARAM;
    int64_t n = yo->count();
    if (!on_device(y, n, yo->es()) || !on_device(dy, n, yo->es()) || !on_device(dx, n, yo->es()))
        return CUDNN_STATUS_EXECUTION_FAILED;
    int64_t d = (int64_t)yo->c * yo->h * yo->w, rows = yo->n;
    double a = scalar(alpha, yo->type), b = scalar(beta, yo->type);
    cudnnDataType_t t = yo->type;
    cgemu::enqueue(((handle_obj *)h)->stream, [=] {
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t j = 0; j < d; j++)
                s += algo == CUDNN_SOFTMAX_LOG ? get(dy, t, r * d + j) : get(dy, t, r * d + j) * get(y, t, r * d + j);
            for (int64_t j = 0; j < d; j++) {
                double yv = get(y, t, r * d + j), gv = get(dy, t, r * d + j);
                blend(dx, t, r * d + j, a, b, algo == CUDNN_SOFTMAX_LOG ? gv - exp(yv) * s : yv * (gv - s));
            }
        }
    });
    return CUDNN_STATUS_SUCCESS;
}

/* ---------------------------------------------------------------- BatchNorm */

namespace {

struct bn_geom {
    int64_t n, f; /* f = C * H * W features, each normalised over n */
    cudnnDataType_t t, pt;
};

cudnnStatus_t bn_check(cudnnBatchNormMode_t mode, const tensor_obj *x, const tensor_obj *y, const tensor_obj *p,
                       double eps, bn_geom *g) {
    if (mode != CUDNN_BATCHNORM_PER_ACTIVATION) return CUDNN_STATUS_NOT_SUPPORTED;
    if (!same_shape(x, y) || !bn_param_ok(x, p) || eps < CUDNN_BN_MIN_EPSILON) return CUDNN_STATUS_BAD_PARAM;
    g->n = x->n, g->f = (int64_t)x->c * x->h * x->w, g->t = x->type, g->pt = p->type;
    return CUDNN_STATUS_SUCCESS;
}

void stats(const bn_geom &g, const void *x, int64_t j, double *mean, double *var) {
    double s = 0, q = 0;
    for (int64_t i = 0; i < g.n; i++) s += get(x, g.t, i * g.f + j);
    *mean = s / g.n;
    for (int64_t i = 0; i < g.n; i++) {
        double d = get(x, g.t, i * g.f + j) - *mean;
        q += d * d;
    }
    *var = q / g.n;
}

} // namespace

cudnnStatus_t cudnnBatchNormalizationForwardTraining(cudnnHandle_t h, cudnnBatchNormMode_t mode, const void *alpha,
                                                     const void *beta, const cudnnTensorDescriptor_t xd, const void *x,
                                                     const cudnnTensorDescriptor_t yd, void *y,
                                                     const cudnnTensorDescriptor_t pd, const void *scale,
                                                     const void *bias, double factor, void *run_mean, void *run_var,
                                                     double eps, void *save_mean, void *save_inv) {
    bn_geom g;
    cudnnStatus_t st = bn_check(mode, (const tensor_obj *)xd, (const tensor_obj *)yd, (const tensor_obj *)pd, eps, &g);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if ((run_mean == nullptr) != (run_var == nullptr) || (save_mean == nullptr) != (save_inv == nullptr))
        return CUDNN_STATUS_BAD_PARAM;
    size_t pes = g.pt == CUDNN_DATA_DOUBLE ? 8 : 4, es = g.t == CUDNN_DATA_DOUBLE ? 8 : 4;
    if (!on_device(x, g.n * g.f, es) || !on_device(y, g.n * g.f, es) || !on_device(scale, g.f, pes) ||
        !on_device(bias, g.f, pes) || (run_mean && (!on_device(run_mean, g.f, pes) || !on_device(run_var, g.f, pes))) ||
        (save_mean && (!on_device(save_mean, g.f, pes) || !on_device(save_inv, g.f, pes))))
        return CUDNN_STATUS_EXECUTION_FAILED;
    double a = scalar(alpha, g.t), b = scalar(beta, g.t);
    cgemu::enqueue(((handle_obj *)h)->stream, [=] {
        for (int64_t j = 0; j < g.f; j++) {
            double mean, var;
            stats(g, x, j, &mean, &var);
            double inv = 1.0 / sqrt(var + eps), sc = get(scale, g.pt, j), bi = get(bias, g.pt, j);
            for (int64_t i = 0; i < g.n; i++)
                blend(y, g.t, i * g.f + j, a, b, sc * (get(x, g.t, i * g.f + j) - mean) * inv + bi);
            if (run_mean) {
                double unbiased = g.n > 1 ? var * g.n / (g.n - 1) : var;
                put(run_mean, g.pt, j, (1 - factor) * get(run_mean, g.pt, j) + factor * mean);
                put(run_var, g.pt, j, (1 - factor) * get(run_var, g.pt, j) + factor * unbiased);
            }
            if (save_mean) put(save_mean, g.pt, j, mean), put(save_inv, g.pt, j, inv);
        }
    });
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBatchNormalizationForwardInference(cudnnHandle_t h, cudnnBatchNormMode_t mode, const void *alpha,
                                                      const void *beta, const cudnnTensorDescriptor_t xd,
                                                      const void *x, const cudnnTensorDescriptor_t yd, void *y,
                                                      const cudnnTensorDescriptor_t pd, const void *scale,
                                                      const void *bias, const void *est_mean, const void *est_var,
                                                      double eps) {
    bn_geom g;
    cudnnStatus_t st = bn_check(mode, (const tensor_obj *)xd, (const tensor_obj *)yd, (const tensor_obj *)pd, eps, &g);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    size_t pes = g.pt == CUDNN_DATA_DOUBLE ? 8 : 4, es = g.t == CUDNN_DATA_DOUBLE ? 8 : 4;
    if (!on_device(x, g.n * g.f, es) || !on_device(y, g.n * g.f, es) || !on_device(scale, g.f, pes) ||
        !on_device(bias, g.f, pes) || !on_device(est_mean, g.f, pes) || !on_device(est_var, g.f, pes))
        return CUDNN_STATUS_EXECUTION_FAILED;
    double a = scalar(alpha, g.t), b = scalar(beta, g.t);
    cgemu::enqueue(((handle_obj *)h)->stream, [=] {
        for (int64_t j = 0; j < g.f; j++) {
            double mean = get(est_mean, g.pt, j), inv = 1.0 / sqrt(get(est_var, g.pt, j) + eps);
            double sc = get(scale, g.pt, j), bi = get(bias, g.pt, j);
            for (int64_t i = 0; i < g.n; i++)
                blend(y, g.t, i * g.f + j, a, b, sc * (get(x, g.t, i * g.f + j) - mean) * inv + bi);
        }
    });
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBatchNormalizationBackward(cudnnHandle_t h, cudnnBatchNormMode_t mode, const void *alpha_data,
                                              const void *beta_data, const void *alpha_param, const void *beta_param,
                                              const cudnnTensorDescriptor_t xd, const void *x,
                                              const cudnnTensorDescriptor_t dyd, const void *dy,
                                              const cudnnTensorDescriptor_t dxd, void *dx,
                                              const cudnnTensorDescriptor_t pd, const void *scale, void *dscale,
                                              void *dbias, double eps, const void *saved_mean,
                                              const void *saved_inv) {
    bn_geom g;
    cudnnStatus_t st = bn_check(mode, (const tensor_obj *)xd, (const tensor_obj *)dxd, (const tensor_obj *)pd, eps, &g);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!same_shape((const tensor_obj *)xd, (const tensor_obj *)dyd) || (saved_mean == nullptr) != (saved_inv == nullptr))
        return CUDNN_STATUS_BAD_PARAM;
    size_t pes = g.pt == CUDNN_DATA_DOUBLE ? 8 : 4, es = g.t == CUDNN_DATA_DOUBLE ? 8 : 4;
    if (!on_device(x, g.n * g.f, es) || !on_device(dy, g.n * g.f, es) || !on_device(dx, g.n * g.f, es) ||
        !on_device(scale, g.f, pes) || !on_device(dscale, g.f, pes) || !on_device(dbias, g.f, pes) ||
        (saved_mean && (!on_device(saved_mean, g.f, pes) || !on_device(saved_inv, g.f, pes))))
        return CUDNN_STATUS_EXECUTION_FAILED;
    double ad = scalar(alpha_data, g.t), bd = scalar(beta_data, g.t);
    double ap = scalar(alpha_param, g.t), bp = scalar(beta_param, g.t);
    cgemu::enqueue(((handle_obj *)h)->stream, [=] {
        for (int64_t j = 0; j < g.f; j++) {
            double mean, inv;
            if (saved_mean) {
                mean = get(saved_mean, g.pt, j), inv = get(saved_inv, g.pt, j);
            } else {
                double var;
                stats(g, x, j, &mean, &var);
                inv = 1.0 / sqrt(var + eps);
            }
            double sdy = 0, sdyx = 0;
            for (int64_t i = 0; i < g.n; i++) {
                double gv = get(dy, g.t, i * g.f + j), xh = (get(x, g.t, i * g.f + j) - mean) * inv;
                sdy += gv, sdyx += gv * xh;
            }
            double sc = get(scale, g.pt, j);
            for (int64_t i = 0; i < g.n; i++) {
                double gv = get(dy, g.t, i * g.f + j), xh = (get(x, g.t, i * g.f + j) - mean) * inv;
                blend(dx, g.t, i * g.f + j, ad, bd, sc * inv * (gv - sdy / g.n - xh * sdyx / g.n));
            }
            put(dscale, g.pt, j, bp == 0 ? ap * sdyx : ap * sdyx + bp * get(dscale, g.pt, j));
            put(dbias, g.pt, j, bp == 0 ? ap * sdy : ap * sdy + bp * get(dbias, g.pt, j));
        }
    });
    return CUDNN_STATUS_SUCCESS;
}

} // extern "C"
