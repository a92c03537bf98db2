/* The CUDA runtime API, emulated on the host (tests/cuda_emu/README.md): one device (or
 * CGEMU_DEVICES of them, sharing one memory), whose memory is host memory handed out by
 * malloc, counted against an emulated capacity (CGEMU_MEM_MB, default 16384) so that
 * out-of-memory paths can be reached. Queued work is deferred until the host must see it
 * (emu_stream.cpp); an event's time is the host clock when its mark ran. What the emulator
 * can check, it checks and fails like a device would: cudaMemcpy directions against the live
 * allocations (a "device" pointer that is not inside one, or a host pointer that is), frees
 * of pointers never allocated, bad devices, kernels and library calls queued on another
 * device's stream, peer copies whose pointers are not on the devices named. Each thread has
 * a current device, and each device a primary context that nearly every runtime call
 * creates on the current device (cudaSetDevice, allocations, frees, streams, events,
 * copies, syncs, library handles), which the driver's cuDevicePrimaryCtxGetState reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <map>
#include <memory>
#include <vector>
#include <mutex>

#include <cuda.h> /* the driver entry points handed out by cudaGetDriverEntryPointByVersion */

#include "emu_internal.h"

namespace {

std::mutex g_mem_mutex;
std::map<uintptr_t, size_t> g_device;  /* live cudaMalloc blocks: start -> bytes */
std::map<uintptr_t, int> g_owner;      /* and the device each was allocated on */
std::map<uintptr_t, size_t> g_pinned;  /* live cudaHostAlloc blocks */
size_t g_used;
thread_local cudaError_t g_last = cudaSuccess;
thread_local int g_current_device = 0;
std::atomic<uint64_t> g_ctx_active{0}; /* bit d: device d's primary context exists */

size_t capacity() {
    static size_t cap = [] {
        const char *e = getenv("CGEMU_MEM_MB");
        long mb = e ? atol(e) : 16384;
        return (size_t)(mb > 0 ? mb : 16384) << 20;
    }();
    return cap;
}

cudaError_t fail(cudaError_t e) {
    g_last = e;
    return e;
}

/* the device whose allocation holds p, -1 when none */
int owner_of(const void *p) {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    auto it = g_device.upper_bound((uintptr_t)p);
    if (it == g_device.begin()) return -1;
    --it;
    if ((uintptr_t)p >= it->first + it->second) return -1;
    return g_owner[it->first];
}

bool in_map(const std::map<uintptr_t, size_t> &m, const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p;
    auto it = m.upper_bound(a);
    if (it == m.begin()) return false;
    --it;
    return a >= it->first && a + n <= it->first + it->second && a + n >= a;
}

} // namespace

namespace cgemu {
cudaError_t record_launch_error(cudaError_t e, const char *why) {
    fprintf(stderr, "cuda emulator: %s\n", why);
    g_last = e;
    return e;
}
bool is_device_range(const void *p, size_t n) {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    return in_map(g_device, p, n ? n : 1);
}
int current_device() { return g_current_device; }
void touch_context() { g_ctx_active.fetch_or(1ull << (g_current_device & 63)); }
} // namespace cgemu

namespace {
/* the two driver calls cgrad's device guard asks for (src/cuda/context.c); a CUdevice is
 * the ordinal */
CUresult emu_cuDeviceGet(CUdevice *d, int ordinal) {
    int n;
    cudaGetDeviceCount(&n);
    if (ordinal < 0 || ordinal >= n) return CUDA_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}
CUresult emu_cuDevicePrimaryCtxGetState(CUdevice d, unsigned int *flags, int *active) {
    int n;
    cudaGetDeviceCount(&n);
    if (d < 0 || d >= n) return CUDA_ERROR_INVALID_DEVICE;
    *flags = 0;
    *active = (g_ctx_active.load() >> (d & 63)) & 1;
    return CUDA_SUCCESS;
}
} // namespace

extern "C" {

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return g_last; }

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return cudaGetErrorName(e);
    }
}

cudaError_t cudaGetDeviceCount(int *count) {
    const char *e = getenv("CGEMU_DEVICES");
    *count = e ? atoi(e) : 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    int n;
    cudaGetDeviceCount(&n);
    if (device < 0 || device >= n) return fail(cudaErrorInvalidDevice);
    g_current_device = device;
    cgemu::touch_context(); /* since CUDA 12 cudaSetDevice initialises the primary context */
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    *device = g_current_device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device) {
    int n;
    cudaGetDeviceCount(&n);
    if (device < 0 || device >= n) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cgrad CUDA emulator (host CPU)");
    p->major = 9, p->minor = 0;
    p->totalGlobalMem = capacity();
    p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = 227 * 1024;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->multiProcessorCount = 132;
    p->maxThreadsPerMultiProcessor = 2048;
    p->l2CacheSize = 50 << 20;
    p->memoryBusWidth = 5120;
    p->unifiedAddressing = 1;
    p->canMapHostMemory = 1;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **fn, unsigned int version,
                                             unsigned long long flags, enum cudaDriverEntryPointQueryResult *q) {
    (void)version, (void)flags;
    *fn = NULL;
    if (!strcmp(symbol, "cuDeviceGet")) *fn = (void *)emu_cuDeviceGet;
    if (!strcmp(symbol, "cuDevicePrimaryCtxGetState")) *fn = (void *)emu_cuDevicePrimaryCtxGetState;
    if (q) *q = *fn ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
    return *fn ? cudaSuccess : fail(cudaErrorSymbolNotFound);
}

#define CAPTURE_SAFE(call) \
    do { \
        if (!cgemu::capture_allows(call)) return fail(cudaErrorStreamCaptureUnsupported); \
    } while (0)

cudaError_t cudaMalloc(void **p, size_t bytes) {
    cgemu::touch_context();
    *p = NULL;
    CAPTURE_SAFE("cudaMalloc");
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    if (bytes > capacity() - g_used) return fail(cudaErrorMemoryAllocation);
    void *q = NULL; /* cudaMalloc aligns to 256 bytes; exactly `bytes`, so AddressSanitizer sees overruns */
    if (posix_memalign(&q, 256, bytes ? bytes : 1)) return fail(cudaErrorMemoryAllocation);
    memset(q, 0xa5, bytes); /* fresh device memory holds garbage */
    g_device[(uintptr_t)q] = bytes;
    g_owner[(uintptr_t)q] = g_current_device;
    g_used += bytes;
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    cgemu::touch_context();
    CAPTURE_SAFE("cudaFree");
    cgemu::flush_all(); /* cudaFree synchronises the device */
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    auto it = g_device.find((uintptr_t)p);
    if (it == g_device.end()) {
        fprintf(stderr, "cuda emulator: cudaFree(%p) of a pointer cudaMalloc did not return\n", p);
        return fail(cudaErrorInvalidDevicePointer);
    }
    g_used -= it->second;
    g_device.erase(it);
    g_owner.erase((uintptr_t)p);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
    cgemu::touch_context();
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    *free_bytes = capacity() - g_used;
    *total = capacity();
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags) {
    (void)flags;
    cgemu::touch_context();
    CAPTURE_SAFE("cudaHostAlloc");
    void *q = NULL;
    if (posix_memalign(&q, 4096, bytes ? bytes : 1)) return fail(cudaErrorMemoryAllocation);
    *p = q;
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    g_pinned[(uintptr_t)q] = bytes;
    return cudaSuccess;
}

cudaError_t cudaHostGetDevicePointer(void **d, void *h, unsigned int flags) {
    cgemu::touch_context();
    (void)flags;
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    if (!in_map(g_pinned, h, 1)) return fail(cudaErrorInvalidValue);
    *d = h; /* mapped pinned memory: the device sees the same bytes */
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p) {
    if (!p) return cudaSuccess;
    cgemu::touch_context();
    CAPTURE_SAFE("cudaFreeHost");
    cgemu::flush_all(); /* so does cudaFreeHost */
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    auto it = g_pinned.find((uintptr_t)p);
    if (it == g_pinned.end()) return fail(cudaErrorInvalidValue);
    g_pinned.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s) {
    cgemu::guard g;
    if (cgemu::sticky()) return fail(cgemu::sticky());
    if (n == 0) return cudaSuccess;
    bool dd = cgemu::is_device_range(dst, n), sd = cgemu::is_device_range(src, n);
    bool ok = kind == cudaMemcpyHostToDevice   ? dd && !sd
              : kind == cudaMemcpyDeviceToHost ? !dd && sd
              : kind == cudaMemcpyDeviceToDevice ? dd && sd
              : kind == cudaMemcpyDefault        ? true
                                                 : !dd && !sd;
    if (!ok) {
        fprintf(stderr, "cuda emulator: cudaMemcpyAsync(%p, %p, %zu, kind %d): a pointer is not where the kind says\n",
                dst, src, n, (int)kind);
        return fail(cudaErrorInvalidValue);
    }
    bool src_pinned, dst_pinned;
    {
        std::lock_guard<std::mutex> lock(g_mem_mutex);
        src_pinned = in_map(g_pinned, src, n), dst_pinned = in_map(g_pinned, dst, n);
    }
    if (kind == cudaMemcpyDeviceToHost && !dst_pinned) { /* to pageable memory: returns when done */
        if (!cgemu::flush_stream(s)) return fail(cudaErrorStreamCaptureUnsupported);
        memmove(dst, src, n);
        return cudaSuccess;
    }
    if (kind == cudaMemcpyHostToDevice && !src_pinned) { /* from pageable memory: the source is staged now */
        if (cgemu::is_capturing(s)) { /* a replay could not stage it again */
            cgemu::capture_fail(s, "a copy from pageable host memory on the capturing stream");
            return fail(cudaErrorStreamCaptureUnsupported);
        }
        std::shared_ptr<std::vector<char>> stage = std::make_shared<std::vector<char>>((const char *)src,
                                                                                     (const char *)src + n);
        cgemu::enqueue(s, [dst, stage] { memcpy(dst, stage->data(), stage->size()); }, false);
        return cgemu::sticky() ? fail(cgemu::sticky()) : cudaSuccess;
    }
    cgemu::enqueue(s, [dst, src, n] { memmove(dst, src, n); }, false); /* pinned or device: read when it runs */
    return cgemu::sticky() ? fail(cgemu::sticky()) : cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
    CAPTURE_SAFE("cudaMemcpy");
    cgemu::flush_all();
    cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, 0);
    cgemu::flush_all();
    return e;
}

cudaError_t cudaMemcpyPeerAsync(void *dst, int dst_dev, const void *src, int src_dev, size_t n, cudaStream_t s) {
    int count;
    cudaGetDeviceCount(&count);
    if (dst_dev < 0 || dst_dev >= count || src_dev < 0 || src_dev >= count) return fail(cudaErrorInvalidDevice);
    if (cgemu::sticky()) return fail(cgemu::sticky());
    if (n == 0) return cudaSuccess;
    if (!cgemu::is_device_range(dst, n) || !cgemu::is_device_range(src, n) || owner_of(dst) != dst_dev ||
        owner_of(src) != src_dev) {
        fprintf(stderr, "cuda emulator: cudaMemcpyPeerAsync(%p, %d, %p, %d, %zu): a pointer is not in that device's "
                "memory (cuda:%d, cuda:%d)\n", dst, dst_dev, src, src_dev, n, owner_of(dst), owner_of(src));
        return fail(cudaErrorInvalidValue);
    }
    cgemu::enqueue(s, [dst, src, n] { memmove(dst, src, n); }, false); /* one memory: read when it runs */
    return cgemu::sticky() ? fail(cgemu::sticky()) : cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s) {
    if (cgemu::sticky()) return fail(cgemu::sticky());
    if (n == 0) return cudaSuccess;
    if (!cgemu::is_device_range(p, n)) {
        fprintf(stderr, "cuda emulator: cudaMemsetAsync(%p, %zu) outside device memory\n", p, n);
        return fail(cudaErrorInvalidValue);
    }
    cgemu::enqueue(s, [p, value, n] { memset(p, value, n); }, false);
    return cgemu::sticky() ? fail(cgemu::sticky()) : cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    (void)flags;
    cgemu::touch_context();
    *s = cgemu::stream_new(g_current_device);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    cgemu::touch_context();
    cgemu::stream_free(s);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    cgemu::touch_context();
    if (!cgemu::flush_stream(s)) return fail(cudaErrorStreamCaptureUnsupported);
    return cgemu::sticky() ? fail(cgemu::sticky()) : cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    cgemu::touch_context();
    CAPTURE_SAFE("cudaDeviceSynchronize");
    cgemu::flush_all();
    return cgemu::sticky() ? fail(cgemu::sticky()) : cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
    cgemu::touch_context();
    (void)flags;
    cgemu::event_wait(s, e);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    cgemu::touch_context();
    *e = (cudaEvent_t)cgemu::event_new(flags, g_current_device);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    cgemu::touch_context();
    cgemu::event_free(e);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    cgemu::event_record(e, s);
    return cgemu::sticky() ? fail(cgemu::sticky()) : cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    cgemu::touch_context();
    cgemu::event_sync(e);
    return cgemu::sticky() ? fail(cgemu::sticky()) : cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e) { /* never "not ready": a polling host would wait forever */
    cgemu::touch_context();
    cgemu::event_sync(e);
    return cgemu::sticky() ? fail(cgemu::sticky()) : cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if ((cgemu::event_flags(a) | cgemu::event_flags(b)) & cudaEventDisableTiming)
        return fail(cudaErrorInvalidResourceHandle);
    double ta = cgemu::event_time(a), tb = cgemu::event_time(b);
    if (ta < 0 || tb < 0) return fail(cudaErrorNotReady);
    *ms = (float)(tb - ta);
    return cudaSuccess;
}

/* ---- stream capture and graphs (emu_internal.h): a graph is the list of work its capture
 * kept; a launch queues all of it, in capture order, as one piece of work on the stream ---- */

struct emu_graph {
    std::vector<std::function<void()>> work;
};

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
    cgemu::touch_context();
    if (cgemu::sticky()) return fail(cgemu::sticky());
    cudaError_t e = cgemu::capture_begin(s, (int)mode);
    return e == cudaSuccess ? cudaSuccess : fail(e);
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    *graph = NULL;
    std::vector<std::function<void()>> *w = NULL;
    cudaError_t e = cgemu::capture_end(s, &w);
    if (e != cudaSuccess) return fail(e);
    emu_graph *g = new emu_graph;
    g->work = std::move(*w);
    delete w;
    *graph = (cudaGraph_t)g;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *status) {
    *status = cgemu::is_capturing(s) ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode) {
    *mode = (enum cudaStreamCaptureMode)cgemu::exchange_mode((int)*mode);
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    (void)flags;
    cgemu::touch_context();
    if (!graph) return fail(cudaErrorInvalidValue);
    emu_graph *x = new emu_graph(*(emu_graph *)graph); /* the executable is a copy: the graph may go */
    *exec = (cudaGraphExec_t)x;
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (cgemu::sticky()) return fail(cgemu::sticky());
    if (!exec) return fail(cudaErrorInvalidValue);
    if (cgemu::is_capturing(s)) {
        cgemu::capture_fail(s, "a graph launched into a capture (the emulator does not nest graphs)");
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    const emu_graph *x = (const emu_graph *)exec;
    cgemu::enqueue(s, [work = x->work] { /* this launch's copy */
        for (const std::function<void()> &f : work) f();
    });
    return cgemu::sticky() ? fail(cgemu::sticky()) : cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete (emu_graph *)exec; /* launches already queued hold their own copy */
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete (emu_graph *)graph;
    return cudaSuccess;
}

} // extern "C"
