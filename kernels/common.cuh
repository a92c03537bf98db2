// Shared device helpers for kernels/*.cu: launch sizing, fixed-order warp/block
// reductions (deterministic: no atomics on float sums); dtype load/store comes from
// src/dtype_convert.h, the same code the CPU backend runs (bit-exact f16/bf16 rounding).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "cgrad/common.h"
#include "cuda/cuda_kernels.h"
#include "dtype_convert.h"

#define CG_THREADS 256

static inline unsigned cg_blocks_for(int64_t n, int per_thread = 1) {
    int64_t b = (n + (int64_t)CG_THREADS * per_thread - 1) / ((int64_t)CG_THREADS * per_thread);
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20; // grid-stride loops cover the rest
    return (unsigned)b;
}

#define CG_GRID_STRIDE(i, n)                                                                                  \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

// Dispatch a templated launch on dt (f32/f64); anything else is an invalid value.
#define CG_DISPATCH_FLOAT(dt, T, ...)                                                                         \
    do {                                                                                                      \
        if ((dt) == CG_F32) {                                                                                 \
            typedef float T;                                                                                  \
            __VA_ARGS__;                                                                                      \
        } else if ((dt) == CG_F64) {                                                                          \
            typedef double T;                                                                                 \
            __VA_ARGS__;                                                                                      \
        } else {                                                                                              \
            return cudaErrorInvalidValue;                                                                     \
        }                                                                                                     \
    } while (0)

static inline bool cg_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// ---- reductions in a fixed order ----

template <typename T> __device__ __forceinline__ T cg_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T> __device__ __forceinline__ T cg_warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) {
        T w = __shfl_xor_sync(0xffffffffu, v, o);
        v = (w > v || w != w) ? w : v; // NaN wins, so a NaN row stays NaN
    }
    return v;
}

// Block-wide sum; every thread gets the result. `sh` holds 32 values. blockDim.x is a
// multiple of 32. Order: warp butterflies, then warp 0 over the warp partials.
template <typename T> __device__ T cg_block_sum(T v, T *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cg_warp_sum(v);
    __syncthreads(); // sh may still be read from a previous call
    if (lane == 0) sh[w] = v;
    __syncthreads();
    T r = lane < nw ? sh[lane] : T(0);
    r = cg_warp_sum(r);
    return r;
}

template <typename T> __device__ T cg_block_max(T v, T *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cg_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    T r = lane < nw ? sh[lane] : T(-INFINITY);
    r = cg_warp_max(r);
    return r;
}

// 1 / sqrt(v): IEEE square root and division (not the approximate rsqrt)
__device__ __forceinline__ float frsqrt(float v) { return 1.0f / sqrtf(v); }
__device__ __forceinline__ double frsqrt(double v) { return 1.0 / sqrt(v); }

// ---- dtype conversion: src/dtype_convert.h, shared with the CPU backend ----
