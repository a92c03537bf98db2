// Row kernels: softmax / log-softmax (fwd, bwd), fused softmax cross-entropy (fwd, bwd),
// LayerNorm (fwd, bwd); and the per-channel BatchNorm (fwd train/eval, bwd).
// Data errors: the cross-entropy forward records an out-of-range label in the context's
// sticky error word (no host sync; reported at the next one, see docs/cuda.md "Errors").
//
// Layout: short rows (d <= 1024) run a warp per row with the row in registers (one read
// of global memory); f32 rows up to 8192 (d % 4 == 0, aligned) a block per row with the
// row in registers (row_regs.cuh: softmax, softmax-CE, LayerNorm forward); other long rows
// a block per row that keeps the row in shared memory when it fits (d * sizeof(T) <= 40
// KiB), else re-reads it (L2 hits).
// Determinism: fixed-order reductions only. LayerNorm's dgamma/dbeta and BatchNorm's
// statistics are per-block partials summed in block order by a second kernel.
// Accumulate rule: every output written (=); running_mean/var updated in place.
// Bandwidth targets (f32, R rows x C columns):
//   softmax fwd 2RC*4 (read x, write y); bwd 3RC*4 (y, dy, dx)
//   softmax_ce fwd RC*4 (+RC*4 when the gradient is written); bwd 2RC*4
//   layernorm fwd 2RC*4 (+8R for mean/rstd); bwd 3RC*4 (x, dy, dx) + partials
//   batchnorm train fwd 3RC*4 (x twice: statistics, then normalise; y once); eval 2RC*4;
//   bwd 5RC*4 (x, dy for the sums; x, dy again and dx).
#include "common.cuh"

#define SMEM_ROW_BYTES (40 * 1024) /* + static shared memory stays under the 48 KiB default */

// f32 rows of 1024 < d <= 8192, d % 4 == 0, in registers (kernels/row_regs.cuh, included at
// the end): false when the shape does not fit (nothing launched; the block kernels run),
// true when launched, with the launch status in *err
static bool rowreg_softmax(int logsm, int64_t rows, int64_t d, const float *x, float *y, cudaStream_t st,
                           cudaError_t *err);
static bool rowreg_softmax_bwd(int logsm, int64_t rows, int64_t d, const float *y, const float *g, float *dx,
                               cudaStream_t st, cudaError_t *err);
static bool rowreg_softmax_ce(int64_t rows, int64_t C, const float *x, const void *labels, int lab64, float ls, float gs,
                              float *loss, float *grad, cg_cuda_err_sink e, cudaStream_t st, cudaError_t *err);
static bool rowreg_layernorm(int64_t rows, int64_t d, float eps, const float *x, const float *gamma, const float *beta,
                             float *y, float *mean, float *rstd, cudaStream_t st, cudaError_t *err);
static bool rowreg_layernorm_bwd(int64_t rows, int64_t d, int64_t G, const float *x, const float *g, const float *gamma,
                                 const float *mean, const float *rstd, float *dx, float *part, int want,
                                 cudaStream_t st, cudaError_t *err);

// ---------------------------------------------------------------- online max/sum

__device__ __forceinline__ float fexp(float v) { return expf(v); }
__device__ __forceinline__ double fexp(double v) { return exp(v); }
__device__ __forceinline__ float flog(float v) { return logf(v); }
__device__ __forceinline__ double flog(double v) { return log(v); }
__device__ __forceinline__ float frsqrt(float v) { return 1.0f / sqrtf(v); }
__device__ __forceinline__ double frsqrt(double v) { return 1.0 / sqrt(v); }

// f32 LayerNorm statistics are computed in float; the CPU computes them in double. They part
// ways when the sum of squared deviations leaves float's range: it overflows once |x - mean|
// passes ~1.8e19 (the row would come out 0), or all but vanishes (constant or tiny rows,
// where eps may be 0). Such rows (qs is the same for the whole row) redo mean and rstd in
// double; ordinary rows keep the float statistics, so the fast path costs nothing.
__device__ __forceinline__ bool ln_stats_redo(float qs) { return !(qs < 1e37f && qs > 1e-30f); }
__device__ __forceinline__ bool ln_stats_redo(double) { return false; }

template <typename T> struct ms {
    T m, s;
};

// merge (m, s) pairs: s = s1 e^(m1-m) + s2 e^(m2-m). NaN in m propagates.
template <typename T> __device__ __forceinline__ ms<T> ms_merge(ms<T> a, ms<T> b) {
    if (a.m != a.m || b.m != b.m) return ms<T>{a.m != a.m ? a.m : b.m, a.m != a.m ? a.m : b.m};
    if (b.m == T(-INFINITY)) return a;
    if (a.m == T(-INFINITY)) return b;
    T m = a.m > b.m ? a.m : b.m;
    return ms<T>{m, a.s * fexp(a.m - m) + b.s * fexp(b.m - m)};
}

template <typename T> __device__ __forceinline__ ms<T> ms_add(ms<T> a, T v) {
    if (v != v) return ms<T>{v, v};
    // +inf: the CPU's e^(inf - inf) makes the sum NaN; a NaN s carries that through merges
    if (v == T(INFINITY)) return ms<T>{v, T(NAN)};
    if (a.m != a.m || v == T(-INFINITY)) return a;
    if (v > a.m) return ms<T>{v, a.s * fexp(a.m - v) + T(1)};
    return ms<T>{a.m, a.s + fexp(v - a.m)};
}

template <typename T> __device__ __forceinline__ ms<T> ms_warp(ms<T> a) {
    for (int o = 16; o > 0; o >>= 1) {
        ms<T> b{__shfl_xor_sync(0xffffffffu, a.m, o), __shfl_xor_sync(0xffffffffu, a.s, o)};
        // both lanes of a pair must compute the same merge: order by lane bit
        a = (threadIdx.x & o) ? ms_merge(b, a) : ms_merge(a, b);
    }
    return a;
}

template <typename T> __device__ ms<T> ms_block(ms<T> a, ms<T> *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    a = ms_warp(a);
    __syncthreads();
    if (lane == 0) sh[w] = a;
    __syncthreads();
    ms<T> r = lane < nw ? sh[lane] : ms<T>{T(-INFINITY), T(0)};
    return ms_warp(r);
}


// ---------------------------------------------------------------- softmax fwd

template <typename T, int E>
__global__ void softmax_warp_kernel(int64_t rows, int d, int logsm, const T *__restrict__ x, T *__restrict__ y) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    const T *xr = x + row * d;
    T v[E];
    ms<T> a{T(-INFINITY), T(0)};
#pragma unroll
    for (int k = 0; k < E; k++) {
        int j = lane + 32 * k;
        v[k] = j < d ? xr[j] : T(-INFINITY);
        if (j < d) a = ms_add(a, v[k]);
    }
    a = ms_warp(a);
    T ls = flog(a.s);
    T *yr = y + row * d;
#pragma unroll
    for (int k = 0; k < E; k++) {
        int j = lane + 32 * k;
        if (j < d) yr[j] = logsm ? v[k] - a.m - ls : fexp(v[k] - a.m) / a.s;
    }
}

template <typename T>
__global__ void __launch_bounds__(1024, 1) softmax_block_kernel(int64_t rows, int64_t d, int logsm, int cache, const T *__restrict__ x, T *__restrict__ y) {
    extern __shared__ unsigned char smem_raw[];
    T *row_sm = (T *)smem_raw;
    __shared__ ms<T> sh[32];
    int64_t row = blockIdx.x;
    if (row >= rows) return; /* a whole block: no barrier is left waiting */
    const T *xr = x + row * d;
    ms<T> a{T(-INFINITY), T(0)};
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        T v = xr[j];
        if (cache) row_sm[j] = v;
        a = ms_add(a, v);
    }
    a = ms_block(a, sh);
    const T *src = cache ? row_sm : xr; // each thread re-reads only what it wrote: no sync needed
    T ls = flog(a.s);
    T *yr = y + row * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        T v = src[j];
        yr[j] = logsm ? v - a.m - ls : fexp(v - a.m) / a.s;
    }
}

template <typename T> static cudaError_t softmax_launch(int logsm, int64_t rows, int64_t d, const T *x, T *y, cudaStream_t s) {
    if (d <= 1024) {
        unsigned grid = (unsigned)((rows + 7) / 8);
        if (d <= 128) softmax_warp_kernel<T, 4><<<grid, 256, 0, s>>>(rows, (int)d, logsm, x, y);
        else if (d <= 256) softmax_warp_kernel<T, 8><<<grid, 256, 0, s>>>(rows, (int)d, logsm, x, y);
        else if (d <= 512) softmax_warp_kernel<T, 16><<<grid, 256, 0, s>>>(rows, (int)d, logsm, x, y);
        else softmax_warp_kernel<T, 32><<<grid, 256, 0, s>>>(rows, (int)d, logsm, x, y);
    } else {
        if constexpr (sizeof(T) == 4) {
            cudaError_t r;
            if (rowreg_softmax(logsm, rows, d, x, y, s, &r)) return r;
        }
        size_t bytes = (size_t)d * sizeof(T);
        int cache = bytes <= SMEM_ROW_BYTES;
        int threads = d >= 8192 ? 1024 : 256;
        softmax_block_kernel<T><<<(unsigned)rows, threads, cache ? bytes : 0, s>>>(rows, d, logsm, cache, x, y);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_softmax(int dt, int logsm, int64_t rows, int64_t d, const void *x, void *y, cudaStream_t s) {
    if (rows == 0 || d == 0) return cudaSuccess;
    if (rows > 0x7fffffff) return cudaErrorInvalidValue;
    CG_DISPATCH_FLOAT(dt, T, return softmax_launch<T>(logsm, rows, d, (const T *)x, (T *)y, s));
    return cudaErrorInvalidValue;
}

// ---------------------------------------------------------------- softmax bwd

// softmax: dx = y (g - sum g y); log-softmax: dx = g - exp(y) sum g
template <typename T, int E>
__global__ void softmax_bwd_warp_kernel(int64_t rows, int d, int logsm, const T *__restrict__ y, const T *__restrict__ g,
                                        T *__restrict__ dx) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    const T *yr = y + row * d, *gr = g + row * d;
    T yv[E], gv[E], acc = T(0);
#pragma unroll
    for (int k = 0; k < E; k++) {
        int j = lane + 32 * k;
        yv[k] = j < d ? yr[j] : T(0);
        gv[k] = j < d ? gr[j] : T(0);
        acc += logsm ? gv[k] : gv[k] * yv[k];
    }
    acc = cg_warp_sum(acc);
    T *o = dx + row * d;
#pragma unroll
    for (int k = 0; k < E; k++) {
        int j = lane + 32 * k;
        if (j < d) o[j] = logsm ? gv[k] - fexp(yv[k]) * acc : yv[k] * (gv[k] - acc);
    }
}

template <typename T>
__global__ void __launch_bounds__(1024, 1) softmax_bwd_block_kernel(int64_t d, int logsm, const T *__restrict__ y, const T *__restrict__ g,
                                         T *__restrict__ dx) {
    __shared__ T sh[32];
    int64_t row = blockIdx.x;
    const T *yr = y + row * d, *gr = g + row * d;
    T acc = T(0);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) acc += logsm ? gr[j] : gr[j] * yr[j];
    acc = cg_block_sum(acc, sh);
    T *o = dx + row * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
        o[j] = logsm ? gr[j] - fexp(yr[j]) * acc : yr[j] * (gr[j] - acc);
}

template <typename T>
static cudaError_t softmax_bwd_launch(int logsm, int64_t rows, int64_t d, const T *y, const T *g, T *dx, cudaStream_t s) {
    if (d <= 1024) {
        unsigned grid = (unsigned)((rows + 7) / 8);
        if (d <= 128) softmax_bwd_warp_kernel<T, 4><<<grid, 256, 0, s>>>(rows, (int)d, logsm, y, g, dx);
        else if (d <= 256) softmax_bwd_warp_kernel<T, 8><<<grid, 256, 0, s>>>(rows, (int)d, logsm, y, g, dx);
        else if (d <= 512) softmax_bwd_warp_kernel<T, 16><<<grid, 256, 0, s>>>(rows, (int)d, logsm, y, g, dx);
        else softmax_bwd_warp_kernel<T, 32><<<grid, 256, 0, s>>>(rows, (int)d, logsm, y, g, dx);
    } else {
        if constexpr (sizeof(T) == 4) {
            cudaError_t r;
            if (rowreg_softmax_bwd(logsm, rows, d, y, g, dx, s, &r)) return r;
        }
        softmax_bwd_block_kernel<T><<<(unsigned)rows, d >= 8192 ? 1024 : 256, 0, s>>>(d, logsm, y, g, dx);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_softmax_bwd(int dt, int logsm, int64_t rows, int64_t d, const void *y, const void *g,
                                           void *dx, cudaStream_t s) {
    if (rows == 0 || d == 0) return cudaSuccess;
    if (rows > 0x7fffffff) return cudaErrorInvalidValue;
    CG_DISPATCH_FLOAT(dt, T, return softmax_bwd_launch<T>(logsm, rows, d, (const T *)y, (const T *)g, (T *)dx, s));
    return cudaErrorInvalidValue;
}

// ---------------------------------------------------------------- softmax cross-entropy

__device__ __forceinline__ int64_t load_label(const void *labels, int lab64, int64_t r) {
    return lab64 ? ((const int64_t *)labels)[r] : (int64_t)((const int32_t *)labels)[r];
}

// Sticky error word (cuda_kernels.h): an out-of-range label still gives NaN for its row;
// the first thread to claim e.claim also fills the mapped host record, and the system
// fence makes row/value/limit visible to the host before code. Called by one thread per
// row, after the row's shuffles / block reductions, so no lane leaves collective code.
static __device__ __noinline__ void err_record(cg_cuda_err_sink e, unsigned long long code, long long row,
                                               long long value, long long limit) {
    if (!e.rec || *(volatile unsigned long long *)e.claim != 0ULL) return;
    if (atomicCAS(e.claim, 0ULL, code) != 0ULL) return;
    volatile cg_cuda_err_rec *r = e.rec;
    r->row = row;
    r->value = value;
    r->limit = limit;
    __threadfence_system();
    r->code = code;
}

template <typename T, int E>
__global__ void softmax_ce_warp_kernel(int64_t rows, int C, const T *__restrict__ x, const void *labels, int lab64, T ls,
                                       T gs, T *__restrict__ loss, T *__restrict__ grad, cg_cuda_err_sink err) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    const T *xr = x + row * C;
    int64_t lab = load_label(labels, lab64, row);
    bool ok = lab >= 0 && lab < C;
    T v[E], sx = T(0), xl = T(0);
    ms<T> a{T(-INFINITY), T(0)};
#pragma unroll
    for (int k = 0; k < E; k++) {
        int j = lane + 32 * k;
        v[k] = j < C ? xr[j] : T(0);
        if (j < C) {
            a = ms_add(a, v[k]);
            sx += v[k];
            if (j == lab) xl = v[k];
        }
    }
    a = ms_warp(a);
    sx = cg_warp_sum(sx);
    xl = cg_warp_sum(xl);
    T lse = a.m + flog(a.s);
    T on = T(1) - ls, off = ls / T(C);
    if (lane == 0) loss[row] = ok ? lse - on * xl - (ls > T(0) ? off * sx : T(0)) : T(NAN);
    if (lane == 0 && !ok) err_record(err, CG_CUDA_ERR_CE_LABEL, row, lab, C);
    if (!grad) return;
    T *gr = grad + row * C;
#pragma unroll
    for (int k = 0; k < E; k++) {
        int j = lane + 32 * k;
        if (j < C) gr[j] = ok ? (fexp(v[k] - a.m) / a.s - (j == lab ? on + off : off)) * gs : T(NAN);
    }
}

template <typename T>
__global__ void __launch_bounds__(1024, 1) softmax_ce_block_kernel(int64_t C, const T *__restrict__ x, const void *labels, int lab64, T ls, T gs, int cache,
                                        T *__restrict__ loss, T *__restrict__ grad, cg_cuda_err_sink err) {
    extern __shared__ unsigned char smem_raw[];
    T *row_sm = (T *)smem_raw;
    __shared__ ms<T> sh[32];
    __shared__ T sh2[32];
    int64_t row = blockIdx.x;
    const T *xr = x + row * C;
    int64_t lab = load_label(labels, lab64, row);
    bool ok = lab >= 0 && lab < C;
    ms<T> a{T(-INFINITY), T(0)};
    T sx = T(0);
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
        T v = xr[j];
        if (cache) row_sm[j] = v;
        a = ms_add(a, v);
        sx += v;
    }
    a = ms_block(a, sh);
    sx = cg_block_sum(sx, sh2);
    T xl = ok ? xr[lab] : T(0);
    T lse = a.m + flog(a.s);
    T on = T(1) - ls, off = ls / T(C);
    if (threadIdx.x == 0) loss[row] = ok ? lse - on * xl - (ls > T(0) ? off * sx : T(0)) : T(NAN);
    if (threadIdx.x == 0 && !ok) err_record(err, CG_CUDA_ERR_CE_LABEL, row, lab, C);
    if (!grad) return;
    const T *src = cache ? row_sm : xr;
    T *gr = grad + row * C;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
        gr[j] = ok ? (fexp(src[j] - a.m) / a.s - (j == lab ? on + off : off)) * gs : T(NAN);
}

template <typename T>
static cudaError_t softmax_ce_launch(int64_t rows, int64_t C, const T *x, const void *labels, int lab64, T ls, T gs,
                                     T *loss, T *grad, cg_cuda_err_sink e, cudaStream_t s) {
    if (C <= 1024) {
        unsigned grid = (unsigned)((rows + 7) / 8);
        if (C <= 128) softmax_ce_warp_kernel<T, 4><<<grid, 256, 0, s>>>(rows, (int)C, x, labels, lab64, ls, gs, loss, grad, e);
        else if (C <= 256) softmax_ce_warp_kernel<T, 8><<<grid, 256, 0, s>>>(rows, (int)C, x, labels, lab64, ls, gs, loss, grad, e);
        else if (C <= 512) softmax_ce_warp_kernel<T, 16><<<grid, 256, 0, s>>>(rows, (int)C, x, labels, lab64, ls, gs, loss, grad, e);
        else softmax_ce_warp_kernel<T, 32><<<grid, 256, 0, s>>>(rows, (int)C, x, labels, lab64, ls, gs, loss, grad, e);
    } else {
        if constexpr (sizeof(T) == 4) {
            cudaError_t r;
            if (rowreg_softmax_ce(rows, C, x, labels, lab64, ls, gs, loss, grad, e, s, &r)) return r;
        }
        size_t bytes = (size_t)C * sizeof(T);
        int cache = grad && bytes <= SMEM_ROW_BYTES;
        softmax_ce_block_kernel<T><<<(unsigned)rows, C >= 8192 ? 1024 : 256, cache ? bytes : 0, s>>>(
            C, x, labels, lab64, ls, gs, cache, loss, grad, e);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_softmax_ce(int dt, int64_t rows, int64_t C, const void *x, const void *labels, int lab64,
                                          double ls, double gscale, void *loss, void *grad, cg_cuda_err_sink err,
                                          cudaStream_t s) {
    if (rows == 0) return cudaSuccess;
    if (rows > 0x7fffffff || C == 0) return cudaErrorInvalidValue;
    CG_DISPATCH_FLOAT(dt, T, return softmax_ce_launch<T>(rows, C, (const T *)x, labels, lab64, (T)ls, (T)gscale, (T *)loss, (T *)grad, err, s));
    return cudaErrorInvalidValue;
}

template <typename T>
__global__ void softmax_ce_bwd_kernel(int64_t n, int64_t C, int per_row, T scale, const T *__restrict__ g,
                                      const T *__restrict__ grad, T *__restrict__ dx) {
    CG_GRID_STRIDE(i, n) dx[i] = grad[i] * ((per_row ? g[i / C] : g[0]) * scale);
}

extern "C" cudaError_t cg_cuda_softmax_ce_bwd(int dt, int64_t rows, int64_t C, int per_row, double scale, const void *g,
                                              const void *grad, void *dx, cudaStream_t s) {
    int64_t n = rows * C;
    if (n == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        softmax_ce_bwd_kernel<T><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, C, per_row, (T)scale, (const T *)g,
                                                                          (const T *)grad, (T *)dx);
    });
    return cudaGetLastError();
}

// ---------------------------------------------------------------- layernorm fwd

template <typename T, int E>
__global__ void layernorm_warp_kernel(int64_t rows, int d, T eps, const T *__restrict__ x, const T *__restrict__ gamma,
                                      const T *__restrict__ beta, T *__restrict__ y, T *__restrict__ mean,
                                      T *__restrict__ rstd) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    const T *xr = x + row * d;
    T v[E], s = T(0);
#pragma unroll
    for (int k = 0; k < E; k++) {
        int j = lane + 32 * k;
        v[k] = j < d ? xr[j] : T(0);
        s += v[k];
    }
    T m = cg_warp_sum(s) / T(d);
    T q = T(0);
#pragma unroll
    for (int k = 0; k < E; k++) {
        int j = lane + 32 * k;
        T e = j < d ? v[k] - m : T(0);
        q += e * e;
    }
    T qs = cg_warp_sum(q), rs = frsqrt(qs / T(d) + eps);
    if (ln_stats_redo(qs)) {
        double sd = 0.0, qd = 0.0;
#pragma unroll
        for (int k = 0; k < E; k++) sd += (double)v[k]; // 0 beyond d
        double md = cg_warp_sum(sd) / (double)d;
#pragma unroll
        for (int k = 0; k < E; k++) {
            double e = lane + 32 * k < d ? (double)v[k] - md : 0.0;
            qd += e * e;
        }
        m = (T)md;
        rs = (T)(1.0 / sqrt(cg_warp_sum(qd) / (double)d + (double)eps));
    }
    T *yr = y + row * d;
#pragma unroll
    for (int k = 0; k < E; k++) {
        int j = lane + 32 * k;
        if (j < d) {
            T h = (v[k] - m) * rs;
            if (gamma) h *= gamma[j];
            if (beta) h += beta[j];
            yr[j] = h;
        }
    }
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = rs;
    }
}

template <typename T>
__global__ void __launch_bounds__(1024, 1) layernorm_block_kernel(int64_t d, T eps, int cache, const T *__restrict__ x, const T *__restrict__ gamma,
                                       const T *__restrict__ beta, T *__restrict__ y, T *__restrict__ mean,
                                       T *__restrict__ rstd) {
    extern __shared__ unsigned char smem_raw[];
    T *row_sm = (T *)smem_raw;
    __shared__ T sh[32];
    int64_t row = blockIdx.x;
    const T *xr = x + row * d;
    T s = T(0);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        T v = xr[j];
        if (cache) row_sm[j] = v;
        s += v;
    }
    T m = cg_block_sum(s, sh) / T(d);
    const T *src = cache ? row_sm : xr;
    T q = T(0);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        T e = src[j] - m;
        q += e * e;
    }
    T qs = cg_block_sum(q, sh), rs = frsqrt(qs / T(d) + eps);
    if (ln_stats_redo(qs)) { // see ln_stats_redo
        __shared__ double shd[32];
        double sd = 0.0, qd = 0.0;
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) sd += (double)src[j];
        double md = cg_block_sum(sd, shd) / (double)d;
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
            double e = (double)src[j] - md;
            qd += e * e;
        }
        m = (T)md;
        rs = (T)(1.0 / sqrt(cg_block_sum(qd, shd) / (double)d + (double)eps));
    }
    T *yr = y + row * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        T h = (src[j] - m) * rs;
        if (gamma) h *= gamma[j];
        if (beta) h += beta[j];
        yr[j] = h;
    }
    if (threadIdx.x == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = rs;
    }
}

extern "C" cudaError_t cg_cuda_layernorm(int dt, int64_t rows, int64_t d, double eps, const void *x, const void *gamma,
                                         const void *beta, void *y, void *mean, void *rstd, cudaStream_t s) {
    if (rows == 0 || d == 0) return cudaSuccess;
    if (rows > 0x7fffffff) return cudaErrorInvalidValue;
    CG_DISPATCH_FLOAT(dt, T, {
        const T *px = (const T *)x, *pg = (const T *)gamma, *pb = (const T *)beta;
        T *py = (T *)y, *pm = (T *)mean, *pr = (T *)rstd;
        if (d <= 1024) {
            unsigned grid = (unsigned)((rows + 7) / 8);
            if (d <= 128) layernorm_warp_kernel<T, 4><<<grid, 256, 0, s>>>(rows, (int)d, (T)eps, px, pg, pb, py, pm, pr);
            else if (d <= 256) layernorm_warp_kernel<T, 8><<<grid, 256, 0, s>>>(rows, (int)d, (T)eps, px, pg, pb, py, pm, pr);
            else if (d <= 512) layernorm_warp_kernel<T, 16><<<grid, 256, 0, s>>>(rows, (int)d, (T)eps, px, pg, pb, py, pm, pr);
            else layernorm_warp_kernel<T, 32><<<grid, 256, 0, s>>>(rows, (int)d, (T)eps, px, pg, pb, py, pm, pr);
        } else {
            if constexpr (sizeof(T) == 4) {
                // casts only satisfy the double instantiation of this macro body, never taken
                cudaError_t r;
                if (rowreg_layernorm(rows, d, (float)eps, (const float *)px, (const float *)pg, (const float *)pb,
                                     (float *)py, (float *)pm, (float *)pr, s, &r))
                    return r;
            }
            size_t bytes = (size_t)d * sizeof(T);
            int cache = bytes <= SMEM_ROW_BYTES;
            layernorm_block_kernel<T><<<(unsigned)rows, d >= 8192 ? 1024 : 256, cache ? bytes : 0, s>>>(
                d, (T)eps, cache, px, pg, pb, py, pm, pr);
        }
    });
    return cudaGetLastError();
}

// ---------------------------------------------------------------- layernorm bwd

// Block b handles rows b, b + G, ... (G = grid size, fixed by the shape); thread t owns
// columns t, t + blockDim, ... and accumulates dgamma/dbeta for them in `acc` (shared
// memory when 2d values fit, else its own slots of part[b]); part[b] = [dgamma | dbeta].
#define LN_G_MAX 512

static int64_t ln_grid(int64_t rows) { return rows < LN_G_MAX ? rows : LN_G_MAX; }

extern "C" size_t cg_cuda_layernorm_bwd_workspace(int dt, int64_t rows, int64_t d) {
    size_t es = dt == CG_F64 ? 8 : 4;
    return (size_t)(ln_grid(rows) * 2 * d) * es;
}

template <typename T>
__global__ void layernorm_bwd_kernel(int64_t rows, int64_t d, int smem_acc, const T *__restrict__ x, const T *__restrict__ g,
                                     const T *__restrict__ gamma, const T *__restrict__ mean, const T *__restrict__ rstd,
                                     T *__restrict__ dx, T *__restrict__ part, int want_params) {
    extern __shared__ unsigned char smem_raw[];
    __shared__ T sh[32];
    T *acc = smem_acc ? (T *)smem_raw : part ? part + (int64_t)blockIdx.x * 2 * d : nullptr; // part: NULL for dx only
    if (want_params)
        for (int64_t j = threadIdx.x; j < 2 * d; j += blockDim.x) acc[j] = T(0);
    __syncthreads(); // acc[d + j] is zeroed by another thread than column j's owner
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * d, *gr = g + r * d;
        T m = mean[r], rs = rstd[r];
        T s1 = T(0), s2 = T(0);
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
            T gv = gr[j], xh = (xr[j] - m) * rs;
            T dh = gamma ? gv * gamma[j] : gv;
            s1 += dh;
            s2 += dh * xh;
            if (want_params) {
                acc[j] += gv * xh;
                acc[d + j] += gv;
            }
        }
        if (!dx) continue;
        s1 = cg_block_sum(s1, sh) / T(d);
        s2 = cg_block_sum(s2, sh) / T(d);
        T *o = dx + r * d;
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) { // second sweep: L1/L2 hits
            T gv = gr[j], xh = (xr[j] - m) * rs;
            T dh = gamma ? gv * gamma[j] : gv;
            o[j] = rs * (dh - s1 - xh * s2);
        }
    }
    __syncthreads();
    if (want_params && smem_acc) {
        T *dst = part + (int64_t)blockIdx.x * 2 * d;
        for (int64_t j = threadIdx.x; j < 2 * d; j += blockDim.x) dst[j] = acc[j];
    }
}

template <typename T>
__global__ void ln_params_final_kernel(int64_t G, int64_t d, const T *__restrict__ part, T *__restrict__ dgamma, T *__restrict__ dbeta) {
    CG_GRID_STRIDE(j, 2 * d) {
        T s = T(0);
        for (int64_t b = 0; b < G; b++) s += part[b * 2 * d + j];
        if (j < d) {
            if (dgamma) dgamma[j] = s;
        } else if (dbeta) {
            dbeta[j - d] = s;
        }
    }
}

extern "C" cudaError_t cg_cuda_layernorm_bwd(int dt, int64_t rows, int64_t d, const void *x, const void *g,
                                             const void *gamma, const void *mean, const void *rstd, void *dx,
                                             void *dgamma, void *dbeta, void *ws, cudaStream_t s) {
    if (d == 0) return cudaSuccess;
    int want = dgamma || dbeta;
    if (rows == 0) { // no rows: parameter gradients are zero
        size_t es = dt == CG_F64 ? 8 : 4;
        if (dgamma) cudaMemsetAsync(dgamma, 0, (size_t)d * es, s);
        if (dbeta) cudaMemsetAsync(dbeta, 0, (size_t)d * es, s);
        return cudaGetLastError();
    }
    if (!dx && !want) return cudaSuccess;
    int64_t G = ln_grid(rows);
    int threads = d >= 4096 ? 512 : d >= 1024 ? 256 : d >= 256 ? 128 : d >= 64 ? 64 : 32;
    CG_DISPATCH_FLOAT(dt, T, {
        cudaError_t e = cudaSuccess;
        bool regs = false;
        if constexpr (sizeof(T) == 4) // casts only satisfy the double instantiation of this body
            regs = rowreg_layernorm_bwd(rows, d, G, (const float *)x, (const float *)g, (const float *)gamma,
                                        (const float *)mean, (const float *)rstd, (float *)dx, (float *)ws, want, s, &e);
        if (!regs) {
            size_t acc_bytes = (size_t)(2 * d) * sizeof(T);
            int smem_acc = want && acc_bytes <= SMEM_ROW_BYTES;
            layernorm_bwd_kernel<T><<<(unsigned)G, threads, smem_acc ? acc_bytes : 0, s>>>(
                rows, d, smem_acc, (const T *)x, (const T *)g, (const T *)gamma, (const T *)mean, (const T *)rstd,
                (T *)dx, (T *)ws, want);
            e = cudaGetLastError();
        }
        if (e != cudaSuccess || !want) return e;
        ln_params_final_kernel<T><<<cg_blocks_for(2 * d), CG_THREADS, 0, s>>>(G, d, (const T *)ws, (T *)dgamma, (T *)dbeta);
    });
    return cudaGetLastError();
}

// ---------------------------------------------------------------- batchnorm

// Statistics over N rows per channel: chunk c of S covers rows [c L, (c+1) L); block
// (32, 8) threads walk rows ty, ty + 8, ... of the chunk (Welford), merged over ty in
// order (Chan), partials merged over chunks in order by the finalize kernel.
static int64_t bn_chunks(int64_t N, int64_t C) {
    if (N <= 512) return 1;
    int64_t cb = (C + 31) / 32, s = (N + 255) / 256, cap = (4096 + cb - 1) / cb;
    if (s > cap) s = cap;
    return s < 1 ? 1 : s > 1024 ? 1024 : s;
}

extern "C" size_t cg_cuda_batchnorm_workspace(int dt, int64_t N, int64_t C) {
    size_t es = dt == CG_F64 ? 8 : 4;
    return (size_t)(2 * bn_chunks(N, C) * C + 4 * C) * es;
}

template <typename T> struct wf {
    T n, mean, m2;
};

template <typename T> __device__ __forceinline__ wf<T> wf_merge(wf<T> a, wf<T> b) {
    if (b.n == T(0)) return a;
    if (a.n == T(0)) return b;
    T n = a.n + b.n, dl = b.mean - a.mean;
    return wf<T>{n, a.mean + dl * (b.n / n), a.m2 + b.m2 + dl * dl * (a.n * b.n / n)};
}

template <typename T>
__global__ void bn_stats_kernel(int64_t N, int64_t C, int64_t S, const T *__restrict__ x, T *__restrict__ pmean, T *__restrict__ pm2) {
    __shared__ wf<T> sh[8][33];
    int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x, ch = blockIdx.y;
    int64_t L = (N + S - 1) / S, r0 = ch * L, r1 = r0 + L < N ? r0 + L : N;
    wf<T> a{T(0), T(0), T(0)};
    if (c < C)
#pragma unroll 4
        for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
            T v = x[r * C + c];
            a.n += T(1);
            T dl = v - a.mean;
            a.mean += dl / a.n;
            a.m2 += dl * (v - a.mean);
        }
    sh[threadIdx.y][threadIdx.x] = a;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        wf<T> t = sh[0][threadIdx.x];
        for (int k = 1; k < 8; k++) t = wf_merge(t, sh[k][threadIdx.x]);
        pmean[ch * C + c] = t.mean;
        pm2[ch * C + c] = t.m2;
    }
}

// f32 statistics are merged in float, the CPU's in double: a channel whose mean or M2 came
// out non-finite (values beyond ~1.8e19 overflow dl * dl, or inf / NaN in the data) is
// redone from x in double, two passes like the CPU (a strided column walk, for such channels
// only); ordinary channels keep the float result.
// The running statistics and rstd of such a channel are then computed in double too, like
// the CPU (var * N alone can overflow float).
__device__ bool bn_redo_double(int64_t N, int64_t C, int64_t c, const float *x, float mean, float var, double *md,
                               double *vd) {
    if (isfinite(mean) && isfinite(var)) return false;
    double s = 0.0, q = 0.0;
    for (int64_t r = 0; r < N; r++) s += (double)x[r * C + c];
    double m = s / (double)N;
    for (int64_t r = 0; r < N; r++) {
        double e = (double)x[r * C + c] - m;
        q += e * e;
    }
    *md = m;
    *vd = q / (double)N;
    return true;
}
__device__ bool bn_redo_double(int64_t, int64_t, int64_t, const double *, double, double, double *, double *) {
    return false;
}

template <typename T>
__global__ void bn_finalize_kernel(int64_t N, int64_t C, int64_t S, T eps, T mom, const T *__restrict__ x,
                                   const T *__restrict__ pmean, const T *__restrict__ pm2, T *run_mean, T *run_var,
                                   T *__restrict__ mean, T *__restrict__ rstd) {
    CG_GRID_STRIDE(c, C) {
        int64_t L = (N + S - 1) / S;
        wf<T> t{T(0), T(0), T(0)};
        for (int64_t k = 0; k < S; k++) {
            int64_t r0 = k * L, r1 = r0 + L < N ? r0 + L : N;
            T n = r1 > r0 ? T(r1 - r0) : T(0);
            t = wf_merge(t, wf<T>{n, pmean[k * C + c], pm2[k * C + c]});
        }
        T var = t.m2 / T(N);
        double md, vd;
        if (bn_redo_double(N, C, c, x, t.mean, var, &md, &vd)) {
            double m = (double)mom;
            if (run_mean) run_mean[c] = (T)((1.0 - m) * (double)run_mean[c] + m * md);
            if (run_var) run_var[c] = (T)((1.0 - m) * (double)run_var[c] + m * vd * (double)N / (double)(N - 1));
            mean[c] = (T)md;
            rstd[c] = (T)(1.0 / sqrt(vd + (double)eps));
            continue;
        }
        if (run_mean) run_mean[c] = (T(1) - mom) * run_mean[c] + mom * t.mean;
        if (run_var) run_var[c] = (T(1) - mom) * run_var[c] + mom * var * T(N) / T(N - 1);
        mean[c] = t.mean;
        rstd[c] = frsqrt(var + eps);
    }
}

template <typename T>
__global__ void bn_eval_stats_kernel(int64_t C, T eps, const T *__restrict__ rm, const T *__restrict__ rv, T *__restrict__ mean, T *__restrict__ rstd) {
    CG_GRID_STRIDE(c, C) {
        mean[c] = rm[c];
        rstd[c] = frsqrt(rv[c] + eps);
    }
}

// Per-channel elementwise passes over (N, C) (apply, dx): block (32, 8), each lane owns a
// group of V adjacent channels (V = 4: float4 loads and stores) and walks rows with a grid
// stride; its channels' statistics are read once. With G = C / V groups of channels:
// G >= 32: lanes and blockIdx.x cover the groups, one row per warp row (rpw = 1);
// G < 32: a warp covers rpw = 32 / G rows at once (lane = sub-row * G + group), so a
// narrow layer still keeps most lanes loading. No 64-bit i % C per element (emulated on
// the GPU, it made the first, flat version compute-bound).
#define BN_ROWS_PER_THREAD 4
static int bn_rows_per_warp(int64_t C, int V) {
    int64_t g = C / V;
    return g >= 32 ? 1 : (int)(32 / g);
}
static void bn_grid(int64_t N, int64_t C, int V, dim3 *grid) {
    int rpw = bn_rows_per_warp(C, V);
    int64_t gx = rpw > 1 ? 1 : (C / V + 31) / 32, per = 8 * (int64_t)rpw * BN_ROWS_PER_THREAD;
    int64_t gy = (N + per - 1) / per;
    *grid = dim3((unsigned)gx, (unsigned)(gy < 1 ? 1 : gy > 65535 ? 65535 : gy));
}

// this lane's first channel c0 and first row r0, and the row stride; false: an idle lane
__device__ __forceinline__ bool bn_lane(int64_t C, int V, int64_t *c0, int64_t *r0, int64_t *stride) {
    int64_t g = C / V;
    int rpw = g >= 32 ? 1 : (int)(32 / g), sub = 0;
    if (rpw == 1) {
        *c0 = ((int64_t)blockIdx.x * 32 + threadIdx.x) * V;
    } else {
        if ((int64_t)threadIdx.x >= rpw * g) return false;
        *c0 = (threadIdx.x % g) * V;
        sub = (int)(threadIdx.x / g);
    }
    *r0 = ((int64_t)blockIdx.y * 8 + threadIdx.y) * rpw + sub;
    *stride = (int64_t)gridDim.y * 8 * rpw;
    return *c0 < C; // C % V == 0: a group is whole
}

template <typename T, int V> struct bn_vec {
    T v[V];
};
template <typename T, int V> __device__ __forceinline__ bn_vec<T, V> bn_load(const T *p) {
    bn_vec<T, V> r;
    if constexpr (V == 4 && sizeof(T) == 4) {
        float4 q = *(const float4 *)p;
        r.v[0] = q.x, r.v[1] = q.y, r.v[2] = q.z, r.v[3] = q.w;
    } else {
#pragma unroll
        for (int k = 0; k < V; k++) r.v[k] = p[k];
    }
    return r;
}
template <typename T, int V> __device__ __forceinline__ void bn_store(T *p, const bn_vec<T, V> &r) {
    if constexpr (V == 4 && sizeof(T) == 4) {
        // __stwb (st.global.wb = a plain store's policy): in a loop nvcc splits a plain
        // float4 assignment here into four 4-byte stores (seen in the PTX)
        __stwb(reinterpret_cast<float4 *>(p), make_float4(r.v[0], r.v[1], r.v[2], r.v[3]));
    } else {
#pragma unroll
        for (int k = 0; k < V; k++) p[k] = r.v[k];
    }
}

#define BN_ROW_LOOP(r, N) for (int64_t r = r0; r < (N); r += rstride)

template <typename T, int V>
__global__ void bn_apply_kernel(int64_t N, int64_t C, const T *__restrict__ x, const T *__restrict__ mean, const T *__restrict__ rstd,
                                const T *__restrict__ gamma, const T *__restrict__ beta, T *__restrict__ y) {
    int64_t c0, r0, rstride;
    if (!bn_lane(C, V, &c0, &r0, &rstride)) return;
    bn_vec<T, V> m = bn_load<T, V>(mean + c0), rs = bn_load<T, V>(rstd + c0), gm, bt;
    if (gamma) gm = bn_load<T, V>(gamma + c0);
    if (beta) bt = bn_load<T, V>(beta + c0);
    BN_ROW_LOOP(r, N) {
        bn_vec<T, V> h = bn_load<T, V>(x + r * C + c0);
#pragma unroll
        for (int k = 0; k < V; k++) {
            h.v[k] = (h.v[k] - m.v[k]) * rs.v[k];
            if (gamma) h.v[k] *= gm.v[k];
            if (beta) h.v[k] += bt.v[k];
        }
        bn_store<T, V>(y + r * C + c0, h);
    }
}

// V = 4 for f32 when C % 4 == 0 and every (N, C) and (C) pointer is 16-byte aligned
static int bn_vec_width(int dt, int64_t C, const void *const *ptrs, int n) {
    if (dt != CG_F32 || C % 4) return 1;
    for (int i = 0; i < n; i++)
        if (ptrs[i] && !cg_aligned16(ptrs[i])) return 1;
    return 4;
}

extern "C" cudaError_t cg_cuda_batchnorm(int dt, int training, int64_t N, int64_t C, double eps, double momentum,
                                         const void *x, const void *gamma, const void *beta, void *run_mean, void *run_var,
                                         void *y, void *mean, void *rstd, void *ws, cudaStream_t s) {
    if (C == 0) return cudaSuccess;
    if (training && N < 2) return cudaErrorInvalidValue;
    int64_t S = bn_chunks(N, C);
    CG_DISPATCH_FLOAT(dt, T, {
        T *pm = (T *)ws, *pq = pm + S * C;
        if (training) {
            dim3 grid((unsigned)((C + 31) / 32), (unsigned)S);
            bn_stats_kernel<T><<<grid, dim3(32, 8), 0, s>>>(N, C, S, (const T *)x, pm, pq);
            bn_finalize_kernel<T><<<cg_blocks_for(C), CG_THREADS, 0, s>>>(N, C, S, (T)eps, (T)momentum, (const T *)x, pm,
                                                                           pq, (T *)run_mean, (T *)run_var, (T *)mean,
                                                                           (T *)rstd);
        } else {
            bn_eval_stats_kernel<T><<<cg_blocks_for(C), CG_THREADS, 0, s>>>(C, (T)eps, (const T *)run_mean,
                                                                            (const T *)run_var, (T *)mean, (T *)rstd);
        }
        if (N * C > 0) {
            const void *pv[] = {x, y, mean, rstd, gamma, beta};
            int V = bn_vec_width(dt, C, pv, 6);
            dim3 grid;
            bn_grid(N, C, V, &grid);
            if (V == 4)
                bn_apply_kernel<T, 4><<<grid, dim3(32, 8), 0, s>>>(N, C, (const T *)x, (const T *)mean, (const T *)rstd,
                                                                  (const T *)gamma, (const T *)beta, (T *)y);
            else
                bn_apply_kernel<T, 1><<<grid, dim3(32, 8), 0, s>>>(N, C, (const T *)x, (const T *)mean, (const T *)rstd,
                                                                  (const T *)gamma, (const T *)beta, (T *)y);
        }
    });
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_batchnorm_eval_stats(int dt, int64_t C, double eps, const void *run_mean,
                                                    const void *run_var, void *mean, void *rstd, cudaStream_t s) {
    if (C == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        bn_eval_stats_kernel<T><<<cg_blocks_for(C), CG_THREADS, 0, s>>>(C, (T)eps, (const T *)run_mean,
                                                                        (const T *)run_var, (T *)mean, (T *)rstd);
    });
    return cudaGetLastError();
}

// per chunk and channel: sum g xhat and sum g
template <typename T>
__global__ void bn_bwd_sums_kernel(int64_t N, int64_t C, int64_t S, const T *__restrict__ x, const T *__restrict__ g,
                                   const T *__restrict__ mean, const T *__restrict__ rstd, T *__restrict__ pgx, T *__restrict__ pg) {
    __shared__ T shx[8][33], shg[8][33];
    int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x, ch = blockIdx.y;
    int64_t L = (N + S - 1) / S, r0 = ch * L, r1 = r0 + L < N ? r0 + L : N;
    T sgx = T(0), sg = T(0);
    if (c < C) {
        T m = mean[c], rs = rstd[c];
#pragma unroll 4
        for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
            T gv = g[r * C + c];
            sgx += gv * (x[r * C + c] - m) * rs;
            sg += gv;
        }
    }
    shx[threadIdx.y][threadIdx.x] = sgx;
    shg[threadIdx.y][threadIdx.x] = sg;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        T a = shx[0][threadIdx.x], b = shg[0][threadIdx.x];
        for (int k = 1; k < 8; k++) {
            a += shx[k][threadIdx.x];
            b += shg[k][threadIdx.x];
        }
        pgx[ch * C + c] = a;
        pg[ch * C + c] = b;
    }
}

template <typename T>
__global__ void bn_bwd_final_kernel(int64_t C, int64_t S, const T *__restrict__ pgx, const T *__restrict__ pg, T *__restrict__ sgx,
                                    T *__restrict__ sg) {
    CG_GRID_STRIDE(c, C) {
        T a = T(0), b = T(0);
        for (int64_t k = 0; k < S; k++) {
            a += pgx[k * C + c];
            b += pg[k * C + c];
        }
        sgx[c] = a;
        sg[c] = b;
    }
}

// dx = rstd (g gamma - [training] (gamma sum(g) / N + xhat gamma sum(g xhat) / N)), with the
// two per-channel factors formed once per thread
template <typename T, int V>
__global__ void bn_bwd_dx_kernel(int64_t N, int64_t C, int training, const T *__restrict__ x, const T *__restrict__ g,
                                 const T *__restrict__ gamma, const T *__restrict__ mean, const T *__restrict__ rstd,
                                 const T *__restrict__ sgx, const T *__restrict__ sg, T *__restrict__ dx) {
    int64_t c0, r0, rstride;
    if (!bn_lane(C, V, &c0, &r0, &rstride)) return;
    bn_vec<T, V> gm, rs = bn_load<T, V>(rstd + c0), m, a, b;
#pragma unroll
    for (int k = 0; k < V; k++) gm.v[k] = gamma ? gamma[c0 + k] : T(1);
    if (training) {
        m = bn_load<T, V>(mean + c0);
#pragma unroll
        for (int k = 0; k < V; k++) {
            a.v[k] = gm.v[k] * sg[c0 + k] / T(N);
            b.v[k] = gm.v[k] * sgx[c0 + k] / T(N);
        }
    }
    BN_ROW_LOOP(r, N) {
        bn_vec<T, V> v = bn_load<T, V>(g + r * C + c0), xv;
        if (training) xv = bn_load<T, V>(x + r * C + c0);
#pragma unroll
        for (int k = 0; k < V; k++) {
            T t = v.v[k] * gm.v[k];
            if (training) t = t - a.v[k] - (xv.v[k] - m.v[k]) * rs.v[k] * b.v[k];
            v.v[k] = rs.v[k] * t;
        }
        bn_store<T, V>(dx + r * C + c0, v);
    }
}

extern "C" cudaError_t cg_cuda_batchnorm_bwd(int dt, int training, int64_t N, int64_t C, const void *x, const void *g,
                                             const void *gamma, const void *mean, const void *rstd, void *dx,
                                             void *dgamma, void *dbeta, void *ws, cudaStream_t s) {
    if (C == 0) return cudaSuccess;
    int64_t S = bn_chunks(N, C);
    int need_sums = dgamma || dbeta || (dx && training);
    CG_DISPATCH_FLOAT(dt, T, {
        T *pgx = (T *)ws, *pg = pgx + S * C, *sgx = pg + S * C, *sg = sgx + C;
        if (dgamma) sgx = (T *)dgamma;
        if (dbeta) sg = (T *)dbeta;
        if (need_sums) {
            dim3 grid((unsigned)((C + 31) / 32), (unsigned)S);
            bn_bwd_sums_kernel<T><<<grid, dim3(32, 8), 0, s>>>(N, C, S, (const T *)x, (const T *)g, (const T *)mean,
                                                               (const T *)rstd, pgx, pg);
            bn_bwd_final_kernel<T><<<cg_blocks_for(C), CG_THREADS, 0, s>>>(C, S, pgx, pg, sgx, sg);
        }
        if (dx && N * C > 0) {
            const void *pv[] = {x, g, dx, rstd, training ? mean : NULL};
            int V = bn_vec_width(dt, C, pv, 5);
            dim3 grid;
            bn_grid(N, C, V, &grid);
            if (V == 4)
                bn_bwd_dx_kernel<T, 4><<<grid, dim3(32, 8), 0, s>>>(N, C, training, (const T *)x, (const T *)g,
                                                                   (const T *)gamma, (const T *)mean, (const T *)rstd,
                                                                   sgx, sg, (T *)dx);
            else
                bn_bwd_dx_kernel<T, 1><<<grid, dim3(32, 8), 0, s>>>(N, C, training, (const T *)x, (const T *)g,
                                                                   (const T *)gamma, (const T *)mean, (const T *)rstd,
                                                                   sgx, sg, (T *)dx);
        }
    });
    return cudaGetLastError();
}

#include "row_regs.cuh"
