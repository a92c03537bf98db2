/* CUDA device discovery, per-device contexts (stream, cuBLAS/cuBLASLt/cuDNN handles,
 * cuBLASLt workspace), the error-checking helpers and process-wide settings.
 *
 * A context is created on the first call that needs device `dev`, under a mutex, and
 * lives until the process exits (handles are not destroyed at exit on purpose: the CUDA
 * runtime may already be torn down by then). All threads share a device's context and
 * therefore its stream; cuDNN calls are serialised by ctx->dnn_lock. A second, copy-only
 * stream is created on the first asynchronous upload (upload.c).
 *
 * Sticky device error: each context has a device claim word and a record in mapped pinned
 * host memory (cuda_kernels.h cg_cuda_err_sink). A kernel that finds bad data (softmax-CE:
 * a label outside [0, C)) fills it without any host sync; cg_cuda_err_check, called after
 * the host waits anyway (D2H copies, sync, event_sync, cg_cuda_synchronize), turns it into
 * CG_E_INVALID and clears it. */
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <cuda.h> /* driver types only: its entry points come through the runtime */

#include "cuda_internal.h"

#define CG_CUDA_MAX_DEVICES 64
#define CG_LT_WORKSPACE_BYTES ((size_t)32 << 20) /* cuBLASLt guidance for Hopper */

/* ---- error helpers ---- */

cg_status cg__cuda_status(cudaError_t e, const char *expr, const char *file, int line) {
    if (e == cudaSuccess) return CG_OK;
    (void)cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */
    cg_status s = (e == cudaErrorMemoryAllocation) ? CG_E_OOM : CG_E_CUDA;
    return cg__set_error(s, file, line, "CUDA error %s (%s) in %s", cudaGetErrorName(e), cudaGetErrorString(e), expr);
}

cg_status cg__cublas_status(cublasStatus_t e, const char *expr, const char *file, int line) {
    if (e == CUBLAS_STATUS_SUCCESS) return CG_OK;
    cg_status s = (e == CUBLAS_STATUS_ALLOC_FAILED) ? CG_E_OOM : CG_E_CUDA;
    return cg__set_error(s, file, line, "cuBLAS error %s (%d) in %s", cublasGetStatusString(e), (int)e, expr);
}

cg_status cg__cudnn_status(cudnnStatus_t e, const char *expr, const char *file, int line) {
    if (e == CUDNN_STATUS_SUCCESS) return CG_OK;
    cg_status s = (e == CUDNN_STATUS_ALLOC_FAILED) ? CG_E_OOM : CG_E_CUDA;
    return cg__set_error(s, file, line, "cuDNN error %s (%d) in %s", cudnnGetErrorString(e), (int)e, expr);
}

/* ---- discovery ---- */

static pthread_once_t g_count_once = PTHREAD_ONCE_INIT;
static int g_count;
static char g_avail[256];

static void count_devices(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        g_count = 0;
        snprintf(g_avail, sizeof g_avail, "no usable CUDA device: %s (%s)", cudaGetErrorName(e),
                 cudaGetErrorString(e));
        return;
    }
    g_count = n < CG_CUDA_MAX_DEVICES ? n : CG_CUDA_MAX_DEVICES;
    if (n == 0)
        snprintf(g_avail, sizeof g_avail, "the CUDA driver reports no device");
    else
        snprintf(g_avail, sizeof g_avail, "%d CUDA device(s)", g_count);
}

int cg_device_count(void) {
    pthread_once(&g_count_once, count_devices);
    return g_count;
}

int cg_cuda_built(void) { return 1; }

const char *cg_cuda_availability(void) {
    pthread_once(&g_count_once, count_devices);
    return g_avail;
}

/* ---- sticky device error ---- */

/* Mapped record + device claim word. Pinned memory is optional (without it data errors
 * only give NaN, as before); the device word is not (c->stream must exist). */
static cg_status err_create(cg_cuda_ctx *c) {
    void *rec = NULL, *drec = NULL;
    if (cudaHostAlloc(&rec, sizeof(cg_cuda_err_rec), cudaHostAllocMapped) == cudaSuccess &&
        cudaHostGetDevicePointer(&drec, rec, 0) == cudaSuccess) {
        memset(rec, 0, sizeof(cg_cuda_err_rec));
        c->err_rec = rec;
        c->err_rec_dev = drec;
    } else {
        (void)cudaGetLastError();
        if (rec) cudaFreeHost(rec);
    }
    CG_TRY(CG_CUDA_CALL(cudaMalloc((void **)&c->err_claim, sizeof *c->err_claim)));
    /* on the stream: ordered before every kernel that may claim it */
    return CG_CUDA_CALL(cudaMemsetAsync(c->err_claim, 0, sizeof *c->err_claim, c->stream));
}

static void err_free(cg_cuda_ctx *c) {
    if (c->err_claim) cudaFree(c->err_claim);
    if (c->err_rec) cudaFreeHost(c->err_rec);
    c->err_claim = NULL;
    c->err_rec = c->err_rec_dev = NULL;
}

cg_status cg_cuda_err_check(cg_cuda_ctx *c) {
    volatile cg_cuda_err_rec *r = c->err_rec;
    /* The caller has just waited for the work to check: kernel writes to mapped memory
     * are visible to the host once the host has synchronised with the kernel's completion
     * (and the writer published code last, after __threadfence_system). */
    if (!r || r->code == CG_CUDA_ERR_NONE) return CG_OK;
    pthread_mutex_lock(&c->err_lock);
    unsigned long long code = r->code;
    atomic_thread_fence(memory_order_acquire); /* payload after code */
    long long row = r->row, value = r->value, limit = r->limit;
    if (code != CG_CUDA_ERR_NONE) {
        /* host record first, then the device word: no kernel can write the record again
         * before the memset has run, and the memset is queued after our store */
        r->code = CG_CUDA_ERR_NONE;
        atomic_thread_fence(memory_order_seq_cst);
        if (cudaMemsetAsync(c->err_claim, 0, sizeof *c->err_claim, c->stream) != cudaSuccess)
            (void)cudaGetLastError(); /* the device is failing; later calls will say so */
    }
    pthread_mutex_unlock(&c->err_lock);
    if (code == CG_CUDA_ERR_NONE) return CG_OK; /* another thread reported it */
    if (code == CG_CUDA_ERR_CE_LABEL)
        return CG_FAIL(CG_E_INVALID,
                       "softmax_cross_entropy: label %lld at row %lld is outside [0, %lld) (labels must be class "
                       "indices); found on cuda:%d by the kernel and reported at the next host synchronisation, "
                       "so results computed since that softmax_cross_entropy call are not valid",
                       value, row, limit, c->dev);
    return CG_FAIL(CG_E_INVALID,
                   "cuda:%d: a kernel recorded data error %llu (row %lld, value %lld, limit %lld); results computed "
                   "since then are not valid",
                   c->dev, code, row, value, limit);
}

/* ---- contexts ---- */

static pthread_mutex_t g_ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static cg_cuda_ctx *_Atomic g_ctx[CG_CUDA_MAX_DEVICES];

static cg_status check_dev(int dev) {
    int n = cg_device_count();
    if (dev < 0 || dev >= n)
        return CG_FAIL(CG_E_DEVICE, "cuda:%d is not available (%s); use CG_CPU or cg_default_device()", dev,
                       cg_cuda_availability());
    return CG_OK;
}

static cg_status ctx_create(int dev, cg_cuda_ctx **out) {
    cg_cuda_ctx *c = calloc(1, sizeof *c);
    if (!c) return CG_FAIL(CG_E_OOM, "cuda:%d: out of host memory creating the device context", dev);
    c->dev = dev;
    cg_status st;
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaSetDevice(dev)));
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaGetDeviceProperties(&c->prop, dev)));
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)));
    CG_CHECK_GOTO(err_create(c));
    CG_CHECK_GOTO(CG_CUBLAS_CALL(cublasCreate(&c->blas)));
    CG_CHECK_GOTO(CG_CUBLAS_CALL(cublasSetStream(c->blas, c->stream)));
    CG_CHECK_GOTO(CG_CUBLAS_CALL(cublasLtCreate(&c->lt)));
    c->lt_ws_bytes = CG_LT_WORKSPACE_BYTES;
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaMalloc(&c->lt_ws, c->lt_ws_bytes)));
    /* cuBLAS (legacy API, the fallback) gets the same workspace */
    CG_CHECK_GOTO(CG_CUBLAS_CALL(cublasSetWorkspace(c->blas, c->lt_ws, c->lt_ws_bytes)));
    pthread_mutex_init(&c->dnn_lock, NULL);
    pthread_mutex_init(&c->copy_lock, NULL);
    pthread_mutex_init(&c->err_lock, NULL);
    /* cuDNN is optional: without it the own kernels serve every op */
    if (cudnnCreate(&c->dnn) == CUDNN_STATUS_SUCCESS) {
        if (cudnnSetStream(c->dnn, c->stream) != CUDNN_STATUS_SUCCESS) {
            cudnnDestroy(c->dnn);
            c->dnn = NULL;
        }
    } else {
        c->dnn = NULL;
    }
    (void)cudaGetLastError(); /* a failed cuDNN setup must not be blamed on the next launch */
    *out = c;
    return CG_OK;
fail:
    if (c->lt_ws) cudaFree(c->lt_ws);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->blas) cublasDestroy(c->blas);
    if (c->stream) cudaStreamSynchronize(c->stream); /* the claim word's memset */
    err_free(c);
    if (c->stream) cudaStreamDestroy(c->stream);
    (void)cudaGetLastError(); /* the clean-up's own errors; st has the first one */
    free(c);
    return st;
}

cg_status cg_cuda_ctx_get(int dev, cg_cuda_ctx **out) {
    if (dev < 0 || dev >= CG_CUDA_MAX_DEVICES) return check_dev(dev);
    cg_cuda_ctx *c = atomic_load(&g_ctx[dev]);
    if (!c) {
        CG_TRY(check_dev(dev));
        pthread_mutex_lock(&g_ctx_lock);
        c = atomic_load(&g_ctx[dev]);
        cg_status st = CG_OK;
        if (!c) {
            st = ctx_create(dev, &c);
            if (st == CG_OK) atomic_store(&g_ctx[dev], c);
        }
        pthread_mutex_unlock(&g_ctx_lock);
        CG_TRY(st);
    }
    /* Ask the runtime for the thread's device (a thread-local read there) rather than cache
     * it here: a failed context creation, or the embedding program's own cudaSetDevice,
     * would leave a cached value wrong and send allocations and launches to another GPU. */
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess) {
        (void)cudaGetLastError();
        cur = -1;
    }
    if (cur != dev) CG_TRY(CG_CUDA_CALL(cudaSetDevice(dev)));
    cg_cuda_ctx *cap = cg_cuda_capture_ctx(dev); /* this thread records a CUDA graph there (graph.c) */
    *out = cap ? cap : c;
    return CG_OK;
}

/* ---- the device guard ----
 * cg_cuda_ctx_get makes the wanted device current; every entry point of the backend wraps
 * its work in guard_begin/guard_end so that the caller's thread gets its own device back,
 * as PyTorch's device guard does. One exception, also PyTorch's: when the device to go back
 * to has no primary context yet (the thread never used CUDA, and nothing in the process used
 * that device), going back would create one there (cudaSetDevice does since CUDA 12), which
 * costs that GPU hundreds of MiB per process. Then the thread stays on cgrad's device.
 * Whether a device has a primary context is the driver's cuDevicePrimaryCtxGetState,
 * reached through the runtime's entry-point query (no link to libcuda). Without it (a
 * runtime older than 11.3, or the query fails) nothing is restored: the old behaviour. */

typedef CUresult (*prim_ctx_state_fn)(CUdevice dev, unsigned int *flags, int *active);
typedef CUresult (*device_get_fn)(CUdevice *dev, int ordinal);
static pthread_once_t g_drv_once = PTHREAD_ONCE_INIT;
static prim_ctx_state_fn g_prim_ctx_state;
static device_get_fn g_device_get;

static void *driver_entry(const char *symbol) {
#if CUDART_VERSION >= 11030
    void *fn = NULL;
    int found = 1;
#if CUDART_VERSION >= 12050
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    cudaError_t e = cudaGetDriverEntryPointByVersion(symbol, &fn, 12000, cudaEnableDefault, &q);
    found = q == cudaDriverEntryPointSuccess;
#elif CUDART_VERSION >= 12000
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    cudaError_t e = cudaGetDriverEntryPoint(symbol, &fn, cudaEnableDefault, &q);
    found = q == cudaDriverEntryPointSuccess;
#else
    cudaError_t e = cudaGetDriverEntryPoint(symbol, &fn, cudaEnableDefault);
#endif
    if (e != cudaSuccess) { /* only then is there an error of ours to clear */
        (void)cudaGetLastError();
        return NULL;
    }
    return found ? fn : NULL;
#else
    (void)symbol;
    return NULL;
#endif
}

static void driver_init(void) {
    g_device_get = (device_get_fn)driver_entry("cuDeviceGet");
    g_prim_ctx_state = (prim_ctx_state_fn)driver_entry("cuDevicePrimaryCtxGetState");
}

/* 1 when device `ordinal` has an active primary context; 0 when not, or when unknown */
static int has_primary_context(int ordinal) {
    pthread_once(&g_drv_once, driver_init);
    if (!g_device_get || !g_prim_ctx_state) return 0;
    CUdevice d;
    unsigned int flags = 0;
    int active = 0;
    if (g_device_get(&d, ordinal) != CUDA_SUCCESS) return 0;
    if (g_prim_ctx_state(d, &flags, &active) != CUDA_SUCCESS) return 0;
    return active;
}

int cg_cuda_guard_begin(void) {
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return cur;
}

void cg_cuda_guard_end(int prev) {
    if (prev < 0) return;
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    if (cur == prev || !has_primary_context(prev)) return;
    if (cudaSetDevice(prev) != cudaSuccess) (void)cudaGetLastError(); /* the caller's status stands */
}

cg_status cg_cuda_copy_stream_locked(cg_cuda_ctx *c) {
    if (c->copy_stream) return CG_OK;
    cudaStream_t s = NULL;
    cudaEvent_t e = NULL;
    cg_status st = CG_CUDA_CALL(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    if (st == CG_OK) st = CG_CUDA_CALL(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    if (st != CG_OK) {
        if (s) cudaStreamDestroy(s);
        return st;
    }
    c->copy_ready = e;
    c->copy_stream = s; /* last: a non-NULL stream means both exist */
    return CG_OK;
}

/* ---- public controls ---- */

static atomic_int g_precision = CG_MATMUL_FP32;
static atomic_int g_impl = CG_IMPL_OWN;

cg_status cg_cuda_set_matmul_precision(cg_cuda_matmul_precision p) {
    if (p != CG_MATMUL_FP32 && p != CG_MATMUL_TF32 && p != CG_MATMUL_BF16)
        return CG_FAIL(CG_E_INVALID, "cg_cuda_set_matmul_precision: unknown precision %d (use CG_MATMUL_FP32, "
                                     "CG_MATMUL_TF32 or CG_MATMUL_BF16)", (int)p);
    atomic_store(&g_precision, (int)p);
    return CG_OK;
}

cg_cuda_matmul_precision cg_cuda_get_matmul_precision(void) {
    return (cg_cuda_matmul_precision)atomic_load(&g_precision);
}

cg_status cg_cuda_set_impl(cg_cuda_impl impl) {
    if (impl != CG_IMPL_OWN && impl != CG_IMPL_CUDNN)
        return CG_FAIL(CG_E_INVALID, "cg_cuda_set_impl: unknown implementation %d (use CG_IMPL_OWN or CG_IMPL_CUDNN)",
                       (int)impl);
    atomic_store(&g_impl, (int)impl);
    return CG_OK;
}

cg_cuda_impl cg_cuda_get_impl(void) { return (cg_cuda_impl)atomic_load(&g_impl); }
cg_cuda_impl cg_cuda_impl_now(void) { return (cg_cuda_impl)atomic_load(&g_impl); }

static cg_status device_info_get(int dev, cg_cuda_device_info *out) {
    CG_ARG_NOT_NULL(out, "cg_cuda_device_info_get");
    cg_cuda_ctx *c = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &c));
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", c->prop.name);
    out->cc_major = c->prop.major;
    out->cc_minor = c->prop.minor;
    out->sm_count = c->prop.multiProcessorCount;
    out->total_mem = c->prop.totalGlobalMem;
    out->l2_bytes = (size_t)c->prop.l2CacheSize;
    out->mem_bus_bits = c->prop.memoryBusWidth;
    cudaRuntimeGetVersion(&out->runtime_version);
    cudaDriverGetVersion(&out->driver_version);
    out->cudnn_version = c->dnn ? (int)cudnnGetVersion() : 0;
    return CG_OK;
}
cg_status cg_cuda_device_info_get(int dev, cg_cuda_device_info *out) {
    CG_CUDA_RETURN_GUARDED(device_info_get(dev, out));
}

static cg_status synchronize(int dev) {
    cg_cuda_ctx *c = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &c));
    CG_TRY(CG_CUDA_CALL(cudaStreamSynchronize(c->stream)));
    return cg_cuda_err_check(c);
}
cg_status cg_cuda_synchronize(int dev) { CG_CUDA_RETURN_GUARDED(synchronize(dev)); }
