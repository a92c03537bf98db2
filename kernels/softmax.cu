// Softmax / log-softmax (forward, backward) and the fused softmax cross-entropy (forward,
// backward) over the rows of a (rows, d) tensor.
// Data errors: the cross-entropy forward records an out-of-range label in the context's
// sticky error word (no host sync; reported at the next one, see docs/cuda.md "Errors").
//
// Layout: short rows (d <= 1024) run a warp per row with the row in registers (one read
// of global memory); f32 rows up to 8192 (d % 4 == 0, aligned) a block per row with the
// row in registers (the register-row kernels at the end of this file, row_regs.cuh);
// other long rows a block per row that keeps the row in shared memory when it fits
// (d * sizeof(T) <= SMEM_ROW_BYTES), else re-reads it (L2 hits).
// Determinism: fixed-order reductions only (the online max/sum merges in lane order).
// Accumulate rule: every output written (=).
// Bandwidth targets (f32, R rows x C columns):
//   softmax fwd 2RC*4 (read x, write y); bwd 3RC*4 (y, dy, dx)
//   softmax_ce fwd RC*4 (+RC*4 when the gradient is written); bwd 2RC*4
#include "common.cuh"
#include "row_regs.cuh"

// f32 rows in registers, defined at the end of this file (see row_regs.cuh for the contract)
static bool rowreg_softmax(int logsm, int64_t rows, int64_t d, const float *x, float *y, cudaStream_t st,
                           cudaError_t *err);
static bool rowreg_softmax_bwd(int logsm, int64_t rows, int64_t d, const float *y, const float *g, float *dx,
                               cudaStream_t st, cudaError_t *err);
static bool rowreg_softmax_ce(int64_t rows, int64_t C, const float *x, const void *labels, int lab64, float ls, float gs,
                              float *loss, float *grad, cg_cuda_err_sink e, cudaStream_t st, cudaError_t *err);

// The variant switch of row_regs.cuh, for both files of register-row kernels (here and
// layernorm.cu): bench_kernels times the block kernels on the same shapes in the same run.
static int g_rowreg = 1;
extern "C" void cg__cuda_set_row_kernels(int use_registers) { g_rowreg = use_registers != 0; }
int cg_rowreg_enabled(void) { return g_rowreg; }

// ---------------------------------------------------------------- online max/sum

__device__ __forceinline__ float fexp(float v) { return expf(v); }
__device__ __forceinline__ double fexp(double v) { return exp(v); }
__device__ __forceinline__ float flog(float v) { return logf(v); }
__device__ __forceinline__ double flog(double v) { return log(v); }

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

// ---------------------------------------------------------------- f32 rows in registers

__device__ __forceinline__ float nanmax(float a, float b) { return (b > a || b != b) ? b : a; }

// max over the row (NaN wins), then sum of exp(x - max) over the valid columns; e = the exps
template <int NV> __device__ __forceinline__ void rowreg_softmax_stats(const float4 (&v)[NV], int64_t d4, float4 (&e)[NV],
                                                                     float *m, float *s, float *sh) {
    float mx = -INFINITY;
#pragma unroll
    for (int k = 0; k < NV; k++) mx = nanmax(nanmax(nanmax(nanmax(mx, v[k].x), v[k].y), v[k].z), v[k].w);
    mx = cg_block_max(mx, sh);
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        e[k] = make_float4(fexp(v[k].x - mx), fexp(v[k].y - mx), fexp(v[k].z - mx), fexp(v[k].w - mx));
        if (threadIdx.x + (int64_t)k * blockDim.x < d4) sum += (e[k].x + e[k].y) + (e[k].z + e[k].w);
    }
    *m = mx;
    *s = cg_block_sum(sum, sh);
}

template <int NV>
__global__ void softmax_rowreg_kernel(int64_t d4, int logsm, const float4 *__restrict__ x, float4 *__restrict__ y) {
    __shared__ float sh[32];
    int64_t row = blockIdx.x;
    float4 v[NV], e[NV];
    rowreg_load<NV>(x + row * d4, d4, v, -INFINITY);
    float m, s;
    rowreg_softmax_stats<NV>(v, d4, e, &m, &s, sh);
    float ls = flog(s);
    float4 *yr = y + row * d4;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t j = threadIdx.x + (int64_t)k * blockDim.x;
        if (j >= d4) continue;
        float4 o = logsm ? make_float4(v[k].x - m - ls, v[k].y - m - ls, v[k].z - m - ls, v[k].w - m - ls)
                         : make_float4(e[k].x / s, e[k].y / s, e[k].z / s, e[k].w / s);
        __stwb(yr + j, o);
    }
}

static bool rowreg_softmax(int logsm, int64_t rows, int64_t d, const float *x, float *y, cudaStream_t st,
                           cudaError_t *err) {
    const void *p[] = {x, y};
    int t = 0, nv = rowreg_plan(d, p, 2, &t);
    if (!nv) return false;
    ROWREG_LAUNCH(softmax_rowreg_kernel, nv, rows, t, st, d / 4, logsm, (const float4 *)x, (float4 *)y);
    *err = cudaGetLastError();
    return true;
}

// softmax: dx = y (g - sum g y); log-softmax: dx = g - exp(y) sum g (softmax_bwd_block_kernel)
template <int NV>
__global__ void softmax_bwd_rowreg_kernel(int64_t d4, int logsm, const float4 *__restrict__ y, const float4 *__restrict__ g,
                                         float4 *__restrict__ dx) {
    __shared__ float sh[32];
    int64_t row = blockIdx.x;
    float4 yv[NV], gv[NV];
    rowreg_load<NV>(y + row * d4, d4, yv, 0.f);
    rowreg_load<NV>(g + row * d4, d4, gv, 0.f);
    float acc = 0.f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        if (threadIdx.x + (int64_t)k * blockDim.x >= d4) continue;
        acc += logsm ? (gv[k].x + gv[k].y) + (gv[k].z + gv[k].w)
                     : (gv[k].x * yv[k].x + gv[k].y * yv[k].y) + (gv[k].z * yv[k].z + gv[k].w * yv[k].w);
    }
    acc = cg_block_sum(acc, sh);
    float4 *o = dx + row * d4;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t j = threadIdx.x + (int64_t)k * blockDim.x;
        if (j >= d4) continue;
        float4 a = yv[k], b = gv[k];
        __stwb(o + j, logsm ? make_float4(b.x - fexp(a.x) * acc, b.y - fexp(a.y) * acc, b.z - fexp(a.z) * acc,
                                          b.w - fexp(a.w) * acc)
                            : make_float4(a.x * (b.x - acc), a.y * (b.y - acc), a.z * (b.z - acc), a.w * (b.w - acc)));
    }
}

static bool rowreg_softmax_bwd(int logsm, int64_t rows, int64_t d, const float *y, const float *g, float *dx,
                               cudaStream_t st, cudaError_t *err) {
    const void *p[] = {y, g, dx};
    int t = 0, nv = rowreg_plan(d, p, 3, &t);
    if (!nv) return false;
    ROWREG_LAUNCH(softmax_bwd_rowreg_kernel, nv, rows, t, st, d / 4, logsm, (const float4 *)y, (const float4 *)g,
                  (float4 *)dx);
    *err = cudaGetLastError();
    return true;
}

// loss_row = lse - (1-ls) x[lab] - [ls > 0] (ls/C) sum x; grad = (softmax - q) gs, q the
// smoothed one-hot (as softmax_ce_block_kernel)
template <int NV>
__global__ void softmax_ce_rowreg_kernel(int64_t C4, const float4 *__restrict__ x, const void *labels, int lab64, float ls,
                                         float gs, float *__restrict__ loss, float4 *__restrict__ grad,
                                         cg_cuda_err_sink err) {
    __shared__ float sh[32];
    int64_t row = blockIdx.x, C = C4 * 4;
    float4 v[NV], e[NV];
    rowreg_load<NV>(x + row * C4, C4, v, -INFINITY);
    int64_t lab = load_label(labels, lab64, row);
    bool ok = lab >= 0 && lab < C;
    float m, s;
    rowreg_softmax_stats<NV>(v, C4, e, &m, &s, sh);
    float on = 1.f - ls, off = ls / (float)C, sx = 0.f;
    if (ls > 0.f) {
#pragma unroll
        for (int k = 0; k < NV; k++)
            if (threadIdx.x + (int64_t)k * blockDim.x < C4) sx += (v[k].x + v[k].y) + (v[k].z + v[k].w);
        sx = cg_block_sum(sx, sh);
    }
    if (threadIdx.x == 0) {
        float xl = ok ? ((const float *)(x + row * C4))[lab] : 0.f;
        loss[row] = ok ? m + flog(s) - on * xl - (ls > 0.f ? off * sx : 0.f) : NAN;
        if (!ok) err_record(err, CG_CUDA_ERR_CE_LABEL, row, lab, C);
    }
    if (!grad) return;
    float4 *gr = grad + row * C4;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t j = threadIdx.x + (int64_t)k * blockDim.x;
        if (j >= C4) continue;
        float4 o;
        if (ok) {
            int64_t c = 4 * j;
            o = make_float4((e[k].x / s - (c == lab ? on + off : off)) * gs, (e[k].y / s - (c + 1 == lab ? on + off : off)) * gs,
                            (e[k].z / s - (c + 2 == lab ? on + off : off)) * gs,
                            (e[k].w / s - (c + 3 == lab ? on + off : off)) * gs);
        } else {
            o = make_float4(NAN, NAN, NAN, NAN);
        }
        __stwb(gr + j, o);
    }
}

static bool rowreg_softmax_ce(int64_t rows, int64_t C, const float *x, const void *labels, int lab64, float ls, float gs,
                              float *loss, float *grad, cg_cuda_err_sink e, cudaStream_t st, cudaError_t *err) {
    const void *p[] = {x, grad};
    int t = 0, nv = rowreg_plan(C, p, 2, &t);
    if (!nv) return false;
    ROWREG_LAUNCH(softmax_ce_rowreg_kernel, nv, rows, t, st, C / 4, (const float4 *)x, labels, lab64, ls, gs, loss,
                  (float4 *)grad, e);
    *err = cudaGetLastError();
    return true;
}

