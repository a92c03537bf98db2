// Long f32 rows in registers: softmax / log-softmax forward and backward, fused softmax
// cross-entropy, LayerNorm forward and backward, for 1024 < d <= 8192 with d % 4 == 0 and
// 16-byte aligned rows.
// Included at the end of softmax_norm.cu (it uses that file's fexp/flog/frsqrt,
// load_label and err_record); the launchers there call these first: each returns false,
// launching nothing, when rowreg_plan() says the row does not fit, and the block kernels
// run; true when it launched, with the launch status in *err.
//
// One block per row, NV float4 per thread: every load of the row is issued before any
// arithmetic (NV independent 16-byte loads in flight per thread), then exact two-pass
// statistics on the registers (max, then the sum of exp(x - max); mean, then the sum of
// squared deviations), then one write. One DRAM read of x and one write of y, the floor.
// The online (max, sum) of the block kernels needs an exp per element in a loop-carried
// chain before the next load may issue; here the chain is gone. Semantics as the CPU:
// NaN anywhere makes the row NaN, +inf makes a softmax row NaN (exp(inf - inf)), a -inf
// logit has probability 0.
//
// Variant switch: g_rowreg (cg__cuda_set_row_kernels) lets bench_kernels time the block
// kernels on the same shapes in the same run.

static int g_rowreg = 1;
extern "C" void cg__cuda_set_row_kernels(int use_registers) { g_rowreg = use_registers != 0; }

// NV (float4 per thread: 2, 4 or 8, since d4 > 256) and threads for a row of d floats, or
// 0 when the shape or the pointers do not fit the register kernels. threads = ceil(d4 / NV)
// rounded up to a warp: 160 to 256.
static int rowreg_plan(int64_t d, const void *const *ptrs, int n, int *threads) {
    if (!g_rowreg || d <= 1024 || d > 8192 || d % 4) return 0;
    for (int i = 0; i < n; i++)
        if (ptrs[i] && !cg_aligned16(ptrs[i])) return 0;
    int64_t d4 = d / 4;
    int nv = d4 <= 512 ? 2 : d4 <= 1024 ? 4 : 8;
    int64_t t = (d4 + nv - 1) / nv;
    *threads = (int)((t + 31) / 32 * 32);
    return nv;
}

// KERNEL<NV><<<rows, threads>>>(args) for the planned NV
#define ROWREG_LAUNCH(KERNEL, nv, rows, threads, st, ...)                                                    \
    do {                                                                                                      \
        if ((nv) == 2) KERNEL<2><<<(unsigned)(rows), (threads), 0, (st)>>>(__VA_ARGS__);                       \
        else if ((nv) == 4) KERNEL<4><<<(unsigned)(rows), (threads), 0, (st)>>>(__VA_ARGS__);                  \
        else KERNEL<8><<<(unsigned)(rows), (threads), 0, (st)>>>(__VA_ARGS__);                                 \
    } while (0)

template <int NV> __device__ __forceinline__ void rowreg_load(const float4 *__restrict__ r, int64_t d4, float4 (&v)[NV], float pad) {
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t j = threadIdx.x + (int64_t)k * blockDim.x;
        v[k] = j < d4 ? r[j] : make_float4(pad, pad, pad, pad);
    }
}

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

// y = (x - mean) rstd [* gamma] [+ beta], mean and rstd of the row (two passes on registers)
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
    if (ln_stats_redo(qs)) { // see ln_stats_redo in softmax_norm.cu
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
