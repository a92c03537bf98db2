/* Launchers of the kernels in the kernels/ .cu files, callable from the C glue in src/cuda.
 *
 * Conventions: every launcher queues work on `s` and returns cudaGetLastError() (or
 * cudaSuccess when there is nothing to do: n == 0 never launches). `dt` is a cg_dtype
 * (CG_F32 or CG_F64 for float kernels). Pointers are device pointers to contiguous data
 * unless a geometry says otherwise. Kernels never synchronise the host. */
#ifndef CG_CUDA_KERNELS_H
#define CG_CUDA_KERNELS_H

#include <stdint.h>
#include <cuda_runtime_api.h>

#include "broadcast.h"
#include "optim_math.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_CUDA_MAX_DIMS 8

/* ---- elementwise.cu ---- */

/* Broadcast geometry of a binary op (src/broadcast.h, shared with the CPU backend). */
typedef cg_bcast cg_cuda_bcast;

enum { CG_CUDA_ADD = 0, CG_CUDA_SUB, CG_CUDA_MUL, CG_CUDA_DIV };

/* y[pos] = a[ia] op b[ib] (=) */
cudaError_t cg_cuda_binary(int dt, int op, const cg_cuda_bcast *g, const void *a, const void *b, void *y,
                           cudaStream_t s);
/* Per output position, the gradient contributions of a and b (=), output-shaped:
 * ga_full/gb_full may be NULL when not wanted. a, b may be NULL for add/sub. */
cudaError_t cg_cuda_binary_bwd(int dt, int op, const cg_cuda_bcast *g, const void *gout, const void *a,
                               const void *b, void *ga_full, void *gb_full, cudaStream_t s);

/* y = alpha x + beta (add_beta) or alpha x (=), in double, rounded once to the dtype: the CPU's bits */
cudaError_t cg_cuda_scale(int dt, int64_t n, double alpha, double beta, int add_beta, const void *x, void *y,
                          cudaStream_t s);

enum {
    CG_CUDA_EXP = 0, CG_CUDA_LOG, CG_CUDA_SQRT, CG_CUDA_SIGMOID, CG_CUDA_TANH, CG_CUDA_RELU, CG_CUDA_LEAKY_RELU,
    CG_CUDA_GELU_ERF, CG_CUDA_GELU_TANH
};
/* y = f(x) (=) */
cudaError_t cg_cuda_unary(int dt, int fn, int64_t n, double slope, const void *x, void *y, cudaStream_t s);
/* gi = g * f'(.) (=); `saved` is the output for exp/sqrt/sigmoid/tanh, else the input */
cudaError_t cg_cuda_unary_bwd(int dt, int fn, int64_t n, double slope, const void *g, const void *saved, void *gi,
                              cudaStream_t s);

/* y = keep(i) ? x * 1/(1-p) : 0 with keep = cg_dropout_keep(seed, offset, i, p) (=) */
/* shift (device, may be NULL): added to offset by the kernel (a replayed graph's stream advance) */
cudaError_t cg_cuda_dropout(int dt, int64_t n, double p, uint64_t seed, uint64_t offset, const uint64_t *shift,
                            const void *x, void *y, cudaStream_t s);

/* y[i] = value converted to dt (any dtype) (=) */
cudaError_t cg_cuda_fill(int dt, int64_t n, double value, void *y, cudaStream_t s);

/* Strided copy with dtype conversion: dst[dst_strides . idx] = convert(src[src_strides . idx]). */
typedef struct cg_cuda_copy_geom {
    int nd;
    int64_t n;
    int64_t shape[CG_CUDA_MAX_DIMS];
    int64_t sd[CG_CUDA_MAX_DIMS], ss[CG_CUDA_MAX_DIMS]; /* element strides */
} cg_cuda_copy_geom;
cudaError_t cg_cuda_copy_strided(int ddt, int sdt, const cg_cuda_copy_geom *g, void *dst, const void *src,
                                 cudaStream_t s);

/* Philox uniform [a, b) (dist 0) or normal(a, b) (dist 1), stream layout of philox.h (=) */
cudaError_t cg_cuda_rand(int dt, int64_t n, int dist, double a, double b, uint64_t seed, uint64_t offset, void *y,
                         cudaStream_t s);

/* y += alpha*x ; y *= alpha (in place) */
cudaError_t cg_cuda_axpy(int dt, int64_t n, double alpha, const void *x, void *y, cudaStream_t s);
cudaError_t cg_cuda_scal(int dt, int64_t n, double alpha, void *y, cudaStream_t s);

/* One fused optimizer update over flat buffers; semantics of cg_optim_call (backend.h). */
/* a_dev (device, may be NULL): the coefficients the kernel reads instead of *a (a replayed graph's) */
cudaError_t cg_cuda_optim(int dt, int64_t n, const cg_optim_coef *a, const cg_optim_coef *a_dev, void *p, const void *g,
                          void *m, void *v, const double *gate, const double *sumsq, double clip_max, cudaStream_t s);

/* dst[0 .. n) = src[0 .. n), n <= sizeof(cg_cuda_bytes), the bytes passed by value to a kernel on s:
 * a CUDA graph's per-replay scalars, set before the replay without a host buffer to keep alive */
typedef struct cg_cuda_bytes {
    unsigned char b[256];
} cg_cuda_bytes;
cudaError_t cg_cuda_set_bytes(void *dst, const void *src, size_t n, cudaStream_t s);
/* dst[0 .. nbytes) = src[...] when *gate is finite (backend.h copy_gated) */
cudaError_t cg_cuda_copy_gated(void *dst, const void *src, size_t nbytes, const double *gate, cudaStream_t s);

/* ---- reduce.cu ---- */

/* Bytes of scratch cg_cuda_reduce_sum needs for this shape (0: none). */
size_t cg_cuda_reduce_workspace(int dt, int64_t outer, int64_t n, int64_t inner);
/* x viewed as (outer, n, inner): y[o, i] = scale * sum_k x[o, k, i] (=), fixed summation
 * order (no atomics): the same bits on every run. ws: cg_cuda_reduce_workspace bytes. */
cudaError_t cg_cuda_reduce_sum(int dt, int64_t outer, int64_t n, int64_t inner, double scale, const void *x, void *y,
                               void *ws, cudaStream_t s);
/* y[o, k, i] = scale * g[o, i] (=) */
cudaError_t cg_cuda_reduce_bwd(int dt, int64_t outer, int64_t n, int64_t inner, double scale, const void *g, void *y,
                               cudaStream_t s);
/* *dst (device double) = or += alpha * sum x (square: x^2), deterministic; ws:
 * cg_cuda_reduce_to_workspace bytes (backend.h: reduce_to) */
size_t cg_cuda_reduce_to_workspace(int64_t n);
cudaError_t cg_cuda_reduce_to(int dt, int64_t n, const void *x, double alpha, int square, int accumulate,
                              double *dst, void *ws, cudaStream_t s);
/* *dst (device double) = or += correct rows of x (rows, C) against target (dtype tdt);
 * ws: 8 bytes (backend.h: count_correct) */
cudaError_t cg_cuda_count_correct(int dt, int64_t rows, int64_t C, const void *x, const void *target, int tdt,
                                  int accumulate, double *dst, void *ws, cudaStream_t s);

/* Losses: elementwise terms (=) into `terms` (n values), for reduction NONE. */
cudaError_t cg_cuda_mse_terms(int dt, int64_t n, const void *a, const void *b, void *terms, cudaStream_t s);
cudaError_t cg_cuda_bce_terms(int dt, int64_t n, const void *x, const void *t, void *terms, cudaStream_t s);
/* MEAN / SUM: y (0-d, =) = the sum of the MSE (bce 0) or BCE-with-logits (bce 1) terms,
 * summed in double, / div (n or 1); deterministic; ws: cg_cuda_pair_loss_workspace bytes */
size_t cg_cuda_pair_loss_workspace(int64_t n);
cudaError_t cg_cuda_pair_loss_sum(int dt, int bce, int64_t n, const void *a, const void *b, double div, void *y,
                                  void *ws, cudaStream_t s);
/* Gradients (=): g is a scalar (per_elem 0) or per element (per_elem 1), divided by div
 * (n for MEAN, else 1), in double. mse: ga = 2 (a - b) g / div, gb = -ga.
 * bce: gx = (sigmoid(x) - t) g / div, gt = -x g / div. */
cudaError_t cg_cuda_mse_bwd(int dt, int64_t n, int per_elem, double div, const void *g, const void *a,
                            const void *b, void *ga, void *gb, cudaStream_t s);
cudaError_t cg_cuda_bce_bwd(int dt, int64_t n, int per_elem, double div, const void *g, const void *x,
                            const void *t, void *gx, void *gt, cudaStream_t s);

/* ---- softmax.cu ---- */

/* softmax / log-softmax over the last axis of (rows, d) (=) */
cudaError_t cg_cuda_softmax(int dt, int logsm, int64_t rows, int64_t d, const void *x, void *y, cudaStream_t s);
/* Benchmarks only: 0 sends long f32 rows to the block kernels instead of the register
 * kernels (kernels/row_regs.cuh), so both can be timed in one run. Not thread-safe. */
void cg__cuda_set_row_kernels(int use_registers);
/* dx from the saved output y (=): softmax y (g - sum g y); log-softmax g - exp(y) sum g */
cudaError_t cg_cuda_softmax_bwd(int dt, int logsm, int64_t rows, int64_t d, const void *y, const void *g, void *dx,
                                cudaStream_t s);

/* Sticky device error (docs/cuda.md "Errors"): a kernel that finds bad data claims the
 * device word *claim with atomicCAS(0 -> code); only the winner fills *rec (mapped pinned
 * host memory, through its device address), publishing rec->code last. The host reads and
 * clears it after each wait (cg_cuda_err_check). rec NULL: not available, record nothing. */
enum { CG_CUDA_ERR_NONE = 0, CG_CUDA_ERR_CE_LABEL = 1 /* row, value = label, limit = C */ };
typedef struct cg_cuda_err_rec {
    unsigned long long code; /* CG_CUDA_ERR_*, written last */
    long long row, value, limit;
} cg_cuda_err_rec;
typedef struct cg_cuda_err_sink {
    unsigned long long *claim; /* device memory, 0 when free */
    cg_cuda_err_rec *rec;      /* device address of the mapped host record, or NULL */
} cg_cuda_err_sink;

/* Fused softmax cross-entropy forward, one read of the logits per row:
 * loss[r] = logsumexp(x_r) - sum_j t_j x_rj with t = (1-ls) onehot(label) + ls/C (=);
 * grad (may be NULL) [r, j] = (softmax(x_r)_j - t_j) * gscale (=), gscale = 1/N for a mean
 * (the CPU's aux convention). Labels are i32 (lab64 0) or i64;
 * an out-of-range label gives NaN for that row and is recorded in `err`
 * (CG_CUDA_ERR_CE_LABEL, the first claimant wins). */
cudaError_t cg_cuda_softmax_ce(int dt, int64_t rows, int64_t C, const void *x, const void *labels, int lab64,
                               double ls, double gscale, void *loss, void *grad, cg_cuda_err_sink err,
                               cudaStream_t s);
/* dx[r, j] = grad[r, j] * (per_row ? g[r] : g[0]) * scale (=) */
cudaError_t cg_cuda_softmax_ce_bwd(int dt, int64_t rows, int64_t C, int per_row, double scale, const void *g,
                                   const void *grad, void *dx, cudaStream_t s);

/* ---- layernorm.cu ---- */

/* LayerNorm over the last axis of (rows, d): y (=), mean/rstd (=, may be NULL);
 * gamma/beta may be NULL. */
cudaError_t cg_cuda_layernorm(int dt, int64_t rows, int64_t d, double eps, const void *x, const void *gamma,
                              const void *beta, void *y, void *mean, void *rstd, cudaStream_t s);
size_t cg_cuda_layernorm_bwd_workspace(int dt, int64_t rows, int64_t d);
/* dx, dgamma, dbeta (=, each may be NULL); deterministic (per-block partials, fixed-order sum). */
cudaError_t cg_cuda_layernorm_bwd(int dt, int64_t rows, int64_t d, const void *x, const void *g, const void *gamma,
                                  const void *mean, const void *rstd, void *dx, void *dgamma, void *dbeta, void *ws,
                                  cudaStream_t s);

/* ---- batchnorm.cu ---- */

/* BatchNorm over axis 0 of (N, C). Training: batch mean and rstd (Welford partials merged
 * in fixed order) into mean/rstd (=), running stats updated (momentum, unbiased var) when
 * non-NULL. Eval: mean/rstd from the running stats. Then y (=). */
size_t cg_cuda_batchnorm_workspace(int dt, int64_t N, int64_t C);
cudaError_t cg_cuda_batchnorm(int dt, int training, int64_t N, int64_t C, double eps, double momentum, const void *x,
                              const void *gamma, const void *beta, void *run_mean, void *run_var, void *y, void *mean,
                              void *rstd, void *ws, cudaStream_t s);
/* mean = run_mean, rstd = 1/sqrt(run_var + eps) (=): the eval-mode statistics alone */
cudaError_t cg_cuda_batchnorm_eval_stats(int dt, int64_t C, double eps, const void *run_mean, const void *run_var,
                                         void *mean, void *rstd, cudaStream_t s);
/* dx (=, may be NULL), dgamma = sum g xhat, dbeta = sum g (=, may be NULL). */
cudaError_t cg_cuda_batchnorm_bwd(int dt, int training, int64_t N, int64_t C, const void *x, const void *g,
                                  const void *gamma, const void *mean, const void *rstd, void *dx, void *dgamma,
                                  void *dbeta, void *ws, cudaStream_t s);

#ifdef __cplusplus
}
#endif
#endif
