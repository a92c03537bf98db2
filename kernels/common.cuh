// Shared device helpers for kernels/*.cu: launch sizing, fixed-order warp/block
// reductions (deterministic: no atomics on float sums), dtype load/store with the same
// conversion rules as src/cpu/convert_cpu.c (bit-exact f16/bf16 rounding).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "cgrad/common.h"
#include "cuda/cuda_kernels.h"

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

// ---- dtype conversion, same rules as convert_cpu.c ----

__device__ __forceinline__ uint16_t cg_f32_to_bf16(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__device__ __forceinline__ float cg_bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

__device__ __forceinline__ uint16_t cg_f32_to_f16(float f) {
    uint32_t u = __float_as_uint(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        if (a < 0x33000000u) return sign;
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = a - 0x38000000u;
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

__device__ __forceinline__ float cg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return __uint_as_float(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

__device__ __forceinline__ bool cg_is_int(int dt) { return dt == CG_I32 || dt == CG_I64 || dt == CG_U8; }

__device__ __forceinline__ double cg_load_f(const char *p, int dt) {
    switch (dt) {
    case CG_F32: return *(const float *)p;
    case CG_F64: return *(const double *)p;
    case CG_F16: return cg_f16_to_f32(*(const uint16_t *)p);
    case CG_BF16: return cg_bf16_to_f32(*(const uint16_t *)p);
    case CG_I32: return *(const int32_t *)p;
    case CG_I64: return (double)*(const int64_t *)p;
    case CG_U8: return *(const uint8_t *)p;
    default: return 0.0;
    }
}

__device__ __forceinline__ int64_t cg_load_i(const char *p, int dt) {
    switch (dt) {
    case CG_I32: return *(const int32_t *)p;
    case CG_I64: return *(const int64_t *)p;
    case CG_U8: return *(const uint8_t *)p;
    default: return 0;
    }
}

__device__ __forceinline__ void cg_store_i(char *p, int dt, int64_t v) {
    switch (dt) {
    case CG_I32: *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)v; break;
    case CG_I64: *(int64_t *)p = v; break;
    case CG_U8: *(uint8_t *)p = (uint8_t)(uint64_t)v; break;
    default: break;
    }
}

__device__ __forceinline__ void cg_store_f(char *p, int dt, double v) {
    switch (dt) {
    case CG_F32: *(float *)p = (float)v; break;
    case CG_F64: *(double *)p = v; break;
    case CG_F16: *(uint16_t *)p = cg_f32_to_f16((float)v); break;
    case CG_BF16: *(uint16_t *)p = cg_f32_to_bf16((float)v); break;
    case CG_I32: {
        double c = v != v ? 0.0 : v < -2147483648.0 ? -2147483648.0 : v > 2147483647.0 ? 2147483647.0 : v;
        *(int32_t *)p = (int32_t)c;
        break;
    }
    case CG_U8: {
        double c = v != v ? 0.0 : v < 0.0 ? 0.0 : v > 255.0 ? 255.0 : v;
        *(uint8_t *)p = (uint8_t)c;
        break;
    }
    case CG_I64: {
        int64_t r;
        if (v != v) r = 0;
        else if (v >= 9223372036854775807.0) r = INT64_MAX;
        else if (v <= -9223372036854775808.0) r = INT64_MIN;
        else r = (int64_t)v;
        *(int64_t *)p = r;
        break;
    }
    default: break;
    }
}
