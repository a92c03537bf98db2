/* The include/cgrad/cuda.h API in a build without the CUDA backend: every call says so.
 * Compiled only when CG_HAVE_CUDA is off (CMakeLists.txt), so programs using the header
 * link in both builds. */
#include "internal.h"
#include "cgrad/cuda.h"

#ifndef CG_HAVE_CUDA

#define NO_CUDA(fn) CG_FAIL(CG_E_UNSUPPORTED, "%s: this cgrad was built without CUDA (CG_CUDA=OFF or no toolkit)", fn)

const char *cg_cuda_availability(void) { return "built without CUDA"; }

cg_status cg_cuda_device_info_get(int dev, cg_cuda_device_info *out) {
    (void)dev;
    (void)out;
    return NO_CUDA("cg_cuda_device_info_get");
}

cg_status cg_cuda_synchronize(int dev) {
    (void)dev;
    return NO_CUDA("cg_cuda_synchronize");
}

cg_status cg_cuda_memory_stats(int dev, cg_cuda_mem_stats *out) {
    (void)dev;
    (void)out;
    return NO_CUDA("cg_cuda_memory_stats");
}

cg_status cg_cuda_reset_peak(int dev) {
    (void)dev;
    return NO_CUDA("cg_cuda_reset_peak");
}

cg_status cg_cuda_empty_cache(int dev) {
    (void)dev;
    return NO_CUDA("cg_cuda_empty_cache");
}

cg_status cg_cuda_set_caching(int dev, int enabled) {
    (void)dev;
    (void)enabled;
    return NO_CUDA("cg_cuda_set_caching");
}

cg_status cg_cuda_get_caching(int dev, int *enabled) {
    (void)dev;
    (void)enabled;
    return NO_CUDA("cg_cuda_get_caching");
}

cg_status cg_cuda_set_matmul_precision(cg_cuda_matmul_precision p) {
    (void)p;
    return NO_CUDA("cg_cuda_set_matmul_precision");
}

cg_cuda_matmul_precision cg_cuda_get_matmul_precision(void) { return CG_MATMUL_FP32; }

cg_status cg_cuda_set_impl(cg_cuda_impl impl) {
    (void)impl;
    return NO_CUDA("cg_cuda_set_impl");
}

cg_cuda_impl cg_cuda_get_impl(void) { return CG_IMPL_OWN; }

#else
typedef int cg_cuda_stubs_unused; /* ISO C forbids an empty translation unit */
#endif
