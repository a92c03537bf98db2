/* cuDNN twins of softmax / log-softmax and BatchNorm, chosen with
 * cg_cuda_set_impl(CG_IMPL_CUDNN) so the two can be measured against each other.
 *
 * Softmax: cudnnSoftmaxForward/Backward, mode INSTANCE over a (rows, d, 1, 1) tensor,
 * algorithm ACCURATE (max-subtracted) or LOG. BatchNorm: the legacy API (still shipped in
 * cuDNN 9, deprecated in favour of the graph API) in PER_ACTIVATION mode over (N, C, 1, 1),
 * which normalises each channel over N like our kernels; running variance is unbiased in
 * cuDNN as in PyTorch, and the saved mean / inverse std are exactly our aux tensors.
 * Returns CG_E_UNSUPPORTED (without a message) for cases cuDNN does not take: the caller
 * then uses its own kernel. cuDNN results are not guaranteed bit-reproducible. */
#include <string.h>

#include "cuda_internal.h"

static int fits_int(int64_t v) { return v >= 0 && v <= 0x7fffffff; }
/* cudnnSetTensor4dDescriptor refuses (NOT_SUPPORTED, an error, not a fallback) a tensor of
 * 2^31 elements or more even when each dimension fits an int: check the product too. */
static int fits_desc(int64_t n, int64_t c) { return fits_int(n) && fits_int(c) && fits_int(n * c); }

typedef struct desc2 {
    cudnnTensorDescriptor_t x, p;
} desc2;

static void desc_free(desc2 *d) {
    if (d->x) cudnnDestroyTensorDescriptor(d->x);
    if (d->p) cudnnDestroyTensorDescriptor(d->p);
}

static cg_status nchw(cudnnTensorDescriptor_t *t, cudnnDataType_t ty, int64_t n, int64_t c) {
    CG_TRY(CG_CUDNN_CALL(cudnnCreateTensorDescriptor(t)));
    return CG_CUDNN_CALL(cudnnSetTensor4dDescriptor(*t, CUDNN_TENSOR_NCHW, ty, (int)n, (int)c, 1, 1));
}

/* Forward (g == NULL: out = softmax(y_or_x)) or backward (out = dx from y and g). */
static cg_status softmax_call(cg_cuda_ctx *ctx, cg_dtype dt, int logsm, int64_t rows, int64_t d, const void *y_or_x,
                              const void *g, void *out) {
    if (!ctx->dnn || (dt != CG_F32 && dt != CG_F64) || !fits_desc(rows, d) || rows == 0 || d == 0)
        return CG_E_UNSUPPORTED;
    static const float onef = 1.0f, zerof = 0.0f;
    static const double oned = 1.0, zerod = 0.0;
    const void *one = dt == CG_F64 ? (const void *)&oned : (const void *)&onef;
    const void *zero = dt == CG_F64 ? (const void *)&zerod : (const void *)&zerof;
    cudnnSoftmaxAlgorithm_t algo = logsm ? CUDNN_SOFTMAX_LOG : CUDNN_SOFTMAX_ACCURATE;
    desc2 ds = {0};
    cg_status st = nchw(&ds.x, dt == CG_F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT, rows, d);
    if (st == CG_OK) {
        pthread_mutex_lock(&ctx->dnn_lock);
        if (!g)
            st = CG_CUDNN_CALL(cudnnSoftmaxForward(ctx->dnn, algo, CUDNN_SOFTMAX_MODE_INSTANCE, one, ds.x, y_or_x, zero,
                                                   ds.x, out));
        else
            st = CG_CUDNN_CALL(cudnnSoftmaxBackward(ctx->dnn, algo, CUDNN_SOFTMAX_MODE_INSTANCE, one, ds.x, y_or_x, ds.x,
                                                    g, zero, ds.x, out));
        pthread_mutex_unlock(&ctx->dnn_lock);
    }
    desc_free(&ds);
    return st;
}

cg_status cg_cudnn_softmax(cg_cuda_ctx *ctx, cg_dtype dt, int logsm, int64_t rows, int64_t d, const void *x, void *y) {
    return softmax_call(ctx, dt, logsm, rows, d, x, NULL, y);
}

cg_status cg_cudnn_softmax_bwd(cg_cuda_ctx *ctx, cg_dtype dt, int logsm, int64_t rows, int64_t d, const void *y,
                               const void *g, void *dx) {
    return softmax_call(ctx, dt, logsm, rows, d, y, g, dx);
}

/* gamma / beta default to ones / zeros: cuDNN needs both pointers */
static cg_status params_or_default(int dev, cudaStream_t s, const cg_tensor *g, const cg_tensor *b, int64_t C,
                                   const void **pg, const void **pb, void **tmp) {
    *tmp = NULL;
    *pg = g ? cg__ptr(g) : NULL;
    *pb = b ? cg__ptr(b) : NULL;
    if (g && b) return CG_OK;
    CG_TRY(cg_cuda_scratch(dev, (size_t)(2 * C) * sizeof(float), tmp));
    float *t = *tmp;
    if (!g) {
        CG_TRY(CG_CUDA_CALL(cg_cuda_fill(CG_F32, C, 1.0, t, s)));
        *pg = t;
    }
    if (!b) {
        CG_TRY(CG_CUDA_CALL(cg_cuda_fill(CG_F32, C, 0.0, t + C, s)));
        *pb = t + C;
    }
    return CG_OK;
}

static int bn_supported(cg_cuda_ctx *ctx, const cg_op_call *c) {
    const cg_tensor *x = c->in[0];
    if (!ctx->dnn || x->dtype != CG_F32 || x->ndim != 2) return 0;
    if (!fits_desc(x->shape[0], x->shape[1]) || x->shape[0] == 0 || x->shape[1] == 0) return 0;
    if (c->p->eps < CUDNN_BN_MIN_EPSILON) return 0;
    if ((c->in[3] == NULL) != (c->in[4] == NULL)) return 0; /* cuDNN takes both running stats or neither */
    if (!c->aux[0] || !c->aux[1]) return 0;
    return 1;
}

cg_status cg_cudnn_batchnorm(cg_cuda_ctx *ctx, const cg_op_call *c) {
    if (!bn_supported(ctx, c)) return CG_E_UNSUPPORTED;
    const cg_tensor *x = c->in[0];
    int64_t N = x->shape[0], C = x->shape[1];
    desc2 ds = {0};
    void *tmp = NULL;
    const void *pg, *pb;
    const float one = 1.0f, zero = 0.0f;
    cg_status st;
    CG_CHECK_GOTO(nchw(&ds.x, CUDNN_DATA_FLOAT, N, C));
    CG_CHECK_GOTO(CG_CUDNN_CALL(cudnnCreateTensorDescriptor(&ds.p)));
    CG_CHECK_GOTO(CG_CUDNN_CALL(cudnnDeriveBNTensorDescriptor(ds.p, ds.x, CUDNN_BATCHNORM_PER_ACTIVATION)));
    CG_CHECK_GOTO(params_or_default(ctx->dev, ctx->stream, c->in[1], c->in[2], C, &pg, &pb, &tmp));
    void *rm = c->in[3] ? cg__ptr(c->in[3]) : NULL, *rv = c->in[4] ? cg__ptr(c->in[4]) : NULL;
    pthread_mutex_lock(&ctx->dnn_lock);
    if (c->p->training) {
        st = CG_CUDNN_CALL(cudnnBatchNormalizationForwardTraining(
            ctx->dnn, CUDNN_BATCHNORM_PER_ACTIVATION, &one, &zero, ds.x, cg__ptr(x), ds.x, cg__ptr(c->out), ds.p, pg, pb,
            c->p->momentum, rm, rv, c->p->eps, cg__ptr(c->aux[0]), cg__ptr(c->aux[1])));
    } else {
        st = CG_CUDNN_CALL(cudnnBatchNormalizationForwardInference(ctx->dnn, CUDNN_BATCHNORM_PER_ACTIVATION, &one, &zero,
                                                              ds.x, cg__ptr(x), ds.x, cg__ptr(c->out), ds.p, pg, pb, rm,
                                                              rv, c->p->eps));
    }
    pthread_mutex_unlock(&ctx->dnn_lock);
    /* eval: the backward reads mean/rstd of the running statistics */
    if (st == CG_OK && !c->p->training)
        st = CG_CUDA_CALL(cg_cuda_batchnorm_eval_stats(CG_F32, C, c->p->eps, rm, rv, cg__ptr(c->aux[0]),
                                                  cg__ptr(c->aux[1]), ctx->stream));
fail:
    cg_cuda_free(ctx->dev, tmp);
    desc_free(&ds);
    return st;
}

cg_status cg_cudnn_batchnorm_bwd(cg_cuda_ctx *ctx, const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!bn_supported(ctx, c) || !c->p->training) return CG_E_UNSUPPORTED;
    const cg_tensor *x = c->in[0];
    int64_t N = x->shape[0], C = x->shape[1];
    desc2 ds = {0};
    void *tmp = NULL, *scratch = NULL;
    const void *pg, *pb;
    const float one = 1.0f, zero = 0.0f;
    cg_status st;
    CG_CHECK_GOTO(nchw(&ds.x, CUDNN_DATA_FLOAT, N, C));
    CG_CHECK_GOTO(CG_CUDNN_CALL(cudnnCreateTensorDescriptor(&ds.p)));
    CG_CHECK_GOTO(CG_CUDNN_CALL(cudnnDeriveBNTensorDescriptor(ds.p, ds.x, CUDNN_BATCHNORM_PER_ACTIVATION)));
    CG_CHECK_GOTO(params_or_default(ctx->dev, ctx->stream, c->in[1], NULL, C, &pg, &pb, &tmp));
    /* cuDNN writes dx, dgamma and dbeta always: scratch for the unwanted ones */
    size_t need = (gin[0] ? 0 : (size_t)(N * C)) + (gin[1] ? 0 : (size_t)C) + (gin[2] ? 0 : (size_t)C);
    if (need) CG_CHECK_GOTO(cg_cuda_scratch(ctx->dev, need * sizeof(float), &scratch));
    float *sp = scratch;
    void *dx = gin[0] ? cg__ptr(gin[0]) : (void *)sp;
    if (!gin[0]) sp += N * C;
    void *dg = gin[1] ? cg__ptr(gin[1]) : (void *)sp;
    if (!gin[1]) sp += C;
    void *db = gin[2] ? cg__ptr(gin[2]) : (void *)sp;
    pthread_mutex_lock(&ctx->dnn_lock);
    st = CG_CUDNN_CALL(cudnnBatchNormalizationBackward(ctx->dnn, CUDNN_BATCHNORM_PER_ACTIVATION, &one, &zero, &one, &zero,
                                                  ds.x, cg__ptr(x), ds.x, cg__ptr(gout), ds.x, dx, ds.p, pg, dg, db,
                                                  c->p->eps, cg__ptr(c->aux[0]), cg__ptr(c->aux[1])));
    pthread_mutex_unlock(&ctx->dnn_lock);
fail:
    cg_cuda_free(ctx->dev, scratch);
    cg_cuda_free(ctx->dev, tmp);
    desc_free(&ds);
    return st;
}
