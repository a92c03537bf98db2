/* CPU reference backend: the kernels behind cg_cpu_backend (backend_cpu.c).
 *
 * Every kernel gets contiguous CPU tensors (except copy_strided and the CONTIGUOUS
 * forward, which take any strides). Float kernels support CG_F32 and CG_F64 and
 * accumulate reductions in double for both. Forward kernels write (=) c->out and
 * c->aux; backward kernels write (=) each non-NULL gin[i] at input i's shape. */
#ifndef CG_CPU_KERNELS_H
#define CG_CPU_KERNELS_H

#include <math.h>

#include "backend.h"

/* The one dtype error every float kernel returns. */
#define CG_CPU_BAD_DTYPE(opname, dt)                                                                          \
    CG_FAIL(CG_E_DTYPE, "%s: dtype %s not supported on cpu; cast to f32 or f64 with cg_tensor_cast", (opname), \
            cg_dtype_name(dt))

/* Calls fn_f32(...) or fn_f64(...) by dtype, else returns the dtype error. */
#define CG_CPU_DISPATCH(opname, dt, fn, ...)                                                                  \
    do {                                                                                                      \
        switch (dt) {                                                                                         \
        case CG_F32: return fn##_f32(__VA_ARGS__);                                                            \
        case CG_F64: return fn##_f64(__VA_ARGS__);                                                            \
        default: return CG_CPU_BAD_DTYPE((opname), (dt));                                                     \
        }                                                                                                     \
    } while (0)

/* Typed-template helpers: a *.inc file is included once with T=float, SFX=f32 and once
 * with T=double, SFX=f64; FN(name) names its functions name_f32 / name_f64. */
#define CG_CPU_CAT_(a, b) a##_##b
#define CG_CPU_CAT(a, b) CG_CPU_CAT_(a, b)

#define CG_CPU_PI 3.14159265358979323846

static inline const char *cg_cpu_op_name(const cg_op_call *c) { return cg_op_table[c->op].name; }
static inline int64_t cg_cpu_numel(const cg_tensor *t) { return cg__numel(t->shape, t->ndim); }
/* Size of the last axis (1 for a 0-d tensor). */
static inline int64_t cg_cpu_last_dim(const cg_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }

/* d/dv of tanh-GELU 0.5 v (1 + t), t = tanh(u), u = k (v + 0.044715 v^3). Where t has
 * saturated to +-1 the second term is exactly 0 (even when du overflows: without the test,
 * 0 * inf gave NaN for |v| beyond ~1e154, and on the GPU's f32 beyond ~1.8e19). */
static inline double cg_cpu_gelu_tanh_df(double v) {
    const double k = sqrt(2.0 / CG_CPU_PI);
    double t = tanh(k * (v + 0.044715 * v * v * v)), s = 1.0 - t * t;
    return 0.5 * (1.0 + t) + (s == 0.0 ? 0.0 : 0.5 * v * s * (k * (1.0 + 3.0 * 0.044715 * v * v)));
}

/* C (M, N) = op(A) op(B) (+ C when accumulate) through OpenBLAS, f32 or f64, row-major and
 * dense: A is (M, K) or (K, M) when ta; B is (K, N) or (N, K) when tb. */
void cg_cpu_gemm(cg_dtype dt, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, const void *B,
                 void *C, int accumulate);

/* y (cols) = column sums of g (rows, cols), f32 or f64, accumulated in double in row order:
 * the bias gradient of a broadcast add and of a linear layer. */
cg_status cg_cpu_colsum(cg_dtype dt, const void *g, int64_t rows, int64_t cols, void *y);

/* ---- backend services ---- */
cg_status cg_copy_strided_cpu(cg_tensor *dst, const cg_tensor *src);
cg_status cg_fill_cpu(cg_tensor *t, double value);
cg_status cg_optim_cpu(const cg_optim_call *c);
/* metrics_cpu.c: the reduce_to / count_correct entries of backend.h */
cg_status cg_reduce_to_cpu(cg_tensor *dst, const cg_tensor *x, double alpha, int square, int accumulate);
cg_status cg_copy_gated_cpu(cg_tensor *dst, const cg_tensor *src, const cg_tensor *gate);
cg_status cg_count_correct_cpu(cg_tensor *dst, const cg_tensor *pred, const cg_tensor *target, int accumulate);

/* ---- forward / backward kernels (tables in backend_cpu.c) ---- */
#define CG_CPU_KERNEL_PAIR(name)                                                                              \
    cg_status cg_##name##_fwd_cpu(const cg_op_call *c);                                                       \
    cg_status cg_##name##_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin);

CG_CPU_KERNEL_PAIR(matmul)      /* matmul_cpu.c */
CG_CPU_KERNEL_PAIR(linear)      /* linear_cpu.c: x W^T + b with a fused activation */
CG_CPU_KERNEL_PAIR(binary)      /* elementwise_cpu.c: add, sub, mul, div with broadcasting */
CG_CPU_KERNEL_PAIR(scale)       /* elementwise_cpu.c */
CG_CPU_KERNEL_PAIR(unary)       /* elementwise_cpu.c: exp, log, sqrt and the activations */
CG_CPU_KERNEL_PAIR(reduce)      /* reduce_cpu.c: sum, mean */
CG_CPU_KERNEL_PAIR(softmax)     /* softmax_cpu.c: softmax, log_softmax */
CG_CPU_KERNEL_PAIR(layernorm)   /* norm_cpu.c */
CG_CPU_KERNEL_PAIR(batchnorm)   /* norm_cpu.c */
CG_CPU_KERNEL_PAIR(dropout)     /* dropout_cpu.c */
CG_CPU_KERNEL_PAIR(mse)         /* loss_cpu.c */
CG_CPU_KERNEL_PAIR(bce_logits)  /* loss_cpu.c */
CG_CPU_KERNEL_PAIR(softmax_ce)  /* loss_cpu.c */
CG_CPU_KERNEL_PAIR(contiguous)  /* backend_cpu.c */
#undef CG_CPU_KERNEL_PAIR

/* ---- test oracles ---- */
/* C = op(A) op(B) as a plain triple loop in double; op(A) is M x K, op(B) is K x N, all
 * row-major and dense: A is (M, K), or (K, M) when trans_a; B is (K, N), or (N, K). */
void cg_matmul_ref_f64(const double *A, const double *B, double *C, int64_t M, int64_t N, int64_t K,
                       int trans_a, int trans_b);
/* The same on contiguous CPU tensors of f32/f64 (inputs may differ in dtype): out must be a
 * contiguous (M, N) f32/f64 tensor; sums in double, rounds once on store. */
cg_status cg_matmul_ref_cpu(const cg_tensor *a, const cg_tensor *b, int trans_a, int trans_b, cg_tensor *out);

#endif
