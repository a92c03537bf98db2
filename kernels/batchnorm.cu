// BatchNorm over the channels of an (N, C) tensor: training forward (batch statistics,
// running mean / var updated in place), eval forward (running statistics), backward (dx, and
// in training the terms of the batch statistics).
// Determinism: fixed-order reductions only; the statistics are per-chunk partials merged in
// chunk order by a second kernel.
// Accumulate rule: every output written (=); running_mean/var updated in place.
// Bandwidth targets (f32, N x C):
//   train fwd 3NC*4 (x twice: statistics, then normalise; y once); eval 2NC*4;
//   bwd 5NC*4 (x, dy for the sums; x, dy again and dx).
#include "common.cuh"

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
