// Reductions: sum/mean over one axis or all (x viewed as (outer, n, inner)), their
// backward (broadcast of the output gradient), the sum of squares, and the elementwise
// terms and gradients of the MSE and BCE-with-logits losses.
//
// Determinism: no atomics. Each output is summed by a fixed tree (per-thread sequential
// runs, warp butterflies, warp partials in order); long reductions are split into S
// chunks whose partials go to a workspace and are then added in chunk order. S depends
// only on the shape, never on the device, so a result is bit-identical across runs.
// Accumulate rule: all outputs written (=). Accumulation in T (float for f32) for sum/mean;
// in double for the sum of squares, reduce_to and the MSE / BCE mean and sum.
// Bandwidth target: one read of x and one write of y: (outer*n*inner + outer*inner) *
// sizeof(T) bytes; split reductions add S*outer*inner*2*sizeof(T) of partials (small). The
// MSE / BCE mean and sum read a and b once and write only their partials (2 passes).
#include "common.cuh"

// ---------------------------------------------------------------- plan

typedef struct plan {
    int kind;  // 0 warp per row (inner 1, short rows), 1 block per (row, chunk), 2 columns
    int64_t S; // chunks along n
} plan;

static plan make_plan(int64_t outer, int64_t n, int64_t inner) {
    plan p;
    p.S = 1;
    if (inner == 1) {
        if (n <= 1024 && outer >= 64) {
            p.kind = 0;
        } else {
            p.kind = 1;
            if (outer < 512 && n > 65536) {
                int64_t s = (n + 65535) / 65536;
                p.S = s > 1024 ? 1024 : s;
            }
        }
    } else {
        p.kind = 2;
        int64_t blocks = outer * ((inner + 31) / 32);
        if (blocks < 512 && n >= 2048) {
            int64_t s = (n + 511) / 512, cap = (2048 + blocks - 1) / blocks;
            if (s > cap) s = cap;
            p.S = s > 1024 ? 1024 : s;
        }
    }
    return p;
}

extern "C" size_t cg_cuda_reduce_workspace(int dt, int64_t outer, int64_t n, int64_t inner) {
    plan p = make_plan(outer, n, inner);
    size_t es = dt == CG_F64 ? 8 : 4;
    return p.S > 1 ? (size_t)(p.S * outer * inner) * es : 0;
}

// ---------------------------------------------------------------- kernels

// warp per row: rows of length n <= 1024, 8 rows per 256-thread block
template <typename T> __global__ void rows_warp_kernel(int64_t outer, int64_t n, T scale, const T *__restrict__ x, T *__restrict__ y) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (row >= outer) return;
    const T *r = x + row * n;
    T s = T(0);
    for (int64_t k = lane; k < n; k += 32) s += r[k];
    s = cg_warp_sum(s);
    if (lane == 0) y[row] = s * scale;
}

// block per (row, chunk): dst[c * outer + row] = scale * sum of the chunk
template <typename T>
__global__ void rows_block_kernel(int64_t outer, int64_t n, int64_t S, T scale, const T *__restrict__ x, T *__restrict__ dst) {
    __shared__ T sh[32];
    int64_t row = blockIdx.x, c = blockIdx.y;
    int64_t L = (n + S - 1) / S, k0 = c * L, k1 = k0 + L < n ? k0 + L : n;
    const T *r = x + row * n;
    T s = T(0);
    for (int64_t k = k0 + threadIdx.x; k < k1; k += blockDim.x) s += r[k];
    s = cg_block_sum(s, sh);
    if (threadIdx.x == 0) dst[c * outer + row] = s * scale;
}

// columns: block (32, 8), grid (ceil(inner/32), min(outer, 65535), S);
// dst[c * outer * inner + o * inner + i] = scale * sum over the chunk of k of x[o, k, i]
template <typename T>
__global__ void cols_kernel(int64_t outer, int64_t n, int64_t inner, int64_t S, T scale, const T *__restrict__ x,
                            T *__restrict__ dst) {
    __shared__ T sh[8][33];
    int64_t i = (int64_t)blockIdx.x * 32 + threadIdx.x;
    int64_t c = blockIdx.z;
    int64_t L = (n + S - 1) / S, k0 = c * L, k1 = k0 + L < n ? k0 + L : n;
    for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
        T s = T(0);
        if (i < inner)
            for (int64_t k = k0 + threadIdx.y; k < k1; k += 8) s += x[(o * n + k) * inner + i];
        sh[threadIdx.y][threadIdx.x] = s;
        __syncthreads();
        if (threadIdx.y == 0 && i < inner) {
            T t = sh[0][threadIdx.x];
            for (int r = 1; r < 8; r++) t += sh[r][threadIdx.x];
            dst[c * outer * inner + o * inner + i] = t * scale;
        }
        __syncthreads();
    }
}

// y[j] = scale * sum_c partial[c * M + j], in chunk order
template <typename T> __global__ void final_kernel(int64_t M, int64_t S, T scale, const T *__restrict__ part, T *__restrict__ y) {
    CG_GRID_STRIDE(j, M) {
        T s = T(0);
        for (int64_t c = 0; c < S; c++) s += part[c * M + j];
        y[j] = s * scale;
    }
}

template <typename T> __global__ void nan_fill_kernel(int64_t M, T v, T *y) {
    CG_GRID_STRIDE(j, M) y[j] = v;
}

template <typename T>
static cudaError_t reduce_launch(int64_t outer, int64_t n, int64_t inner, double scale, const T *x, T *y, T *ws,
                                 cudaStream_t s) {
    int64_t M = outer * inner;
    if (M == 0) return cudaSuccess;
    if (n == 0) { // empty sums: 0, times scale (NaN for a mean, as 0/0)
        nan_fill_kernel<T><<<cg_blocks_for(M), CG_THREADS, 0, s>>>(M, (T)(0.0 * scale), y);
        return cudaGetLastError();
    }
    plan p = make_plan(outer, n, inner);
    T sc = (T)scale;
    if (p.kind == 0) {
        rows_warp_kernel<T><<<(unsigned)((outer + 7) / 8), 256, 0, s>>>(outer, n, sc, x, y);
        return cudaGetLastError();
    }
    T *dst = p.S > 1 ? ws : y;
    T first = p.S > 1 ? T(1) : sc;
    if (p.kind == 1) {
        dim3 grid((unsigned)outer, (unsigned)p.S);
        rows_block_kernel<T><<<grid, 256, 0, s>>>(outer, n, p.S, first, x, dst);
    } else {
        dim3 grid((unsigned)((inner + 31) / 32), (unsigned)(outer < 65535 ? outer : 65535), (unsigned)p.S);
        cols_kernel<T><<<grid, dim3(32, 8), 0, s>>>(outer, n, inner, p.S, first, x, dst);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || p.S == 1) return e;
    final_kernel<T><<<cg_blocks_for(M), CG_THREADS, 0, s>>>(M, p.S, sc, ws, y);
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_reduce_sum(int dt, int64_t outer, int64_t n, int64_t inner, double scale, const void *x,
                                          void *y, void *ws, cudaStream_t s) {
    if (outer > 0x7fffffff) return cudaErrorInvalidValue; // grid.x limit of the row kernels
    CG_DISPATCH_FLOAT(dt, T, return reduce_launch<T>(outer, n, inner, scale, (const T *)x, (T *)y, (T *)ws, s));
    return cudaErrorInvalidValue;
}

template <typename T>
__global__ void reduce_bwd_kernel(int64_t total, int64_t n, int64_t inner, T scale, const T *__restrict__ g, T *__restrict__ y) {
    CG_GRID_STRIDE(pos, total) {
        int64_t i = pos % inner, o = pos / (inner * n);
        y[pos] = g[o * inner + i] * scale;
    }
}

extern "C" cudaError_t cg_cuda_reduce_bwd(int dt, int64_t outer, int64_t n, int64_t inner, double scale, const void *g,
                                          void *y, cudaStream_t s) {
    int64_t total = outer * n * inner;
    if (total == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        reduce_bwd_kernel<T><<<cg_blocks_for(total), CG_THREADS, 0, s>>>(total, n, inner, (T)scale, (const T *)g,
                                                                          (T *)y);
    });
    return cudaGetLastError();
}

// ---------------------------------------------------------------- reduce_to / count_correct
// The training loop's device-side bookkeeping (backend.h: reduce_to, count_correct): a
// scalar f64 slot is written or accumulated on the stream, never read back by the host in
// a step. reduce_to: one read of x (n * sizeof(T) bytes) plus B partials; fixed block
// count for a given n and fixed order, so the bits are the same on every run.

#define REDUCE_TO_CHUNK 8192

static int64_t reduce_to_blocks(int64_t n) {
    int64_t b = (n + REDUCE_TO_CHUNK - 1) / REDUCE_TO_CHUNK;
    return b < 1 ? 1 : b > 1024 ? 1024 : b;
}

extern "C" size_t cg_cuda_reduce_to_workspace(int64_t n) { return (size_t)reduce_to_blocks(n) * sizeof(double); }

// The terms summed in double, as the CPU sums them (loss_cpu.inc): x, x^2, the MSE's
// (a - b)^2 and BCE with logits' max(a, 0) - a b + log1p(e^-|a|), each from double operands
// but for f32's log1p(e^-|a|), which stays in float so that the sum keeps to the memory
// floor on GPUs with few double units. The elementwise MSE and BCE kernels round them to T.
enum { TERM_X, TERM_SQUARE, TERM_MSE, TERM_BCE };

template <typename T, int TERM> __device__ __forceinline__ double term_at(const T *a, const T *b, int64_t k) {
    double v = (double)a[k];
    if (TERM == TERM_X) return v;
    if (TERM == TERM_SQUARE) return v * v;
    if (TERM == TERM_MSE) {
        double d = v - (double)b[k];
        return d * d;
    }
    double sp = sizeof(T) == 4 ? (double)log1pf(expf(-fabsf((float)v))) : log1p(exp(-fabs(v)));
    return (v > 0 ? v : 0.0) - v * (double)b[k] + sp;
}

// part[block] = the sum of the block's chunk of terms (chunk = n / B rounded up)
template <typename T, int TERM>
__global__ void part_sums_kernel(int64_t n, int64_t B, const T *__restrict__ a, const T *__restrict__ b, double *part) {
    __shared__ double sh[32];
    int64_t L = (n + B - 1) / B, k0 = (int64_t)blockIdx.x * L, k1 = k0 + L < n ? k0 + L : n;
    double s = 0.0;
    for (int64_t k = k0 + threadIdx.x; k < k1; k += blockDim.x) s += term_at<T, TERM>(a, b, k);
    s = cg_block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// the B partials in block order (one block of 256 threads)
__device__ __forceinline__ double sum_parts(int64_t B, const double *part, double *sh) {
    double s = 0.0;
    for (int64_t k = threadIdx.x; k < B; k += blockDim.x) s += part[k];
    return cg_block_sum(s, sh);
}

// dst (= or +=) alpha * sum(part): explicitly rounded, like the CPU's `alpha * s` and `d + v`
// (alpha = 0 still multiplies, so a non-finite sum poisons dst: the sticky guard)
__global__ void reduce_to_final_kernel(int64_t B, const double *part, double alpha, int accumulate, double *dst) {
    __shared__ double sh[32];
    double s = sum_parts(B, part, sh);
    if (threadIdx.x == 0) {
        double v = __dmul_rn(alpha, s);
        *dst = accumulate ? __dadd_rn(*dst, v) : v;
    }
}

template <typename T, int TERM>
static cudaError_t part_sums_launch(int64_t n, const T *a, const T *b, double *part, cudaStream_t s) {
    if (n == 0) return cudaMemsetAsync(part, 0, sizeof(double), s); // one zero partial
    int64_t B = reduce_to_blocks(n);
    part_sums_kernel<T, TERM><<<(unsigned)B, 256, 0, s>>>(n, B, a, b, part);
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_reduce_to(int dt, int64_t n, const void *x, double alpha, int square, int accumulate,
                                         double *dst, void *ws, cudaStream_t s) {
    cudaError_t e = cudaErrorInvalidValue;
    CG_DISPATCH_FLOAT(dt, T, {
        e = square ? part_sums_launch<T, TERM_SQUARE>(n, (const T *)x, NULL, (double *)ws, s)
                   : part_sums_launch<T, TERM_X>(n, (const T *)x, NULL, (double *)ws, s);
    });
    if (e != cudaSuccess) return e;
    reduce_to_final_kernel<<<1, 256, 0, s>>>(reduce_to_blocks(n), (const double *)ws, alpha, accumulate, dst);
    return cudaGetLastError();
}

// The row's first maximum, NaNs skipped; a NaN in column 0 wins (the CPU's sequential
// `row[j] > row[best]` scan). A warp per row: each lane keeps its first maximum over
// columns lane, lane + 32, ...; lanes combine by (larger value, then smaller index).
template <typename T>
__global__ void count_argmax_kernel(int64_t rows, int64_t C, const T *__restrict__ x, const void *target, int tdt,
                                    size_t ts, unsigned long long *count) {
    const int lane = threadIdx.x & 31;
    const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    unsigned long long ok = 0;
    for (int64_t r = warp; r < rows; r += nwarps) { // the same r for every lane of the warp
        const T *row = x + r * C;
        T bv = (T)0;
        int64_t bi = -1;
        for (int64_t j = lane; j < C; j += 32) {
            T v = row[j];
            if (!isnan(v) && (bi < 0 || v > bv)) bv = v, bi = j;
        }
        for (int o = 16; o > 0; o >>= 1) {
            T ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi;
        }
        if (lane == 0) {
            int64_t best = isnan(row[0]) || bi < 0 ? 0 : bi;
            double t = cg_load_f((const char *)target + (size_t)r * ts, tdt);
            ok += (double)best == t;
        }
    }
    if (lane == 0 && ok) atomicAdd(count, ok); // integer atomics: the total is exact in any order
}

// (N) or (N, 1) predictions: (x > 0) == (target > 0.5)
template <typename T>
__global__ void count_binary_kernel(int64_t n, const T *__restrict__ x, const void *target, int tdt, size_t ts,
                                    unsigned long long *count) {
    unsigned long long ok = 0;
    CG_GRID_STRIDE(i, n) {
        double t = cg_load_f((const char *)target + (size_t)i * ts, tdt);
        ok += ((double)x[i] > 0) == (t > 0.5);
    }
    if (ok) atomicAdd(count, ok);
}

__global__ void count_store_kernel(const unsigned long long *count, int accumulate, double *dst) {
    double v = (double)*count;
    *dst = accumulate ? __dadd_rn(*dst, v) : v;
}

extern "C" cudaError_t cg_cuda_count_correct(int dt, int64_t rows, int64_t C, const void *x, const void *target,
                                             int tdt, int accumulate, double *dst, void *ws, cudaStream_t s) {
    unsigned long long *count = (unsigned long long *)ws;
    size_t ts = cg_dtype_size((cg_dtype)tdt);
    cudaError_t e = cudaMemsetAsync(count, 0, sizeof *count, s);
    if (e != cudaSuccess) return e;
    if (rows > 0) {
        if (C > 1) {
            int64_t blocks = (rows + 7) / 8; // 8 warps of 256 threads, a row each
            unsigned grid = (unsigned)(blocks < 4096 ? blocks : 4096);
            CG_DISPATCH_FLOAT(dt, T, {
                count_argmax_kernel<T><<<grid, 256, 0, s>>>(rows, C, (const T *)x, target, tdt, ts, count);
            });
        } else {
            CG_DISPATCH_FLOAT(dt, T, {
                count_binary_kernel<T><<<cg_blocks_for(rows), CG_THREADS, 0, s>>>(rows, (const T *)x, target, tdt, ts, count);
            });
        }
        e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    count_store_kernel<<<1, 1, 0, s>>>(count, accumulate, dst);
    return cudaGetLastError();
}

// ---------------------------------------------------------------- losses

// (a - b)^2 from double operands, rounded once to T: the CPU's bits
template <typename T> __global__ void mse_terms_kernel(int64_t n, const T *__restrict__ a, const T *__restrict__ b, T *__restrict__ t) {
    CG_GRID_STRIDE(i, n) t[i] = (T)term_at<T, TERM_MSE>(a, b, i);
}

// max(x, 0) - x t + log1p(e^-|x|), stable for any x: the term the mean and sum add up,
// rounded once to T (the CPU's arithmetic, but for f32's log1p in float); a NaN x passes
template <typename T> __global__ void bce_terms_kernel(int64_t n, const T *__restrict__ x, const T *__restrict__ t, T *__restrict__ o) {
    CG_GRID_STRIDE(i, n) o[i] = x[i] != x[i] ? x[i] : (T)term_at<T, TERM_BCE>(x, t, i);
}

extern "C" cudaError_t cg_cuda_mse_terms(int dt, int64_t n, const void *a, const void *b, void *terms, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        mse_terms_kernel<T><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, (const T *)a, (const T *)b, (T *)terms);
    });
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_bce_terms(int dt, int64_t n, const void *x, const void *t, void *terms, cudaStream_t s) {
    if (n == 0) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        bce_terms_kernel<T><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, (const T *)x, (const T *)t, (T *)terms);
    });
    return cudaGetLastError();
}

// y (0-d, T) = sum of the terms / div, summed in double from one read of a and b (the CPU's
// `(T)(s / n)`; only the B partials go through memory)
template <typename T> __global__ void loss_final_kernel(int64_t B, const double *part, double div, T *y) {
    __shared__ double sh[32];
    double s = sum_parts(B, part, sh);
    if (threadIdx.x == 0) *y = (T)__ddiv_rn(s, div);
}

extern "C" size_t cg_cuda_pair_loss_workspace(int64_t n) { return cg_cuda_reduce_to_workspace(n); }

extern "C" cudaError_t cg_cuda_pair_loss_sum(int dt, int bce, int64_t n, const void *a, const void *b, double div,
                                             void *y, void *ws, cudaStream_t s) {
    cudaError_t e = cudaErrorInvalidValue;
    CG_DISPATCH_FLOAT(dt, T, {
        e = bce ? part_sums_launch<T, TERM_BCE>(n, (const T *)a, (const T *)b, (double *)ws, s)
                : part_sums_launch<T, TERM_MSE>(n, (const T *)a, (const T *)b, (double *)ws, s);
        if (e == cudaSuccess) {
            loss_final_kernel<T><<<1, 256, 0, s>>>(reduce_to_blocks(n), (const double *)ws, div, (T *)y);
            e = cudaGetLastError();
        }
    });
    return e;
}

// 2 (a - b) g / div in double, the CPU's order: its bits, and finite where (a - b) is not in T
template <typename T>
__global__ void mse_bwd_kernel(int64_t n, int per_elem, double div, const T *__restrict__ g, const T *__restrict__ a,
                               const T *__restrict__ b, T *__restrict__ ga, T *__restrict__ gb) {
    CG_GRID_STRIDE(i, n) {
        double v = 2.0 * ((double)a[i] - (double)b[i]) * (double)(per_elem ? g[i] : g[0]) / div;
        if (ga) ga[i] = (T)v;
        if (gb) gb[i] = (T)-v;
    }
}

template <typename T>
__global__ void bce_bwd_kernel(int64_t n, int per_elem, double div, const T *__restrict__ g, const T *__restrict__ x,
                               const T *__restrict__ t, T *__restrict__ gx, T *__restrict__ gt) {
    CG_GRID_STRIDE(i, n) {
        double gv = (double)(per_elem ? g[i] : g[0]) / div;
        T v = x[i];
        T sg = sizeof(T) == 4 ? (T)(1.0f / (1.0f + expf((float)-v))) : (T)(1.0 / (1.0 + exp((double)-v)));
        if (gx) gx[i] = (T)(((double)sg - (double)t[i]) * gv);
        if (gt) gt[i] = (T)(-(double)v * gv);
    }
}

extern "C" cudaError_t cg_cuda_mse_bwd(int dt, int64_t n, int per_elem, double div, const void *g, const void *a,
                                       const void *b, void *ga, void *gb, cudaStream_t s) {
    if (n == 0 || (!ga && !gb)) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        mse_bwd_kernel<T><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, per_elem, div, (const T *)g, (const T *)a,
                                                                   (const T *)b, (T *)ga, (T *)gb);
    });
    return cudaGetLastError();
}

extern "C" cudaError_t cg_cuda_bce_bwd(int dt, int64_t n, int per_elem, double div, const void *g, const void *x,
                                       const void *t, void *gx, void *gt, cudaStream_t s) {
    if (n == 0 || (!gx && !gt)) return cudaSuccess;
    CG_DISPATCH_FLOAT(dt, T, {
        bce_bwd_kernel<T><<<cg_blocks_for(n), CG_THREADS, 0, s>>>(n, per_elem, div, (const T *)g, (const T *)x,
                                                                   (const T *)t, (T *)gx, (T *)gt);
    });
    return cudaGetLastError();
}
