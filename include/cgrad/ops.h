/* cgrad: differentiable ops. Each returns a new tensor through `out` and, when grad mode is
 * on and an input requires grad, records a node so cg_backward() can reach the inputs.
 * Inputs must share a device and (for float ops) a dtype: f32 or f64. */
#ifndef CGRAD_OPS_H
#define CGRAD_OPS_H

#include "tensor.h"

CG_EXTERN_C_BEGIN

#define CG_ALL_AXES (-1000) /* reduce over every axis */

typedef enum cg_reduction { CG_REDUCE_MEAN = 0, CG_REDUCE_SUM = 1, CG_REDUCE_NONE = 2 } cg_reduction;

/* out = op(a) @ op(b) for 2-d a, b; op transposes when the flag is set. */
CG_API cg_status cg_matmul(const cg_tensor *a, const cg_tensor *b, int trans_a, int trans_b, cg_tensor **out);

/* Fused linear layer, as torch.nn.Linear plus an activation: out = act(x @ w^T + b) for
 * x (N, K), w (M, K), b (M) or NULL. One op: on the GPU the bias and activation run in the
 * matmul's epilogue; the GELU here is the tanh form. */
typedef enum cg_linear_act { CG_LINEAR_NONE = 0, CG_LINEAR_RELU = 1, CG_LINEAR_GELU_TANH = 2 } cg_linear_act;
CG_API cg_status cg_linear(const cg_tensor *x, const cg_tensor *w, const cg_tensor *b, cg_linear_act act,
                           cg_tensor **out);

/* Elementwise with numpy broadcasting (a bias (C) broadcasts over rows of (N, C)). */
CG_API cg_status cg_add(const cg_tensor *a, const cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_sub(const cg_tensor *a, const cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_mul(const cg_tensor *a, const cg_tensor *b, cg_tensor **out);
CG_API cg_status cg_div(const cg_tensor *a, const cg_tensor *b, cg_tensor **out);
/* out = alpha * x + beta */
CG_API cg_status cg_scale(const cg_tensor *x, double alpha, double beta, cg_tensor **out);

/* Reductions over one axis (negative counts from the end) or CG_ALL_AXES. */
CG_API cg_status cg_sum(const cg_tensor *x, int axis, int keepdim, cg_tensor **out);
CG_API cg_status cg_mean(const cg_tensor *x, int axis, int keepdim, cg_tensor **out);

CG_API cg_status cg_exp(const cg_tensor *x, cg_tensor **out);
CG_API cg_status cg_log(const cg_tensor *x, cg_tensor **out);
CG_API cg_status cg_sqrt(const cg_tensor *x, cg_tensor **out);

/* Activations. */
CG_API cg_status cg_sigmoid(const cg_tensor *x, cg_tensor **out);
CG_API cg_status cg_tanh(const cg_tensor *x, cg_tensor **out);
CG_API cg_status cg_relu(const cg_tensor *x, cg_tensor **out);
CG_API cg_status cg_leaky_relu(const cg_tensor *x, double negative_slope, cg_tensor **out);
typedef enum cg_gelu_approx { CG_GELU_ERF = 0, CG_GELU_TANH = 1 } cg_gelu_approx;
CG_API cg_status cg_gelu(const cg_tensor *x, cg_gelu_approx approx, cg_tensor **out);

/* Softmax and log-softmax over the last axis, max-subtracted. */
CG_API cg_status cg_softmax(const cg_tensor *x, cg_tensor **out);
CG_API cg_status cg_log_softmax(const cg_tensor *x, cg_tensor **out);

/* LayerNorm over the last axis; gamma and beta (shape = last dim) may be NULL. */
CG_API cg_status cg_layernorm(const cg_tensor *x, const cg_tensor *gamma, const cg_tensor *beta, double eps,
                              cg_tensor **out);
/* BatchNorm over axis 0 of (N, C). training: batch statistics, and running_mean/var
 * (shape C, may be NULL) are updated in place with `momentum` (PyTorch convention,
 * unbiased variance). Eval: running statistics are used. */
CG_API cg_status cg_batchnorm(const cg_tensor *x, const cg_tensor *gamma, const cg_tensor *beta,
                              cg_tensor *running_mean, cg_tensor *running_var, int training, double momentum,
                              double eps, cg_tensor **out);

/* Inverted dropout: zero with probability p, scale survivors by 1/(1-p). The mask comes
 * from Philox keyed by rng->seed at rng->offset, so every backend draws the same mask;
 * rng->offset advances. When !training (or p == 0) out is x itself (a new reference). */
CG_API cg_status cg_dropout(const cg_tensor *x, double p, int training, cg_rng *rng, cg_tensor **out);

/* Losses. MSE: mean/sum of (pred - target)^2. BCE with logits: target in [0, 1].
 * Softmax cross-entropy: logits (N, C), labels (N) of i32 or i64 in [0, C); one fused op.
 * With CG_REDUCE_NONE the result has one value per element (MSE, BCE) or per row (CE). */
CG_API cg_status cg_mse_loss(const cg_tensor *pred, const cg_tensor *target, cg_reduction red, cg_tensor **out);
CG_API cg_status cg_bce_with_logits(const cg_tensor *logits, const cg_tensor *target, cg_reduction red,
                                    cg_tensor **out);
CG_API cg_status cg_softmax_cross_entropy(const cg_tensor *logits, const cg_tensor *labels, cg_reduction red,
                                          double label_smoothing, cg_tensor **out);

/* Views (share storage with x; differentiable). A -1 in shape is inferred. */
CG_API cg_status cg_reshape(const cg_tensor *x, const int64_t *shape, int ndim, cg_tensor **out);
CG_API cg_status cg_transpose(const cg_tensor *x, int dim0, int dim1, cg_tensor **out);
/* Rows [start, end) along axis 0. */
CG_API cg_status cg_slice_rows(const cg_tensor *x, int64_t start, int64_t end, cg_tensor **out);
/* A contiguous copy (or x itself, retained, when already contiguous). Differentiable. */
CG_API cg_status cg_contiguous(const cg_tensor *x, cg_tensor **out);

/* In-place updates, not recorded in the graph (for optimizers and no_grad code).
 * They bump the version counter; a tensor saved for backward that is changed this way
 * makes cg_backward() fail with CG_E_STATE. Refused on a leaf that requires grad while
 * grad mode is on. */
CG_API cg_status cg_add_(cg_tensor *y, double alpha, const cg_tensor *x); /* y += alpha * x */
CG_API cg_status cg_scale_(cg_tensor *y, double alpha);                    /* y *= alpha */

/* Sum of squares of all elements, returned on the host (synchronises). */
CG_API cg_status cg_sumsq(const cg_tensor *x, double *out);

/* Introspection of the op table. */
CG_API int cg_op_count(void);
CG_API const char *cg_op_name(int op);

CG_EXTERN_C_END
#endif
