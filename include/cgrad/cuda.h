/* cgrad: CUDA backend controls: device information, the caching allocator, matmul
 * precision and the choice between cgrad's own kernels and cuDNN.
 *
 * Every function is declared in every build. Without the CUDA backend (CG_CUDA=OFF or no
 * toolkit) or without a device they return CG_E_UNSUPPORTED / CG_E_DEVICE with a message;
 * cg_cuda_availability() says why there is no device. The two process-wide settings
 * (cg_cuda_set_matmul_precision, cg_cuda_set_impl) are the exception: a build with the
 * backend takes them without a device, for the devices to come.
 *
 * The calling thread's current CUDA device (cudaGetDevice) is the same after any cgrad call
 * as before it, whatever device the call worked on, except: when that device has no primary
 * context yet in the process, cgrad does not create one there and the thread stays on the
 * device cgrad used (as with PyTorch); when the driver cannot be asked (runtime before 11.3)
 * or setting the device back fails, nothing is restored. A driver-API context the caller
 * made current is not restored, only its device's primary context. docs/cuda.md "Context". */
#ifndef CGRAD_CUDA_H
#define CGRAD_CUDA_H

#include "common.h"

CG_EXTERN_C_BEGIN

/* Why cg_device_count() is what it is: "2 CUDA device(s)", "CUDA driver not found
 * (cudaErrorInsufficientDriver: ...)", "built without CUDA". Static storage, never NULL. */
CG_API const char *cg_cuda_availability(void);

typedef struct cg_cuda_device_info {
    char name[256];
    int cc_major, cc_minor;  /* compute capability */
    int sm_count;
    size_t total_mem;        /* bytes */
    size_t l2_bytes;
    int mem_bus_bits;
    int runtime_version, driver_version; /* e.g. 13000 */
    int cudnn_version;       /* cudnnGetVersion(), 0 when unknown */
} cg_cuda_device_info;

CG_API cg_status cg_cuda_device_info_get(int dev, cg_cuda_device_info *out);

/* Waits for all work queued by cgrad on the device's stream. */
CG_API cg_status cg_cuda_synchronize(int dev);

/* ---- caching allocator ----
 * Device memory is taken from cudaMalloc in size classes and kept for reuse when freed;
 * all cgrad work on a device runs on one stream, so a freed block is reusable at once
 * (stream order). Out of memory: the cache is released and the allocation retried once
 * before CG_E_OOM is returned. */
typedef struct cg_cuda_mem_stats {
    size_t in_use;       /* bytes of live blocks (size-class rounded) */
    size_t requested;    /* bytes the live allocations asked for */
    size_t cached;       /* bytes of free blocks kept for reuse */
    size_t peak_in_use;  /* high-water mark of in_use since start or cg_cuda_reset_peak */
    size_t reserved;     /* in_use + cached: what cudaMalloc currently holds */
    uint64_t n_alloc;    /* allocations served */
    uint64_t n_cache_hit;/* ... of which from the cache */
    uint64_t n_cuda_malloc, n_cuda_free;
    uint64_t n_oom_retry;/* times the cache was flushed to satisfy a request */
} cg_cuda_mem_stats;

CG_API cg_status cg_cuda_memory_stats(int dev, cg_cuda_mem_stats *out);
CG_API cg_status cg_cuda_reset_peak(int dev);
/* Returns every cached (free) block to the driver; live tensors are untouched. */
CG_API cg_status cg_cuda_empty_cache(int dev);
/* Turns the cache off (0) or back on (1) for a device. Without it every allocation is a
 * cudaMalloc of exactly the bytes asked for and every free waits for the device's stream
 * and calls cudaFree: slow, for debugging only. Under compute-sanitizer (or a host
 * sanitizer over the CUDA emulator) an access past the end of a tensor then lands outside
 * its allocation instead of in the unused tail of a size class. Turning it off empties the
 * cache first. The environment variable CG_CUDA_NO_CACHING=1 sets the starting state of
 * every device (like PyTorch's PYTORCH_NO_CUDA_MEMORY_CACHING). */
CG_API cg_status cg_cuda_set_caching(int dev, int enabled);
/* *enabled = 1 when the device's allocator caches, 0 when caching is off. */
CG_API cg_status cg_cuda_get_caching(int dev, int *enabled);

/* ---- matmul precision (process-wide; f64 matmuls always compute in f64) ---- */
typedef enum cg_cuda_matmul_precision {
    CG_MATMUL_FP32 = 0, /* exact fp32 (CUBLAS_COMPUTE_32F), the default */
    CG_MATMUL_TF32 = 1, /* tensor cores, inputs rounded to tf32, fp32 accumulate */
    CG_MATMUL_BF16 = 2  /* tensor cores, inputs rounded to bf16, fp32 accumulate and output */
} cg_cuda_matmul_precision;

CG_API cg_status cg_cuda_set_matmul_precision(cg_cuda_matmul_precision p);
CG_API cg_cuda_matmul_precision cg_cuda_get_matmul_precision(void);

/* ---- implementation choice for ops that have a cuDNN twin (softmax, log_softmax,
 * batchnorm). CG_IMPL_OWN (default): cgrad's kernels (deterministic). CG_IMPL_CUDNN: cuDNN
 * where it supports the case (f32, eps >= CUDNN_BN_MIN_EPSILON), else ours. ---- */
typedef enum cg_cuda_impl { CG_IMPL_OWN = 0, CG_IMPL_CUDNN = 1 } cg_cuda_impl;

CG_API cg_status cg_cuda_set_impl(cg_cuda_impl impl);
CG_API cg_cuda_impl cg_cuda_get_impl(void);

CG_EXTERN_C_END
#endif
