/* CPU layer norm (over the last axis) and batch norm (over axis 0 of (N, C)).
 * Statistics are computed two-pass in double; variance is biased for normalising.
 * aux0 = mean and aux1 = rstd = 1/sqrt(var + eps), in x's dtype, per row (layernorm) or
 * per channel (batchnorm); backward reads them instead of recomputing.
 * Backward, with xhat = (x - mean) rstd and dxhat = g gamma:
 *   layernorm / batchnorm training: dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
 *   batchnorm eval:                 dx = rstd dxhat
 *   dgamma = sum g xhat, dbeta = sum g (over rows). */
#include <math.h>
#include <stdlib.h>

#include "cpu_kernels.h"

#define CG_CPU_TEMPLATE "norm_cpu.inc"
#include "instantiate.h"

static cg_status check_aux(const cg_op_call *c, const char *op) {
    if (!c->aux[0] || !c->aux[1]) return CG_FAIL(CG_E_INTERNAL, "%s: mean/rstd buffers missing", op);
    return CG_OK;
}

cg_status cg_layernorm_fwd_cpu(const cg_op_call *c) {
    CG_CPU_DISPATCH("layernorm", c->out->dtype, layernorm_fwd, c);
}

cg_status cg_layernorm_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_TRY(check_aux(c, "layernorm backward"));
    CG_CPU_DISPATCH("layernorm", gout->dtype, layernorm_bwd, c, gout, gin);
}

cg_status cg_batchnorm_fwd_cpu(const cg_op_call *c) {
    CG_CPU_DISPATCH("batchnorm", c->out->dtype, batchnorm_fwd, c);
}

cg_status cg_batchnorm_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_TRY(check_aux(c, "batchnorm backward"));
    CG_CPU_DISPATCH("batchnorm", gout->dtype, batchnorm_bwd, c, gout, gin);
}
