/* CUDA graphs: record a thread's work on a device once, launch it many times.
 *
 * Recording runs on a context of the graph's own (cg_cuda_capture_ctx): the device's context
 * with another stream and cuBLAS / cuDNN handles bound to it, so that cg_cuda_ctx_get hands
 * the recording thread a stream nobody else queues on (ThreadLocal capture mode: other
 * threads go on using the device, unrecorded). The cuBLASLt handle and workspace and the
 * device-error word are the device's: a launch runs on the device's own stream, after and
 * before every other use of them. Allocations made while recording come from the graph's
 * pool (alloc.c), so the addresses the graph holds stay its own until it is freed.
 *
 * Only work queued on the stream can be recorded: a host wait or a blocking copy in the
 * recorded code fails there (the driver refuses it) or at graph_end, and cgrad's host <->
 * device copies refuse to be recorded (CG_E_UNSUPPORTED: a recorded copy would read a
 * staging buffer reused since); the caller then runs its work without a graph. Scalars that
 * change between launches live in device memory the launches read, written before each
 * launch (cg_cuda_set_bytes_on). */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

typedef struct cuda_graph {
    int dev;
    cg_cuda_ctx cap; /* the recording context */
    cg_cuda_gpool *pool;
    cudaGraphExec_t exec; /* NULL until recorded */
    int recording;
} cuda_graph;

static _Thread_local cuda_graph *tl_graph; /* the graph this thread records, or NULL */

cg_cuda_ctx *cg_cuda_capture_ctx(int dev) { return tl_graph && tl_graph->dev == dev ? &tl_graph->cap : NULL; }
cg_cuda_gpool *cg_cuda_capture_pool(int dev) { return tl_graph && tl_graph->dev == dev ? tl_graph->pool : NULL; }

static void graph_destroy(cuda_graph *g) {
    if (g->exec) (void)cudaGraphExecDestroy(g->exec);
    if (g->cap.dnn) cudnnDestroy(g->cap.dnn);
    if (g->cap.blas) cublasDestroy(g->cap.blas);
    if (g->cap.stream) (void)cudaStreamDestroy(g->cap.stream);
    (void)cudaGetLastError(); /* clean-up reports nothing */
    pthread_mutex_destroy(&g->cap.dnn_lock);
    pthread_mutex_destroy(&g->cap.copy_lock);
    pthread_mutex_destroy(&g->cap.err_lock);
    cg_cuda_gpool_release(g->pool);
    free(g);
}

static cg_status graph_begin(int dev, void **out) {
    *out = NULL;
    if (tl_graph)
        return CG_FAIL(CG_E_STATE, "cuda:%d: this thread already records a CUDA graph on cuda:%d (one at a time)", dev,
                       tl_graph->dev);
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    cuda_graph *g = calloc(1, sizeof *g);
    if (!g) return CG_FAIL(CG_E_OOM, "cuda:%d: out of host memory for a CUDA graph", dev);
    g->dev = dev;
    g->cap = *ctx; /* the device's handles, workspace and error word; own stream and handles below */
    g->cap.stream = NULL;
    g->cap.blas = NULL;
    g->cap.dnn = NULL;
    g->cap.copy_stream = NULL;
    g->cap.copy_ready = NULL;
    g->cap.peer_ready = NULL;
    pthread_mutex_init(&g->cap.dnn_lock, NULL);
    pthread_mutex_init(&g->cap.copy_lock, NULL);
    pthread_mutex_init(&g->cap.err_lock, NULL);
    cg_status st;
    CG_CHECK_GOTO(cg_cuda_gpool_create(dev, &g->pool));
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaStreamCreateWithFlags(&g->cap.stream, cudaStreamNonBlocking)));
    CG_CHECK_GOTO(CG_CUBLAS_CALL(cublasCreate(&g->cap.blas)));
    CG_CHECK_GOTO(CG_CUBLAS_CALL(cublasSetStream(g->cap.blas, g->cap.stream)));
    CG_CHECK_GOTO(CG_CUBLAS_CALL(cublasSetWorkspace(g->cap.blas, ctx->lt_ws, ctx->lt_ws_bytes)));
    if (ctx->dnn) { /* the recording must use cuDNN where the device's ordinary steps do */
        if (cudnnCreate(&g->cap.dnn) != CUDNN_STATUS_SUCCESS) g->cap.dnn = NULL;
        else if (cudnnSetStream(g->cap.dnn, g->cap.stream) != CUDNN_STATUS_SUCCESS) {
            cudnnDestroy(g->cap.dnn);
            g->cap.dnn = NULL;
        }
        (void)cudaGetLastError();
        if (!g->cap.dnn) {
            st = CG_FAIL(CG_E_UNSUPPORTED, "cuda:%d: no cuDNN handle for a CUDA graph's recording", dev);
            goto fail;
        }
    }
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaStreamBeginCapture(g->cap.stream, cudaStreamCaptureModeThreadLocal)));
    g->recording = 1;
    tl_graph = g;
    *out = g;
    return CG_OK;
fail:
    graph_destroy(g);
    return st;
}

static cg_status graph_end(void *graph) {
    cuda_graph *g = graph;
    if (!g || !g->recording) return CG_FAIL(CG_E_STATE, "CUDA graph: not recording");
    g->recording = 0;
    if (tl_graph == g) tl_graph = NULL;
    cudaGraph_t gr = NULL;
    cudaError_t e = cudaStreamEndCapture(g->cap.stream, &gr);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return CG_FAIL(CG_E_UNSUPPORTED,
                       "cuda:%d: the work could not be recorded as a CUDA graph (%s: %s): a call in it is not "
                       "allowed in a capture (a host wait, a blocking copy)",
                       g->dev, cudaGetErrorName(e), cudaGetErrorString(e));
    }
#if CUDART_VERSION >= 12000
    e = cudaGraphInstantiate(&g->exec, gr, 0);
#else
    e = cudaGraphInstantiate(&g->exec, gr, NULL, NULL, 0);
#endif
    (void)cudaGraphDestroy(gr);
    if (e != cudaSuccess) {
        g->exec = NULL;
        return CG_CUDA_CALL(e);
    }
    return CG_OK;
}

static cg_status graph_launch(void *graph) {
    cuda_graph *g = graph;
    if (!g || !g->exec) return CG_FAIL(CG_E_STATE, "CUDA graph: nothing recorded to launch");
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(g->dev, &ctx));
    if (ctx == &g->cap) return CG_FAIL(CG_E_STATE, "CUDA graph: launched while it is recording");
    return CG_CUDA_CALL(cudaGraphLaunch(g->exec, ctx->stream));
}

/* Queued launches need nothing freed here: each holds its own copy of the executable graph
 * (cudaGraphExecDestroy frees it after them), its kernels use the device's workspace, not the
 * recording's handles, and the pool's blocks join the cache in stream order. No wait of its
 * own (cublasDestroy and cudnnDestroy may synchronise the device; neither reads cgrad's
 * device error word). */
static void graph_free(void *graph) {
    cuda_graph *g = graph;
    if (!g) return;
    if (cudaSetDevice(g->dev) != cudaSuccess) (void)cudaGetLastError(); /* its device; a free reports nothing */
    if (g->recording) { /* abandoned: stop recording, drop what was recorded */
        cudaGraph_t gr = NULL;
        if (tl_graph == g) tl_graph = NULL;
        if (cudaStreamEndCapture(g->cap.stream, &gr) == cudaSuccess && gr) (void)cudaGraphDestroy(gr);
        (void)cudaGetLastError();
    }
    graph_destroy(g); /* queued launches keep their own copy of the graph */
}

static cg_status set_bytes(int dev, void *dst, const void *src, size_t nbytes) {
    if (nbytes > sizeof(cg_cuda_bytes))
        return CG_FAIL(CG_E_INVALID, "cuda:%d: %zu bytes of graph parameters, at most %zu", dev, nbytes,
                       sizeof(cg_cuda_bytes));
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    return CG_CUDA_CALL(cg_cuda_set_bytes(dst, src, nbytes, ctx->stream));
}

cg_status cg_cuda_graph_begin(int dev, void **graph) { CG_CUDA_RETURN_GUARDED(graph_begin(dev, graph)); }
cg_status cg_cuda_graph_end(void *graph) { CG_CUDA_RETURN_GUARDED(graph_end(graph)); }
cg_status cg_cuda_graph_launch(void *graph) { CG_CUDA_RETURN_GUARDED(graph_launch(graph)); }
void cg_cuda_graph_free(void *graph) {
    int prev = cg_cuda_guard_begin();
    graph_free(graph);
    cg_cuda_guard_end(prev);
}
cg_status cg_cuda_set_bytes_on(int dev, void *dst, const void *src, size_t nbytes) {
    CG_CUDA_RETURN_GUARDED(set_bytes(dev, dst, src, nbytes));
}
