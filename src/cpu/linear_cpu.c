/* CPU fused linear: out = act(x W^T + b), x (N, K), W (M, K), b (M) or NULL.
 * Forward: the bias rows are written first and the product accumulated onto them (one
 * gemm with beta = 1), then the activation in place; for GELU the pre-activation z goes
 * to aux (ReLU's backward reads the output: y > 0 exactly where z > 0).
 * Backward: gz = gy * act'(.), dx = gz W, dW = gz^T x, db = column sums of gz (in double,
 * rows in order). Each written with = . */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

#define CG_CPU_TEMPLATE "linear_cpu.inc"
#include "instantiate.h"

cg_status cg_linear_fwd_cpu(const cg_op_call *c) { CG_CPU_DISPATCH("linear", c->out->dtype, linear_fwd, c); }

cg_status cg_linear_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (c->p->act == CG_LINEAR_GELU_TANH && !c->aux[0])
        return CG_FAIL(CG_E_INTERNAL, "linear backward: the pre-activation was not saved");
    CG_CPU_DISPATCH("linear", gout->dtype, linear_bwd, c, gout, gin);
}
