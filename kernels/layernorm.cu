// LayerNorm over the rows of a (rows, d) tensor: forward (y, and the saved mean / rstd) and
// backward (dx, dgamma, dbeta).
//
// Layout: short rows (d <= 1024) run a warp per row with the row in registers (one read
// of global memory); f32 rows up to 8192 (d % 4 == 0, aligned) a block per row with the
// row in registers (the register-row kernels at the end of this file, row_regs.cuh);
// other long rows a block per row that keeps the row in shared memory when it fits
// (d * sizeof(T) <= SMEM_ROW_BYTES), else re-reads it (L2 hits).
// Determinism: fixed-order reductions only; dgamma/dbeta are per-block partials summed in
// block order by a second kernel.
// Accumulate rule: every output written (=).
// Bandwidth targets (f32, R rows x C columns):
//   layernorm fwd 2RC*4 (+8R for mean/rstd); bwd 3RC*4 (x, dy, dx) + partials
#include "common.cuh"
#include "row_regs.cuh"

// f32 rows in registers, defined at the end of this file (see row_regs.cuh for the contract)
static bool rowreg_layernorm(int64_t rows, int64_t d, float eps, const float *x, const float *gamma, const float *beta,
                             float *y, float *mean, float *rstd, cudaStream_t st, cudaError_t *err);
static bool rowreg_layernorm_bwd(int64_t rows, int64_t d, int64_t G, const float *x, const float *g, const float *gamma,
                                 const float *mean, const float *rstd, float *dx, float *part, int want,
                                 cudaStream_t st, cudaError_t *err);

// f32 LayerNorm statistics are computed in float; the CPU computes them in double. They part
// ways when the sum of squared deviations leaves float's range: it overflows once |x - mean|
// passes ~1.8e19 (the row would come out 0), or all but vanishes (constant or tiny rows,
// where eps may be 0). Such rows (qs is the same for the whole row) redo mean and rstd in
// double; ordinary rows keep the float statistics, so the fast path costs nothing.
__device__ __forceinline__ bool ln_stats_redo(float qs) { return !(qs < 1e37f && qs > 1e-30f); }
__device__ __forceinline__ bool ln_stats_redo(double) { return false; }

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

// ---------------------------------------------------------------- f32 rows in registers

template <int NV>
__global__ void layernorm_rowreg_kernel(int64_t d4, float eps, const float4 *__restrict__ x, const float4 *__restrict__ gamma,
                                        const float4 *__restrict__ beta, float4 *__restrict__ y, float *__restrict__ mean,
                                        float *__restrict__ rstd) {
    __shared__ float sh[32];
    int64_t row = blockIdx.x;
    float d = (float)(d4 * 4);
    float4 v[NV];
    rowreg_load<NV>(x + row * d4, d4, v, 0.f);
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < NV; k++) s += (v[k].x + v[k].y) + (v[k].z + v[k].w);
    float m = cg_block_sum(s, sh) / d, q = 0.f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        if (threadIdx.x + (int64_t)k * blockDim.x >= d4) continue;
        float a = v[k].x - m, b = v[k].y - m, c = v[k].z - m, w = v[k].w - m;
        q += (a * a + b * b) + (c * c + w * w);
    }
    float qs = cg_block_sum(q, sh), rs = frsqrt(qs / d + eps);
    if (ln_stats_redo(qs)) { // see ln_stats_redo above
        __shared__ double shd[32];
        double sd = 0.0, qd = 0.0;
#pragma unroll
        for (int k = 0; k < NV; k++) // rowreg_load filled 0 beyond d4
            sd += ((double)v[k].x + (double)v[k].y) + ((double)v[k].z + (double)v[k].w);
        double md = cg_block_sum(sd, shd) / (double)d;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            if (threadIdx.x + (int64_t)k * blockDim.x >= d4) continue;
            double a = v[k].x - md, b = v[k].y - md, c = v[k].z - md, w = v[k].w - md;
            qd += (a * a + b * b) + (c * c + w * w);
        }
        m = (float)md;
        rs = (float)(1.0 / sqrt(cg_block_sum(qd, shd) / (double)d + (double)eps));
    }
    float4 *yr = y + row * d4;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t j = threadIdx.x + (int64_t)k * blockDim.x;
        if (j >= d4) continue;
        float4 h = make_float4((v[k].x - m) * rs, (v[k].y - m) * rs, (v[k].z - m) * rs, (v[k].w - m) * rs);
        if (gamma) {
            float4 g = gamma[j];
            h.x *= g.x, h.y *= g.y, h.z *= g.z, h.w *= g.w;
        }
        if (beta) {
            float4 b = beta[j];
            h.x += b.x, h.y += b.y, h.z += b.z, h.w += b.w;
        }
        __stwb(yr + j, h);
    }
    if (threadIdx.x == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = rs;
    }
}

static bool rowreg_layernorm(int64_t rows, int64_t d, float eps, const float *x, const float *gamma, const float *beta,
                             float *y, float *mean, float *rstd, cudaStream_t st, cudaError_t *err) {
    const void *p[] = {x, gamma, beta, y};
    int t = 0, nv = rowreg_plan(d, p, 4, &t);
    if (!nv) return false;
    ROWREG_LAUNCH(layernorm_rowreg_kernel, nv, rows, t, st, d / 4, eps, (const float4 *)x, (const float4 *)gamma,
                  (const float4 *)beta, (float4 *)y, mean, rstd);
    *err = cudaGetLastError();
    return true;
}

// LayerNorm backward on the same rows: block b takes rows b, b + G, ... (G = gridDim.x, as
// layernorm_bwd_kernel); thread t owns the float4 groups t, t + blockDim, ... of every row.
// A row's x and dy are loaded to registers once (2 NV float4 loads in flight per thread),
// gamma once per block; dgamma (sum dy xhat) and dbeta (sum dy) accumulate in registers in
// row order and go to part[b] = [dgamma | dbeta] at the end, so the per-column sums, and
// ln_params_final_kernel's sum over blocks, run in the block kernel's order.
// dx = rstd (dh - mean(dh) - xhat mean(dh xhat)), dh = dy gamma.
template <int NV>
__global__ void layernorm_bwd_rowreg_kernel(int64_t rows, int64_t d4, const float4 *__restrict__ x,
                                            const float4 *__restrict__ g, const float4 *__restrict__ gamma,
                                            const float *__restrict__ mean, const float *__restrict__ rstd,
                                            float4 *__restrict__ dx, float *__restrict__ part, int want_params) {
    __shared__ float sh[32];
    float d = (float)(d4 * 4);
    float4 gm[NV], ag[NV], ab[NV];
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t j = threadIdx.x + (int64_t)k * blockDim.x;
        gm[k] = gamma && j < d4 ? gamma[j] : make_float4(1.f, 1.f, 1.f, 1.f);
        ag[k] = ab[k] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float4 xv[NV], gv[NV];
        rowreg_load<NV>(x + r * d4, d4, xv, 0.f);
        rowreg_load<NV>(g + r * d4, d4, gv, 0.f);
        float m = mean[r], rs = rstd[r], s1 = 0.f, s2 = 0.f;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            if (threadIdx.x + (int64_t)k * blockDim.x >= d4) continue;
            float xh[4] = {(xv[k].x - m) * rs, (xv[k].y - m) * rs, (xv[k].z - m) * rs, (xv[k].w - m) * rs};
            float gg[4] = {gv[k].x, gv[k].y, gv[k].z, gv[k].w}, gw[4] = {gm[k].x, gm[k].y, gm[k].z, gm[k].w};
            float *pa = &ag[k].x, *pb = &ab[k].x;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                float dh = gamma ? gg[c] * gw[c] : gg[c];
                s1 += dh;
                s2 += dh * xh[c];
                if (want_params) {
                    pa[c] += gg[c] * xh[c];
                    pb[c] += gg[c];
                }
            }
        }
        if (!dx) continue; // uniform: a kernel argument
        s1 = cg_block_sum(s1, sh) / d;
        s2 = cg_block_sum(s2, sh) / d;
        float4 *o = dx + r * d4;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int64_t j = threadIdx.x + (int64_t)k * blockDim.x;
            if (j >= d4) continue;
            float xh[4] = {(xv[k].x - m) * rs, (xv[k].y - m) * rs, (xv[k].z - m) * rs, (xv[k].w - m) * rs};
            float gg[4] = {gv[k].x, gv[k].y, gv[k].z, gv[k].w}, gw[4] = {gm[k].x, gm[k].y, gm[k].z, gm[k].w}, out[4];
#pragma unroll
            for (int c = 0; c < 4; c++) {
                float dh = gamma ? gg[c] * gw[c] : gg[c];
                out[c] = rs * (dh - s1 - xh[c] * s2);
            }
            __stwb(o + j, make_float4(out[0], out[1], out[2], out[3]));
        }
    }
    if (!want_params) return;
    float4 *pg = (float4 *)(part + (int64_t)blockIdx.x * 2 * d4 * 4), *pbv = pg + d4;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t j = threadIdx.x + (int64_t)k * blockDim.x;
        if (j >= d4) continue;
        __stwb(pg + j, ag[k]);
        __stwb(pbv + j, ab[k]);
    }
}

// G blocks as the block kernel; part from cg_cuda_layernorm_bwd_workspace
static bool rowreg_layernorm_bwd(int64_t rows, int64_t d, int64_t G, const float *x, const float *g, const float *gamma,
                                 const float *mean, const float *rstd, float *dx, float *part, int want,
                                 cudaStream_t st, cudaError_t *err) {
    const void *p[] = {x, g, gamma, dx, want ? part : NULL};
    int t = 0, nv = rowreg_plan(d, p, 5, &t);
    if (!nv) return false;
    ROWREG_LAUNCH(layernorm_bwd_rowreg_kernel, nv, G, t, st, rows, d / 4, (const float4 *)x, (const float4 *)g,
                  (const float4 *)gamma, mean, rstd, (float4 *)dx, part, want);
    *err = cudaGetLastError();
    return true;
}
