/* The CUDA backend table: memory, copies with dtype conversion, fills, Philox draws,
 * BLAS-1 helpers, the fused optimizer update, sync, the asynchronous-upload entries
 * (upload.c) and the op tables (ops_cuda.c). Nothing here synchronises the host except
 * D2H copies, sync and event_sync. D2H copies and sync also report the sticky device
 * error word (a bad label seen by a kernel since the last check; context.c
 * cg_cuda_err_check) as CG_E_INVALID. */
#include <math.h>
#include <string.h>

#include "cuda_internal.h"
#include "ops_cuda.h"

static cg_status get_ctx(const cg_tensor *t, cg_cuda_ctx **ctx) { return cg_cuda_ctx_get(cg_cuda_dev_of(t), ctx); }

static cg_status memcpy_cuda(int dev, void *dst, const void *src, size_t nbytes, cg_copy_kind kind) {
    CG_TRY(cg_cuda_memcpy(dev, dst, src, nbytes, kind));
    if (kind != CG_COPY_D2H || nbytes == 0) return CG_OK;
    /* the copy waited for everything queued before it: report a data error it recorded.
     * The data copied is returned either way (the caller gets the status). */
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    return cg_cuda_err_check(ctx);
}


cg_status cg_cuda_copy_strided_impl(cg_tensor *dst, const cg_tensor *src) {
    char a[96], b[96];
    if (dst->ndim != src->ndim || !cg__same_shape(dst, src))
        return CG_FAIL(CG_E_SHAPE, "copy: shapes %s and %s differ", cg__shape_str(dst->shape, dst->ndim, a, sizeof a),
                       cg__shape_str(src->shape, src->ndim, b, sizeof b));
    if (cg_dtype_size(dst->dtype) == 0 || cg_dtype_size(src->dtype) == 0)
        return CG_FAIL(CG_E_DTYPE, "copy: invalid dtype %d -> %d", (int)src->dtype, (int)dst->dtype);
    if (!cg__same_device(dst->st->dev, src->st->dev))
        return CG_FAIL(CG_E_DEVICE, "copy_strided: tensors on different devices");
    int64_t n = cg__numel(dst->shape, dst->ndim);
    if (n == 0) return CG_OK;
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(get_ctx(dst, &ctx));
    if (dst->dtype == src->dtype && cg_tensor_is_contiguous(dst) && cg_tensor_is_contiguous(src))
        return CG_CUDA_CALL(cudaMemcpyAsync(cg__ptr(dst), cg__ptr(src), (size_t)n * cg_dtype_size(dst->dtype),
                                       cudaMemcpyDeviceToDevice, ctx->stream));
    cg_cuda_copy_geom g;
    memset(&g, 0, sizeof g);
    g.n = n;
    for (int d = 0; d < dst->ndim; d++) {
        if (dst->shape[d] == 1) continue; /* size-1 axes do not move the index */
        int k = g.nd;
        /* merge with the previous axis when both tensors walk it densely over this one */
        if (k > 0 && g.sd[k - 1] == dst->strides[d] * dst->shape[d] && g.ss[k - 1] == src->strides[d] * dst->shape[d]) {
            g.shape[k - 1] *= dst->shape[d];
            g.sd[k - 1] = dst->strides[d];
            g.ss[k - 1] = src->strides[d];
            continue;
        }
        g.shape[k] = dst->shape[d];
        g.sd[k] = dst->strides[d];
        g.ss[k] = src->strides[d];
        g.nd++;
    }
    return CG_CUDA_CALL(cg_cuda_copy_strided((int)dst->dtype, (int)src->dtype, &g, cg__ptr(dst), cg__ptr(src), ctx->stream));
}

static cg_status fill_cuda(cg_tensor *t, double value) {
    if (cg_dtype_size(t->dtype) == 0) return CG_FAIL(CG_E_DTYPE, "fill: invalid dtype %d", (int)t->dtype);
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(get_ctx(t, &ctx));
    return CG_CUDA_CALL(cg_cuda_fill((int)t->dtype, cg__numel(t->shape, t->ndim), value, cg__ptr(t), ctx->stream));
}

static cg_status need_float(const char *fn, cg_dtype dt) {
    if (dt != CG_F32 && dt != CG_F64)
        return CG_FAIL(CG_E_DTYPE, "%s: dtype %s not supported on cuda; cast to f32 or f64 with cg_tensor_cast", fn,
                       cg_dtype_name(dt));
    return CG_OK;
}

static cg_status rand_cuda(cg_tensor *t, cg_rand_dist dist, double a, double b, uint64_t seed, uint64_t offset) {
    CG_TRY(need_float(dist == CG_RAND_UNIFORM ? "rand_uniform" : "rand_normal", t->dtype));
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(get_ctx(t, &ctx));
    return CG_CUDA_CALL(cg_cuda_rand((int)t->dtype, cg__numel(t->shape, t->ndim), dist == CG_RAND_NORMAL, a, b, seed,
                                offset, cg__ptr(t), ctx->stream));
}

static cg_status axpy_cuda(cg_tensor *y, double alpha, const cg_tensor *x) {
    CG_TRY(need_float("axpy", y->dtype));
    if (x->dtype != y->dtype)
        return CG_FAIL(CG_E_DTYPE, "axpy: dtypes %s and %s differ", cg_dtype_name(y->dtype), cg_dtype_name(x->dtype));
    int64_t n = cg__numel(y->shape, y->ndim);
    if (cg__numel(x->shape, x->ndim) != n)
        return CG_FAIL(CG_E_SHAPE, "axpy: %lld vs %lld elements", (long long)n, (long long)cg__numel(x->shape, x->ndim));
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(get_ctx(y, &ctx));
    return CG_CUDA_CALL(cg_cuda_axpy((int)y->dtype, n, alpha, cg__ptr(x), cg__ptr(y), ctx->stream));
}

static cg_status scal_cuda(cg_tensor *y, double alpha) {
    CG_TRY(need_float("scale_", y->dtype));
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(get_ctx(y, &ctx));
    return CG_CUDA_CALL(cg_cuda_scal((int)y->dtype, cg__numel(y->shape, y->ndim), alpha, cg__ptr(y), ctx->stream));
}

static cg_status copy_gated_cuda(cg_tensor *dst, const cg_tensor *src, const cg_tensor *gate) {
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(get_ctx(dst, &ctx));
    return CG_CUDA_CALL(
        cg_cuda_copy_gated(cg__ptr(dst), cg__ptr(src), cg_tensor_nbytes(src), cg__ptr(gate), ctx->stream));
}

static cg_status reduce_to_cuda(cg_tensor *dst, const cg_tensor *x, double alpha, int square, int accumulate) {
    CG_TRY(need_float("reduce", x->dtype));
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(get_ctx(x, &ctx));
    int64_t n = cg__numel(x->shape, x->ndim);
    void *ws = NULL;
    CG_TRY(cg_cuda_scratch(ctx->dev, cg_cuda_reduce_to_workspace(n), &ws));
    cg_status st = CG_CUDA_CALL(
        cg_cuda_reduce_to((int)x->dtype, n, cg__ptr(x), alpha, square, accumulate, cg__ptr(dst), ws, ctx->stream));
    cg_cuda_free(ctx->dev, ws); /* stream-ordered: reused only by later work on this stream */
    return st;
}

static cg_status count_correct_cuda(cg_tensor *dst, const cg_tensor *pred, const cg_tensor *target, int accumulate) {
    CG_TRY(need_float("accuracy", pred->dtype));
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(get_ctx(pred, &ctx));
    int64_t rows = pred->ndim ? pred->shape[0] : 1, C = pred->ndim == 2 ? pred->shape[1] : 1;
    void *ws = NULL;
    CG_TRY(cg_cuda_scratch(ctx->dev, sizeof(unsigned long long), &ws));
    cg_status st = CG_CUDA_CALL(cg_cuda_count_correct((int)pred->dtype, rows, C, cg__ptr(pred), cg__ptr(target),
                                                      (int)target->dtype, accumulate, cg__ptr(dst), ws, ctx->stream));
    cg_cuda_free(ctx->dev, ws);
    return st;
}

static cg_status check_buf(const cg_optim_call *c, const cg_tensor *t, const char *what, int64_t n) {
    if (!t) return CG_FAIL(CG_E_INVALID, "optimizer: %s buffer is NULL", what);
    if (t->dtype != c->param->dtype)
        return CG_FAIL(CG_E_DTYPE, "optimizer: %s is %s but the parameter is %s", what, cg_dtype_name(t->dtype),
                       cg_dtype_name(c->param->dtype));
    if (cg__numel(t->shape, t->ndim) != n)
        return CG_FAIL(CG_E_SHAPE, "optimizer: %s has %lld elements, the parameter %lld", what,
                       (long long)cg__numel(t->shape, t->ndim), (long long)n);
    if (!cg__same_device(t->st->dev, c->param->st->dev))
        return CG_FAIL(CG_E_DEVICE, "optimizer: %s is on %s, not on the parameter's device", what,
                       cg_device_str(t->st->dev));
    return CG_OK;
}

static cg_status optim_cuda(const cg_optim_call *c) {
    if (!c || !c->param) return CG_FAIL(CG_E_INVALID, "optimizer: no parameter given");
    CG_TRY(need_float("optimizer", c->param->dtype));
    int64_t n = cg__numel(c->param->shape, c->param->ndim);
    CG_TRY(check_buf(c, c->grad, "grad", n));
    void *m = NULL, *v = NULL;
    if (c->kind == CG_OPTIM_SGD) {
        if (c->momentum != 0.0) {
            CG_TRY(check_buf(c, c->m, "momentum", n));
            m = cg__ptr(c->m);
        }
    } else if (c->kind == CG_OPTIM_ADAM || c->kind == CG_OPTIM_ADAMW) {
        CG_TRY(check_buf(c, c->m, "exp_avg", n));
        CG_TRY(check_buf(c, c->v, "exp_avg_sq", n));
        if (c->step < 1) return CG_FAIL(CG_E_INVALID, "optimizer: step %lld must be >= 1", (long long)c->step);
        m = cg__ptr(c->m);
        v = cg__ptr(c->v);
    } else {
        return CG_FAIL(CG_E_INVALID, "optimizer: unknown kind %d", (int)c->kind);
    }
    cg_optim_coef a = cg_optim_call_coef(c);
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(get_ctx(c->param, &ctx));
    const double *gate = c->gate ? cg__ptr(c->gate) : NULL, *sq = c->clip_sumsq ? cg__ptr(c->clip_sumsq) : NULL;
    return CG_CUDA_CALL(cg_cuda_optim((int)c->param->dtype, n, &a, (const cg_optim_coef *)c->coef_dev, cg__ptr(c->param),
                                      cg__ptr(c->grad), m, v, gate, sq, c->clip_max, ctx->stream));
}

/* ---- the table: each entry runs under the device guard (cuda_internal.h), so that a call
 * on cuda:N leaves the caller's thread on the device it was on. sync is the public
 * cg_cuda_synchronize, guarded itself. ---- */

static cg_status alloc_entry(int dev, size_t nbytes, void **ptr) {
    CG_CUDA_RETURN_GUARDED(cg_cuda_malloc(dev, nbytes, ptr));
}
static void free_entry(int dev, void *ptr) {
    int prev = cg_cuda_guard_begin();
    cg_cuda_free(dev, ptr);
    cg_cuda_guard_end(prev);
}
static cg_status memcpy_entry(int dev, void *dst, const void *src, size_t nbytes, cg_copy_kind kind) {
    CG_CUDA_RETURN_GUARDED(memcpy_cuda(dev, dst, src, nbytes, kind));
}
static cg_status memcpy_peer_entry(int dst_dev, void *dst, int src_dev, const void *src, size_t nbytes) {
    CG_CUDA_RETURN_GUARDED(cg_cuda_memcpy_peer(dst_dev, dst, src_dev, src, nbytes));
}
static cg_status copy_strided_entry(cg_tensor *dst, const cg_tensor *src) {
    CG_CUDA_RETURN_GUARDED(cg_cuda_copy_strided_impl(dst, src));
}
static cg_status fill_entry(cg_tensor *t, double value) { CG_CUDA_RETURN_GUARDED(fill_cuda(t, value)); }
static cg_status rand_entry(cg_tensor *t, cg_rand_dist dist, double a, double b, uint64_t seed, uint64_t offset) {
    CG_CUDA_RETURN_GUARDED(rand_cuda(t, dist, a, b, seed, offset));
}
static cg_status axpy_entry(cg_tensor *y, double alpha, const cg_tensor *x) {
    CG_CUDA_RETURN_GUARDED(axpy_cuda(y, alpha, x));
}
static cg_status scal_entry(cg_tensor *y, double alpha) { CG_CUDA_RETURN_GUARDED(scal_cuda(y, alpha)); }
static cg_status copy_gated_entry(cg_tensor *dst, const cg_tensor *src, const cg_tensor *gate) {
    CG_CUDA_RETURN_GUARDED(copy_gated_cuda(dst, src, gate));
}
static cg_status reduce_to_entry(cg_tensor *dst, const cg_tensor *x, double alpha, int square, int accumulate) {
    CG_CUDA_RETURN_GUARDED(reduce_to_cuda(dst, x, alpha, square, accumulate));
}
static cg_status count_correct_entry(cg_tensor *dst, const cg_tensor *pred, const cg_tensor *target, int accumulate) {
    CG_CUDA_RETURN_GUARDED(count_correct_cuda(dst, pred, target, accumulate));
}
static cg_status optim_entry(const cg_optim_call *c) { CG_CUDA_RETURN_GUARDED(optim_cuda(c)); }
static cg_status pinned_alloc_entry(int dev, size_t nbytes, void **ptr) {
    CG_CUDA_RETURN_GUARDED(cg_cuda_pinned_alloc(dev, nbytes, ptr));
}
static void pinned_free_entry(int dev, void *ptr) {
    int prev = cg_cuda_guard_begin();
    cg_cuda_pinned_free(dev, ptr);
    cg_cuda_guard_end(prev);
}
static void event_free_entry(int dev, void *event) {
    int prev = cg_cuda_guard_begin();
    cg_cuda_event_free(dev, event);
    cg_cuda_guard_end(prev);
}
static cg_status event_create_entry(int dev, void **event) { CG_CUDA_RETURN_GUARDED(cg_cuda_event_create(dev, event)); }
static cg_status upload_async_entry(int dev, void *dst, const void *src_pinned, size_t nbytes, void *event) {
    CG_CUDA_RETURN_GUARDED(cg_cuda_upload_async(dev, dst, src_pinned, nbytes, event));
}
static cg_status wait_event_entry(int dev, void *event) { CG_CUDA_RETURN_GUARDED(cg_cuda_wait_event(dev, event)); }
static cg_status event_sync_entry(int dev, void *event) { CG_CUDA_RETURN_GUARDED(cg_cuda_event_sync(dev, event)); }

const cg_backend cg_cuda_backend = {
    .name = "cuda",
    .type = CG_DEVICE_CUDA,
    .alloc = alloc_entry,
    .free = free_entry,
    .memcpy = memcpy_entry,
    .memcpy_peer = memcpy_peer_entry,
    .copy_strided = copy_strided_entry,
    .fill = fill_entry,
    .rand = rand_entry,
    .axpy = axpy_entry,
    .scal = scal_entry,
    .reduce_to = reduce_to_entry,
    .copy_gated = copy_gated_entry,
    .count_correct = count_correct_entry,
    .optim = optim_entry,
    .graph_begin = cg_cuda_graph_begin,
    .graph_end = cg_cuda_graph_end,
    .graph_launch = cg_cuda_graph_launch,
    .graph_free = cg_cuda_graph_free,
    .set_bytes = cg_cuda_set_bytes_on,
    /* checks the sticky error word after the wait. event_sync (cg_cuda_event_sync) does
     * not: the loader waits on it for its own staging buffers and drops failures of a
     * prefetch (loader.c pf_ahead), which would clear the word and lose the message; the
     * error stays for the next D2H copy or sync instead. */
    .sync = cg_cuda_synchronize,
    .pinned_alloc = pinned_alloc_entry,
    .pinned_free = pinned_free_entry,
    .event_create = event_create_entry,
    .event_free = event_free_entry,
    .upload_async = upload_async_entry,
    .wait_event = wait_event_entry,
    .event_sync = event_sync_entry,
    .forward = cg_cuda_forward_table,
    .backward = cg_cuda_backward_table,
};
