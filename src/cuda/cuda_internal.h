/* CUDA backend internals: the per-device context, the error-checking macro family, the
 * sticky device error word (data errors found by kernels, reported at the next host wait),
 * the caching allocator and the matmul / cuDNN entry points shared by the C files here. */
#ifndef CG_CUDA_INTERNAL_H
#define CG_CUDA_INTERNAL_H

#include <pthread.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "backend.h"
#include "cgrad/cuda.h"
#include "cuda_kernels.h"

/* ---- error checking: one family, each turns a library status into a cg_status with the
 * failing expression and file:line recorded (via cg__set_error, which CG_FAIL wraps).
 * Use them as values: CG_TRY(CG_CUDA_CALL(cudaMemsetAsync(...))). ---- */
cg_status cg__cuda_status(cudaError_t e, const char *expr, const char *file, int line);
cg_status cg__cublas_status(cublasStatus_t e, const char *expr, const char *file, int line);
cg_status cg__cudnn_status(cudnnStatus_t e, const char *expr, const char *file, int line);
#define CG_CUDA_CALL(expr) cg__cuda_status((expr), #expr, __FILE__, __LINE__)
#define CG_CUBLAS_CALL(expr) cg__cublas_status((expr), #expr, __FILE__, __LINE__)
#define CG_CUDNN_CALL(expr) cg__cudnn_status((expr), #expr, __FILE__, __LINE__)

/* ---- per-device context: created on first use (thread-safe), lives until exit ---- */
typedef struct cg_cuda_ctx {
    int dev;
    cudaStream_t stream; /* every cgrad kernel, copy and library call on this device */
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    cudnnHandle_t dnn;       /* NULL when cuDNN failed to initialise (own kernels are used) */
    pthread_mutex_t dnn_lock; /* cuDNN handles must not be used by two threads at once */
    void *lt_ws;             /* cuBLASLt workspace */
    size_t lt_ws_bytes;
    struct cudaDeviceProp prop;
    /* asynchronous uploads (upload.c): a second stream, created on first use under
     * copy_lock, and an event that orders it after the compute stream */
    pthread_mutex_t copy_lock;
    cudaStream_t copy_stream; /* NULL until the first upload */
    cudaEvent_t copy_ready;   /* recorded on `stream`, waited on by copy_stream */
    /* copies between devices (alloc.c cg_cuda_memcpy_peer): recorded on `stream` only, under
     * the process's peer-copy lock; NULL until the first */
    cudaEvent_t peer_ready;
    /* sticky device error (cuda_kernels.h cg_cuda_err_sink, docs/cuda.md "Errors"):
     * err_claim is one device word kernels claim with atomicCAS; err_rec the record in
     * mapped pinned host memory (err_rec_dev its device address), NULL when pinned memory
     * could not be had (bad labels then only give NaN). err_lock: check-and-clear. */
    unsigned long long *err_claim;
    cg_cuda_err_rec *err_rec, *err_rec_dev;
    pthread_mutex_t err_lock;
} cg_cuda_ctx;

/* Context of device `dev`, current on the calling thread (cudaSetDevice done). */
cg_status cg_cuda_ctx_get(int dev, cg_cuda_ctx **out);
/* The device guard (context.c): every entry point of the backend (the backend table, the op
 * tables, the public cg_cuda_* calls) brackets its work with these, so that the calling
 * thread's current device is as it was: prev = cg_cuda_guard_begin(); ...;
 * cg_cuda_guard_end(prev). Nesting is fine. Neither touches cg_last_error(). */
int cg_cuda_guard_begin(void);
void cg_cuda_guard_end(int prev);
/* a guarded entry point's body: CG_CUDA_RETURN_GUARDED(unguarded_impl(args)); */
#define CG_CUDA_RETURN_GUARDED(call)                                                                                   \
    do {                                                                                                               \
        int cg_prev_dev_ = cg_cuda_guard_begin();                                                                      \
        cg_status cg_guarded_st_ = (call);                                                                             \
        cg_cuda_guard_end(cg_prev_dev_);                                                                               \
        return cg_guarded_st_;                                                                                         \
    } while (0)
/* Creates ctx->copy_stream and ctx->copy_ready if missing. Call with ctx->copy_lock held. */
cg_status cg_cuda_copy_stream_locked(cg_cuda_ctx *ctx);
/* What kernels that validate data get from the context. */
static inline cg_cuda_err_sink cg_cuda_err_sink_of(const cg_cuda_ctx *c) {
    cg_cuda_err_sink e = {c->err_claim, c->err_rec ? c->err_rec_dev : NULL};
    return e;
}
/* Call right after a host wait that covers the work to check (a D2H copy, a stream or
 * event sync): if a kernel recorded a data error, clear the word (the device part with an
 * async memset on the stream, no wait) and return CG_E_INVALID with its message. No device
 * access when nothing was recorded: one read of host memory. */
cg_status cg_cuda_err_check(cg_cuda_ctx *c);
/* The device of a tensor on the CUDA backend. */
static inline int cg_cuda_dev_of(const cg_tensor *t) { return t->st->dev.index; }

/* ---- caching allocator (alloc.c) ---- */
cg_status cg_cuda_malloc(int dev, size_t nbytes, void **ptr);
void cg_cuda_free(int dev, void *ptr);
/* Scratch: same allocator; freeing right after queueing the kernel that uses it is safe
 * (one stream per device: the next user is ordered after it). */
cg_status cg_cuda_scratch(int dev, size_t nbytes, void **ptr);
cg_status cg_cuda_memcpy(int dev, void *dst, const void *src, size_t nbytes, cg_copy_kind kind);
/* dst on cuda:dst_dev <- src on cuda:src_dev (different devices), ordered after the work
 * queued on both devices so far and before the destination's later work; no host wait. */
cg_status cg_cuda_memcpy_peer(int dst_dev, void *dst, int src_dev, const void *src, size_t nbytes);

/* CUDA graphs' memory (alloc.c, see there): a pool per graph. While the calling thread
 * captures on dev (graph.c), cg_cuda_capture_pool(dev) is its graph's pool, else NULL. */
typedef struct cg_cuda_gpool cg_cuda_gpool;
cg_status cg_cuda_gpool_create(int dev, cg_cuda_gpool **out);
void cg_cuda_gpool_release(cg_cuda_gpool *gp); /* after the graph's last launch was queued */

/* ---- CUDA graphs (graph.c): the backend's optional graph entries ----
 * graph_begin: from here until graph_end the calling thread's work on dev is recorded into
 * a graph (on a stream and cuBLAS/cuDNN handles of its own: other threads' work on the
 * device is neither recorded nor disturbed) instead of run; its allocations are the
 * graph's. graph_end: stops recording; fails (CG_E_UNSUPPORTED, with the reason) when a
 * call was not capturable. A launch runs the recorded work on the device's stream. */
cg_cuda_ctx *cg_cuda_capture_ctx(int dev);
cg_cuda_gpool *cg_cuda_capture_pool(int dev);
cg_status cg_cuda_graph_begin(int dev, void **graph);
cg_status cg_cuda_graph_end(void *graph);
cg_status cg_cuda_graph_launch(void *graph);
void cg_cuda_graph_free(void *graph);
cg_status cg_cuda_set_bytes_on(int dev, void *dst, const void *src, size_t nbytes);

/* ---- asynchronous uploads (upload.c): the backend's optional pinned / event entries ---- */
cg_status cg_cuda_pinned_alloc(int dev, size_t nbytes, void **ptr);
void cg_cuda_pinned_free(int dev, void *ptr);
cg_status cg_cuda_event_create(int dev, void **event);
void cg_cuda_event_free(int dev, void *event);
cg_status cg_cuda_upload_async(int dev, void *dst, const void *src_pinned, size_t nbytes, void *event);
cg_status cg_cuda_wait_event(int dev, void *event);
cg_status cg_cuda_event_sync(int dev, void *event);

/* ---- matmul (matmul.c) ----
 * C (M, N) = op(A) op(B), row-major, dense; beta 0 (=). dt f32 or f64. */
cg_status cg_cuda_gemm(cg_cuda_ctx *ctx, cg_dtype dt, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A,
                       const void *B, void *C);
/* Fused epilogue variant for the Linear op (documented in docs/cuda.md):
 * C = act(op(A) op(B) + bias) with aux = pre-activation (GELU/ReLU aux) when non-NULL.
 * epi: 0 none, 1 bias, 2 relu+bias, 3 gelu+bias, 4 bias gradient: C = op(A) op(B) and
 * bias (length M, WRITTEN) = the sums of op(A) over K, i.e. with ta = 1 the column sums
 * of the stored (K, M) A (cuBLASLt's BGRADB: our A is Lt's B). f32 only; bias and aux
 * 16-byte aligned, GELU aux needs N % 8 == 0, BGRAD needs K > 0 and N > 0. A case Lt
 * does not take returns CG_E_UNSUPPORTED (message set) so the caller can fall back. */
typedef enum cg_cuda_epilogue {
    CG_EPI_NONE = 0,
    CG_EPI_BIAS,
    CG_EPI_RELU_BIAS,
    CG_EPI_GELU_BIAS,
    CG_EPI_BGRAD
} cg_cuda_epilogue;
cg_status cg_cuda_gemm_ex(cg_cuda_ctx *ctx, cg_dtype dt, int ta, int tb, int64_t M, int64_t N, int64_t K,
                          const void *A, const void *B, void *C, cg_cuda_epilogue epi, const void *bias, void *aux);
#define CG_EPI_COUNT 5
/* Which path the gemms took since the process started, for tests and benchmarks (a device
 * run must show that the fused paths ran, not only that results match): cuBLASLt or the
 * cuBLAS fallback (epilogue NONE), per epilogue fused by Lt or sent back to the caller's
 * unfused path. Heuristic queries that failed with anything but NOT_SUPPORTED (taken as
 * "Lt refused", so results stay right) are counted apart with the last status name: a
 * descriptor bug would show there. */
typedef struct cg_cuda_gemm_paths {
    long long lt, fallback;
    long long fused[CG_EPI_COUNT], unfused[CG_EPI_COUNT];
    long long heuristic_errors;
    char last_error[64];
} cg_cuda_gemm_paths;
void cg__cuda_gemm_paths(cg_cuda_gemm_paths *out);
/* One line of them: "gemm paths: Lt 12, cuBLAS 0; epilogues fused/unfused: bias 3/0, ..." */
void cg__cuda_gemm_paths_str(char *buf, size_t n);

/* ---- cuDNN twins (cudnn_ops.c): CG_E_UNSUPPORTED when the case is not covered, so the
 * caller falls back to its own kernel (no error message is kept in that case). ---- */
cg_status cg_cudnn_softmax(cg_cuda_ctx *ctx, cg_dtype dt, int logsm, int64_t rows, int64_t d, const void *x, void *y);
cg_status cg_cudnn_softmax_bwd(cg_cuda_ctx *ctx, cg_dtype dt, int logsm, int64_t rows, int64_t d, const void *y,
                               const void *g, void *dx);
cg_status cg_cudnn_batchnorm(cg_cuda_ctx *ctx, const cg_op_call *c);
cg_status cg_cudnn_batchnorm_bwd(cg_cuda_ctx *ctx, const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin);

/* ---- settings (context.c) ---- */
cg_cuda_impl cg_cuda_impl_now(void);

#endif
