// Elementwise kernels: broadcast binary ops (forward and per-position gradients), scale,
// exp/log/sqrt and the activations (forward and backward), dropout, fill, strided copy
// with dtype conversion, Philox rand, axpy/scal and the fused optimizer update.
//
// Accumulate rule: every output is written (=), except axpy / scal / optim which update
// their buffers in place (+= / *= / the optimizer rule).
// Bandwidth target: one read of each input and one write of each output per element
// (unary f32 fwd: 8 bytes/elem; binary: 12; unary bwd: 12; dropout: 8 (the mask is
// regenerated from Philox, never stored); optim Adam f32: 7 x 4 bytes/elem). Same-shape
// f32 paths use 16-byte float4 accesses when every pointer is 16-byte aligned and n % 4 == 0.
// Math: f32 in float (accurate libdevice functions, not the __fast intrinsics), f64 in
// double; rand, axpy, scal and optim compute in double like the CPU reference.
#include "common.cuh"
#include "philox.h"

// ---------------------------------------------------------------- binary

template <typename T, int OP> __device__ __forceinline__ T bin_op(T a, T b) {
    if (OP == CG_CUDA_ADD) return a + b;
    if (OP == CG_CUDA_SUB) return a - b;
    if (OP == CG_CUDA_MUL) return a * b;
    return a / b;
}

// position -> (ia, ib) through the merged broadcast geometry
__device__ __forceinline__ void bcast_index(const cg_cuda_bcast &g, int64_t pos, int64_t &ia, int64_t &ib) {
    ia = 0;
    ib = 0;
    for (int d = g.nd - 1; d >= 0; d--) {
        int64_t c = pos % g.shape[d];
        pos /= g.shape[d];
        ia += c * g.sa[d];
        ib += c * g.sb[d];
    }
}

template <typename T, int OP>
__global__ void binary_kernel(cg_cuda_bcast g, const T *__restrict__ a, const T *__restrict__ b, T *__restrict__ y) {
    CG_GRID_STRIDE(pos, g.n) {
        int64_t ia, ib;
        bcast_index(g, pos, ia, ib);
        y[pos] = bin_op<T, OP>(a[ia], b[ib]);
    }
}

// same shape, dense: float4
template <int OP> __global__ void binary_vec4_kernel(int64_t n4, const float4 *a, const float4 *b, float4 *y) {
    CG_GRID_STRIDE(i, n4) {
        float4 u = a[i], v = b[i], r;
        r.x = bin_op<float, OP>(u.x, v.x);
        r.y = bin_op<float, OP>(u.y, v.y);
        r.z = bin_op<float, OP>(u.z, v.z);
        r.w = bin_op<float, OP>(u.w, v.w);
        y[i] = r;
    }
}

template <typename T, int OP> static cudaError_t binary_launch(const cg_cuda_bcast *g, const T *a, const T *b, T *y,
                                                               cudaStream_t s) {
    bool dense = g->nd == 1 && g->sa[0] == 1 && g->sb[0] == 1;
    if (sizeof(T) == 4 && dense && g->n % 4 == 0 && cg_aligned16(a) && cg_aligned16(b) && cg_aligned16(y)) {
        int64_t n4 = g->n / 4;
        binary_vec4_kernel<OP><<<cg_blocks_for(n4), CG_THREADS, 0, s>>>(n4, (const float4 *)a, (const float4 *)b,
                                                                         (float4 *)y);
    } else {
        binary_kernel<T, OP><<<cg_blocks_for(g->n), CG_THREADS, 0, s>>>(*g, a, b, y);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_binary(int dt, int op, const cg_cuda_bcast *g, const void *a, const void *b, void *y,
                                      cudaStream_t s) {
    if (g->n == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        const T *pa = (const T *)a, *pb = (const T *)b;
        T *py = (T *)y;
        switch (op) {
        case CG_CUDA_ADD: return binary_launch<T, CG_CUDA_ADD>(g, pa, pb, py, s);
        case CG_CUDA_SUB: return binary_launch<T, CG_CUDA_SUB>(g, pa, pb, py, s);
        case CG_CUDA_MUL: return binary_launch<T, CG_CUDA_MUL>(g, pa, pb, py, s);
        case CG_CUDA_DIV: return binary_launch<T, CG_CUDA_DIV>(g, pa, pb, py, s);
        default: return cudaErrorInvalidValue;
        }
    });
    return cudaErrorInvalidValue;
}

// d(a op b) per output position: add (g, g), sub (g, -g), mul (g b, g a), div (g/b, -g a/b^2)
template <typename T>
__global__ void binary_bwd_kernel(cg_cuda_bcast g, int op, const T *__restrict__ gout, const T *__restrict__ a,
                                  const T *__restrict__ b, T *__restrict__ ga, T *__restrict__ gb) {
    CG_GRID_STRIDE(pos, g.n) {
        T gv = gout[pos], ca, cb;
        if (op == CG_CUDA_ADD) {
            ca = gv;
            cb = gv;
        } else if (op == CG_CUDA_SUB) {
            ca = gv;
            cb = -gv;
        } else {
            int64_t ia, ib;
            bcast_index(g, pos, ia, ib);
            T av = a[ia], bv = b[ib];
            if (op == CG_CUDA_MUL) {
                ca = gv * bv;
                cb = gv * av;
            } else {
                ca = gv / bv;
                // f32: b*b would underflow below |b| ~ 1e-23 and overflow above ~ 2e19 where the
                // CPU's double does not; f64 keeps the CPU's formula
                if constexpr (sizeof(T) == 4) cb = -(gv / bv) * (av / bv);
                else cb = -gv * av / (bv * bv);
            }
        }
        if (ga) ga[pos] = ca;
        if (gb) gb[pos] = cb;
    }
}

extern "C" cudaError_t cg_cuda_binary_bwd(int dt, int op, const cg_cuda_bcast *g, const void *gout, const void *a,
                                          const void *b, void *ga_full, void *gb_full, cudaStream_t s) {
    if (g->n == 0 || (!ga_full && !gb_full)) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        binary_bwd_kernel<T><<<cg_blocks_for(g->n), CG_THREADS, 0, s>>>(*g, op, (const T *)gout, (const T *)a,
                                                                         (const T *)b, (T *)ga_full, (T *)gb_full);
    });
    return cudaGetLastError();
}

// ---------------------------------------------------------------- scale

// y = alpha x (+ beta) in double with explicit roundings (no fma), then rounded to T: the
// CPU's (T)(alpha * (double)x + beta) (forward) and (T)(alpha * (double)g) (backward, no
// add: -0 + 0 would be +0) bit for bit; alpha and beta keep their double value (a float alpha
// would overflow or vanish where the CPU's does not).
template <typename T, bool ADD> __device__ __forceinline__ T scale_one(T x, double alpha, double beta) {
    double p = __dmul_rn(alpha, (double)x);
    return (T)(ADD ? __dadd_rn(p, beta) : p);
}

template <typename T, bool ADD>
__global__ void scale_kernel(int64_t n, double alpha, double beta, const T *__restrict__ x, T *__restrict__ y) {
    CG_GRID_STRIDE(i, n) y[i] = scale_one<T, ADD>(x[i], alpha, beta);
}

template <bool ADD> __global__ void scale_vec4_kernel(int64_t n4, double alpha, double beta, const float4 *x, float4 *y) {
    CG_GRID_STRIDE(i, n4) {
        float4 v = x[i];
        v.x = scale_one<float, ADD>(v.x, alpha, beta);
        v.y = scale_one<float, ADD>(v.y, alpha, beta);
        v.z = scale_one<float, ADD>(v.z, alpha, beta);
        v.w = scale_one<float, ADD>(v.w, alpha, beta);
        y[i] = v;
    }
}

template <bool ADD> static cudaError_t scale_launch(int dt, int64_t n, double alpha, double beta, const void *x, void *y,
                                                     cudaStream_t s) {
    if (dt == CG_F32 && n % 4 == 0 && cg_aligned16(x) && cg_aligned16(y)) {
        scale_vec4_kernel<ADD><<<cg_blocks_for(n / 4), CG_THREADS, 0, s>>>(n / 4, alpha, beta, (const float4 *)x,
                                                                           (float4 *)y);
        return cudaGetLastError();
    }
    CG_DISPATCH_FLOAT(dt, T, {
        scale_kernel<T, ADD><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, alpha, beta, (const T *)x, (T *)y);
    });
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_scale(int dt, int64_t n, double alpha, double beta, int add_beta, const void *x, void *y,
                                     cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    return add_beta ? scale_launch<true>(dt, n, alpha, beta, x, y, s) : scale_launch<false>(dt, n, alpha, beta, x, y, s);
}

// ---------------------------------------------------------------- unary

template <typename T> struct M; // math in T
template <> struct M<float> {
    static __device__ __forceinline__ float exp_(float v) { return expf(v); }
    static __device__ __forceinline__ float log_(float v) { return logf(v); }
    static __device__ __forceinline__ float sqrt_(float v) { return sqrtf(v); }
    static __device__ __forceinline__ float tanh_(float v) { return tanhf(v); }
    static __device__ __forceinline__ float erf_(float v) { return erff(v); }
    static __device__ __forceinline__ float log1p_(float v) { return log1pf(v); }
};
template <> struct M<double> {
    static __device__ __forceinline__ double exp_(double v) { return exp(v); }
    static __device__ __forceinline__ double log_(double v) { return log(v); }
    static __device__ __forceinline__ double sqrt_(double v) { return sqrt(v); }
    static __device__ __forceinline__ double tanh_(double v) { return tanh(v); }
    static __device__ __forceinline__ double erf_(double v) { return erf(v); }
    static __device__ __forceinline__ double log1p_(double v) { return log1p(v); }
};

#define CG_SQRT_2_OVER_PI 0.79788456080286535588
#define CG_INV_SQRT2 0.70710678118654752440
#define CG_INV_SQRT_2PI 0.39894228040143267794

template <typename T, int FN> __device__ __forceinline__ T unary_f(T v, T slope) {
    typedef M<T> m;
    switch (FN) {
    case CG_CUDA_EXP: return m::exp_(v);
    case CG_CUDA_LOG: return m::log_(v);
    case CG_CUDA_SQRT: return m::sqrt_(v);
    case CG_CUDA_SIGMOID: return v >= T(0) ? T(1) / (T(1) + m::exp_(-v)) : m::exp_(v) / (T(1) + m::exp_(v));
    case CG_CUDA_TANH: return m::tanh_(v);
    case CG_CUDA_RELU: return v <= T(0) ? T(0) : v; // NaN passes through
    case CG_CUDA_LEAKY_RELU: return v > T(0) ? v : slope * v;
    case CG_CUDA_GELU_ERF: return T(0.5) * v * (T(1) + m::erf_(v * T(CG_INV_SQRT2)));
    default: { // GELU_TANH
        T k = T(CG_SQRT_2_OVER_PI);
        return T(0.5) * v * (T(1) + m::tanh_(k * (v + T(0.044715) * v * v * v)));
    }
    }
}

// gv * f'(.) given the saved value s (output for exp/sqrt/sigmoid/tanh, else input)
template <typename T, int FN> __device__ __forceinline__ T unary_df(T gv, T v, T slope) {
    typedef M<T> m;
    switch (FN) {
    case CG_CUDA_EXP: return gv * v;
    case CG_CUDA_LOG: return gv / v;
    case CG_CUDA_SQRT: return gv / (T(2) * v);
    case CG_CUDA_SIGMOID: return gv * v * (T(1) - v);
    case CG_CUDA_TANH: return gv * (T(1) - v * v);
    case CG_CUDA_RELU: return v > T(0) ? gv : T(0);
    case CG_CUDA_LEAKY_RELU: return v > T(0) ? gv : gv * slope;
    case CG_CUDA_GELU_ERF:
        return gv * (T(0.5) * (T(1) + m::erf_(v * T(CG_INV_SQRT2))) + v * T(CG_INV_SQRT_2PI) * m::exp_(T(-0.5) * v * v));
    default: {
        T k = T(CG_SQRT_2_OVER_PI);
        T t = m::tanh_(k * (v + T(0.044715) * v * v * v)), sech2 = T(1) - t * t;
        T du = k * (T(1) + T(3) * T(0.044715) * v * v);
        // t saturated: the second term is 0, also where du overflows (f32: |v| > ~1.8e19)
        return gv * (T(0.5) * (T(1) + t) + (sech2 == T(0) ? T(0) : T(0.5) * v * sech2 * du));
    }
    }
}

template <typename T, int FN> __global__ void unary_kernel(int64_t n, T slope, const T *__restrict__ x, T *__restrict__ y) {
    CG_GRID_STRIDE(i, n) y[i] = unary_f<T, FN>(x[i], slope);
}

template <int FN> __global__ void unary_vec4_kernel(int64_t n4, float slope, const float4 *x, float4 *y) {
    CG_GRID_STRIDE(i, n4) {
        float4 v = x[i];
        v.x = unary_f<float, FN>(v.x, slope);
        v.y = unary_f<float, FN>(v.y, slope);
        v.z = unary_f<float, FN>(v.z, slope);
        v.w = unary_f<float, FN>(v.w, slope);
        y[i] = v;
    }
}

template <typename T, int FN>
__global__ void unary_bwd_kernel(int64_t n, T slope, const T *__restrict__ g, const T *__restrict__ sv, T *__restrict__ gi) {
    CG_GRID_STRIDE(i, n) gi[i] = unary_df<T, FN>(g[i], sv[i], slope);
}

template <int FN> __global__ void unary_bwd_vec4_kernel(int64_t n4, float slope, const float4 *g, const float4 *sv, float4 *gi) {
    CG_GRID_STRIDE(i, n4) {
        float4 a = g[i], v = sv[i], r;
        r.x = unary_df<float, FN>(a.x, v.x, slope);
        r.y = unary_df<float, FN>(a.y, v.y, slope);
        r.z = unary_df<float, FN>(a.z, v.z, slope);
        r.w = unary_df<float, FN>(a.w, v.w, slope);
        gi[i] = r;
    }
}

template <typename T, int FN> static cudaError_t unary_launch(int64_t n, double slope, const void *x, void *y, cudaStream_t s) {
    if (sizeof(T) == 4 && n % 4 == 0 && cg_aligned16(x) && cg_aligned16(y))
        unary_vec4_kernel<FN><<<cg_blocks_for(n / 4), CG_THREADS, 0, s>>>(n / 4, (float)slope, (const float4 *)x,
                                                                           (float4 *)y);
    else
        unary_kernel<T, FN><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, (T)slope, (const T *)x, (T *)y);
    return cudaGetLastError();
}

template <typename T, int FN>
static cudaError_t unary_bwd_launch(int64_t n, double slope, const void *g, const void *sv, void *gi, cudaStream_t s) {
    if (sizeof(T) == 4 && n % 4 == 0 && cg_aligned16(g) && cg_aligned16(sv) && cg_aligned16(gi))
        unary_bwd_vec4_kernel<FN><<<cg_blocks_for(n / 4), CG_THREADS, 0, s>>>(n / 4, (float)slope, (const float4 *)g,
                                                                               (const float4 *)sv, (float4 *)gi);
    else
        unary_bwd_kernel<T, FN><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, (T)slope, (const T *)g, (const T *)sv,
                                                                         (T *)gi);
    return cudaGetLastError();
}

#define CG_UNARY_SWITCH(fn, CALL)                                                                            \
    switch (fn) {                                                                                             \
    case CG_CUDA_EXP: return CALL(CG_CUDA_EXP);                                                               \
    case CG_CUDA_LOG: return CALL(CG_CUDA_LOG);                                                               \
    case CG_CUDA_SQRT: return CALL(CG_CUDA_SQRT);                                                             \
    case CG_CUDA_SIGMOID: return CALL(CG_CUDA_SIGMOID);                                                       \
    case CG_CUDA_TANH: return CALL(CG_CUDA_TANH);                                                             \
    case CG_CUDA_RELU: return CALL(CG_CUDA_RELU);                                                             \
    case CG_CUDA_LEAKY_RELU: return CALL(CG_CUDA_LEAKY_RELU);                                                 \
    case CG_CUDA_GELU_ERF: return CALL(CG_CUDA_GELU_ERF);                                                     \
    case CG_CUDA_GELU_TANH: return CALL(CG_CUDA_GELU_TANH);                                                   \
    default: return cudaErrorInvalidValue;                                                                    \
    }

extern "C" cudaError_t cg_cuda_unary(int dt, int fn, int64_t n, double slope, const void *x, void *y, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
#define CALL(F) unary_launch<T, F>(n, slope, x, y, s)
    CG_DISPATCH_FLOAT(dt, T, CG_UNARY_SWITCH(fn, CALL));
#undef CALL
    return cudaErrorInvalidValue;
}

extern "C" cudaError_t cg_cuda_unary_bwd(int dt, int fn, int64_t n, double slope, const void *g, const void *saved,
                                         void *gi, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
#define CALL(F) unary_bwd_launch<T, F>(n, slope, g, saved, gi, s)
    CG_DISPATCH_FLOAT(dt, T, CG_UNARY_SWITCH(fn, CALL));
#undef CALL
    return cudaErrorInvalidValue;
}

// ---------------------------------------------------------------- dropout

// One thread per Philox block of 4 elements (the CPU loop's grouping): y = keep ? x*sc : 0
template <typename T>
__global__ void dropout_kernel(int64_t n, float pf, T sc, uint64_t seed, uint64_t offset, const uint64_t *shift,
                               const T *__restrict__ x, T *__restrict__ y) {
    if (shift) offset += *shift; // a replayed CUDA graph: this replay's advance of the stream
    int64_t nb = (n + 3) / 4;
    CG_GRID_STRIDE(b, nb) {
        cg_philox4 r = cg_philox4x32_10(offset + (uint64_t)b, seed);
        int64_t i0 = b * 4;
        if (sizeof(T) == 4 && i0 + 4 <= n && ((uintptr_t)(x + i0) & 15u) == 0 && ((uintptr_t)(y + i0) & 15u) == 0) {
            float4 v = *(const float4 *)(x + i0), o;
            o.x = cg_u01(r.v[0]) >= pf ? v.x * (float)sc : 0.0f;
            o.y = cg_u01(r.v[1]) >= pf ? v.y * (float)sc : 0.0f;
            o.z = cg_u01(r.v[2]) >= pf ? v.z * (float)sc : 0.0f;
            o.w = cg_u01(r.v[3]) >= pf ? v.w * (float)sc : 0.0f;
            *(float4 *)(y + i0) = o;
        } else {
            for (int j = 0; j < 4 && i0 + j < n; j++) y[i0 + j] = cg_u01(r.v[j]) >= pf ? x[i0 + j] * sc : T(0);
        }
    }
}

extern "C" cudaError_t cg_cuda_dropout(int dt, int64_t n, double p, uint64_t seed, uint64_t offset,
                                       const uint64_t *shift, const void *x, void *y, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        T sc = (T)(p < 1.0 ? 1.0 / (1.0 - p) : 0.0);
        dropout_kernel<T><<<cg_blocks_for((n + 3) / 4), CG_THREADS, 0, s>>>(n, (float)p, sc, seed, offset,
                                                                             shift, (const T *)x, (T *)y);
    });
    return cudaGetLastError();
}

// ---------------------------------------------------------------- fill / copy

__device__ __forceinline__ int esize(int dt) {
    return dt == CG_F64 || dt == CG_I64 ? 8 : dt == CG_F32 || dt == CG_I32 ? 4 : dt == CG_U8 ? 1 : 2;
}

__global__ void fill_f32_kernel(int64_t n, float v, float *y) {
    CG_GRID_STRIDE(i, n) y[i] = v;
}

__global__ void fill_any_kernel(int64_t n, int dt, double v, char *y) {
    int es = esize(dt);
    CG_GRID_STRIDE(i, n) cg_store_f(y + i * es, dt, v);
}

extern "C" cudaError_t cg_cuda_fill(int dt, int64_t n, double value, void *y, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    if (dt == CG_F32)
        fill_f32_kernel<<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, (float)value, (float *)y);
    else
        fill_any_kernel<<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, dt, value, (char *)y);
    return cudaGetLastError();
}

__global__ void copy_strided_kernel(cg_cuda_copy_geom g, int ddt, int sdt, char *dst, const char *src) {
    int des = esize(ddt), ses = esize(sdt);
    bool ints = cg_dtype_is_int(ddt) && cg_dtype_is_int(sdt);
    CG_GRID_STRIDE(pos, g.n) {
        int64_t p = pos, od = 0, os = 0;
        for (int d = g.nd - 1; d >= 0; d--) {
            int64_t c = p % g.shape[d];
            p /= g.shape[d];
            od += c * g.sd[d];
            os += c * g.ss[d];
        }
        char *dp = dst + od * des;
        const char *sp = src + os * ses;
        if (ddt == sdt) {
            switch (des) {
            case 8: *(uint64_t *)dp = *(const uint64_t *)sp; break;
            case 4: *(uint32_t *)dp = *(const uint32_t *)sp; break;
            case 2: *(uint16_t *)dp = *(const uint16_t *)sp; break;
            default: *dp = *sp; break;
            }
        } else if (ints) {
            cg_store_i(dp, ddt, cg_load_i(sp, sdt));
        } else {
            cg_store_f(dp, ddt, cg_load_f(sp, sdt));
        }
    }
}

extern "C" cudaError_t cg_cuda_copy_strided(int ddt, int sdt, const cg_cuda_copy_geom *g, void *dst, const void *src,
                                            cudaStream_t s) {
    if (g->n == 0) return cudaSuccess;
    copy_strided_kernel<<<cg_blocks_for(g->n), CG_THREADS, 0, s>>>(*g, ddt, sdt, (char *)dst, (const char *)src);
    return cudaGetLastError();
}

// ---------------------------------------------------------------- rand

// One thread per Philox block: element i uses word i % 4 of counter offset + i / 4.
// Normal: Box-Muller on word pairs (2k, 2k+1) of a block, as rand_cpu does. Double math.
template <typename T>
__global__ void rand_kernel(int64_t n, int dist, double a, double b, uint64_t seed, uint64_t offset, T *y) {
    int64_t nb = (n + 3) / 4;
    CG_GRID_STRIDE(blk, nb) {
        cg_philox4 r = cg_philox4x32_10(offset + (uint64_t)blk, seed);
        int64_t i0 = blk * 4;
        if (dist == 0) {
            // explicit _rn ops: nvcc would contract a + (b-a)*u into one fma, which rounds
            // once where the CPU (no contraction in ISO C11 mode) rounds twice
            for (int j = 0; j < 4 && i0 + j < n; j++)
                y[i0 + j] = (T)__dadd_rn(a, __dmul_rn(b - a, (double)cg_u01(r.v[j])));
        } else {
            for (int j = 0; j < 4 && i0 + j < n; j += 2) {
                double u1 = cg_u01_open0(r.v[j]), u2 = cg_u01(r.v[j + 1]);
                double rad = sqrt(-2.0 * log(u1)), th = 2.0 * 3.14159265358979323846 * u2;
                y[i0 + j] = (T)(a + b * rad * cos(th));
                if (i0 + j + 1 < n) y[i0 + j + 1] = (T)(a + b * rad * sin(th));
            }
        }
    }
}

extern "C" cudaError_t cg_cuda_rand(int dt, int64_t n, int dist, double a, double b, uint64_t seed, uint64_t offset,
                                    void *y, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        rand_kernel<T><<<cg_blocks_for((n + 3) / 4), CG_THREADS, 0, s>>>(n, dist, a, b, seed, offset, (T *)y);
    });
    return cudaGetLastError();
}

// ---------------------------------------------------------------- axpy / scal

template <typename T> __global__ void axpy_kernel(int64_t n, double alpha, const T *__restrict__ x, T *__restrict__ y) {
    // rounded twice like the CPU's ISO C (nvcc would contract into one fma)
    CG_GRID_STRIDE(i, n) y[i] = (T)__dadd_rn((double)y[i], __dmul_rn(alpha, (double)x[i]));
}

template <typename T> __global__ void scal_kernel(int64_t n, double alpha, T *y) {
    CG_GRID_STRIDE(i, n) y[i] = (T)((double)y[i] * alpha);
}

extern "C" cudaError_t cg_cuda_axpy(int dt, int64_t n, double alpha, const void *x, void *y, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        axpy_kernel<T><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, alpha, (const T *)x, (T *)y);
    });
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_scal(int dt, int64_t n, double alpha, void *y, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, { scal_kernel<T><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, alpha, (T *)y); });
    return cudaGetLastError();
}

// ---------------------------------------------------------------- optimizer

// One update of every element: the rules of src/optim_math.h, shared with the CPU backend
// (same expression, explicitly rounded operations), double math, stored in T.
template <typename T>
__global__ void optim_kernel(int64_t n, cg_optim_coef k, const cg_optim_coef *k_dev, T *__restrict__ p,
                             const T *__restrict__ g, T *__restrict__ m, T *__restrict__ v, const double *gate,
                             const double *sumsq, double clip_max) {
    if (k_dev) k = *k_dev; // a replayed CUDA graph: this replay's coefficients
    double gs;
    if (!cg_optim_gate(gate, sumsq, clip_max, &gs)) return; // the whole update is skipped
    bool scaled = gs != 1.0;
    CG_GRID_STRIDE(i, n) {
        double pi = (double)p[i];
        double gi = scaled ? (double)(T)__dmul_rn((double)g[i], gs) : (double)g[i]; // as a scaling pass
        if (k.kind == 0) {
            double bi = m ? (double)m[i] : 0.0;
            cg_sgd_elem(&k, &pi, gi, &bi, m != NULL);
            if (m) m[i] = (T)bi;
        } else {
            double mi = (double)m[i], vi = (double)v[i];
            cg_adam_elem(&k, &pi, gi, &mi, &vi);
            m[i] = (T)mi;
            v[i] = (T)vi;
        }
        p[i] = (T)pi;
    }
}

extern "C" cudaError_t cg_cuda_optim(int dt, int64_t n, const cg_optim_coef *a, const cg_optim_coef *a_dev, void *p,
                                     const void *g, void *m, void *v, const double *gate, const double *sumsq,
                                     double clip_max, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        optim_kernel<T><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, *a, a_dev, (T *)p, (const T *)g, (T *)m, (T *)v,
                                                                gate, sumsq, clip_max);
    });
    return cudaGetLastError();
}

// ---------------------------------------------------------------- graph parameters

// dst[0 .. n) = the bytes passed by value: what a replayed CUDA graph reads as this replay's
// scalars, written on the stream before the replay (no host buffer to keep alive)
__global__ void set_bytes_kernel(cg_cuda_bytes b, int n, unsigned char *dst) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = b.b[i];
}

// dst = src when *gate is finite (every thread reads the gate: no ordering needed)
__global__ void copy_gated_kernel(int64_t n, const unsigned char *__restrict__ src, unsigned char *__restrict__ dst,
                                  const double *gate) {
    if (!isfinite(*gate)) return;
    CG_GRID_STRIDE(i, n) dst[i] = src[i];
}

extern "C" cudaError_t cg_cuda_copy_gated(void *dst, const void *src, size_t nbytes, const double *gate,
                                          cudaStream_t s) {
    if (nbytes == 0) return cudaSuccess;
    copy_gated_kernel<<<cg_blocks_for((int64_t)nbytes), CG_THREADS, 0, s>>>((int64_t)nbytes, (const unsigned char *)src,
                                                                           (unsigned char *)dst, gate);
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_set_bytes(void *dst, const void *src, size_t n, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    if (n > sizeof(cg_cuda_bytes)) return cudaErrorInvalidValue;
    cg_cuda_bytes b;
    memcpy(b.b, src, n);
    set_bytes_kernel<<<1, 128, 0, s>>>(b, (int)n, (unsigned char *)dst);
    return cudaGetLastError();
}
