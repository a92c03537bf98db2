/* Asynchronous host->device uploads for the data loader: page-locked host buffers, events,
 * and H2D copies on a per-device copy stream so the next batch transfers while the compute
 * stream works on the current one.
 *
 * Ordering (the allocator is stream-ordered on the compute stream only):
 *  - before a copy: ctx->copy_ready is recorded on the compute stream and the copy stream
 *    waits on it, so a destination block that the caching allocator just recycled from a
 *    tensor still read by queued kernels is not overwritten early;
 *  - after a copy: the caller's event is recorded on the copy stream; the compute stream
 *    waits on it (wait_event) before any kernel reads the destination, and the host waits
 *    on it (event_sync) before it rewrites the pinned source.
 * A destination block freed back to the allocator must first be covered by wait_event (or
 * event_sync): then every later user of the block is ordered after the copy.
 *
 * GPU-unverified: compiles and links; never run on a device yet. */
#include "cuda_internal.h"

cg_status cg_cuda_pinned_alloc(int dev, size_t nbytes, void **ptr) {
    *ptr = NULL;
    if (nbytes == 0) return CG_OK;
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    /* portable: pinned for every device, whichever context is current */
    return CG_CUDA_CALL(cudaHostAlloc(ptr, nbytes, cudaHostAllocPortable));
}

/* The frees report nothing, so they make dev current without cg_cuda_ctx_get (whose
 * failure would overwrite the caller's cg_last_error): on another device the runtime
 * could otherwise create that device's primary context just to free. The device guard
 * (backend_cuda.c) puts the caller's device back. */
static void make_current_quietly(int dev) {
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || (cur != dev && cudaSetDevice(dev) != cudaSuccess))
        (void)cudaGetLastError();
}

void cg_cuda_pinned_free(int dev, void *ptr) {
    if (!ptr) return;
    make_current_quietly(dev);
    if (cudaFreeHost(ptr) != cudaSuccess) (void)cudaGetLastError(); /* nothing to report to */
}

cg_status cg_cuda_event_create(int dev, void **event) {
    *event = NULL;
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    cudaEvent_t e = NULL;
    CG_TRY(CG_CUDA_CALL(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)));
    *event = e;
    return CG_OK;
}

void cg_cuda_event_free(int dev, void *event) {
    if (!event) return;
    make_current_quietly(dev);
    if (cudaEventDestroy((cudaEvent_t)event) != cudaSuccess) (void)cudaGetLastError();
}

cg_status cg_cuda_upload_async(int dev, void *dst, const void *src_pinned, size_t nbytes, void *event) {
    if (!event) return CG_FAIL(CG_E_INVALID, "upload_async: event is NULL (create one with event_create)");
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    cg_status st;
    int issued = 0;
    /* one upload at a time per device: copy_ready is shared */
    pthread_mutex_lock(&ctx->copy_lock);
    CG_CHECK_GOTO(cg_cuda_copy_stream_locked(ctx));
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaEventRecord(ctx->copy_ready, ctx->stream)));
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaStreamWaitEvent(ctx->copy_stream, ctx->copy_ready, 0)));
    if (nbytes) {
        CG_CHECK_GOTO(CG_CUDA_CALL(cudaMemcpyAsync(dst, src_pinned, nbytes, cudaMemcpyHostToDevice, ctx->copy_stream)));
        issued = 1;
    }
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaEventRecord((cudaEvent_t)event, ctx->copy_stream)));
    pthread_mutex_unlock(&ctx->copy_lock);
    return CG_OK;
fail:
    /* the copy may be queued but no event covers it: drain the copy stream so the caller
     * may reuse both buffers at once (the error already recorded is the one to report) */
    if (issued && cudaStreamSynchronize(ctx->copy_stream) != cudaSuccess) (void)cudaGetLastError();
    pthread_mutex_unlock(&ctx->copy_lock);
    return st;
}

cg_status cg_cuda_wait_event(int dev, void *event) {
    if (!event) return CG_FAIL(CG_E_INVALID, "wait_event: event is NULL");
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    return CG_CUDA_CALL(cudaStreamWaitEvent(ctx->stream, (cudaEvent_t)event, 0));
}

cg_status cg_cuda_event_sync(int dev, void *event) {
    if (!event) return CG_FAIL(CG_E_INVALID, "event_sync: event is NULL");
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    return CG_CUDA_CALL(cudaEventSynchronize((cudaEvent_t)event));
}
