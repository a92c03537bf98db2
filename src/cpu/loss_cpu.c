/* CPU losses: MSE, BCE with logits, fused softmax cross-entropy. Sums in double.
 * For MEAN/SUM the output is 0-d and the upstream gradient is its single element; for
 * NONE it is elementwise (per row for cross-entropy).
 *   mse:        l = (p - t)^2;                      dp = 2 (p - t) g, dt = -dp
 *   bce_logits: l = max(x,0) - x t + log1p(e^-|x|); dx = (sigmoid(x) - t) g, dt = -x g
 *   softmax_ce: l = logsumexp(x) - sum_j q_j x_j with q = (1-ls) onehot + ls/C;
 *               dx = (softmax(x) - q) g, written to aux0 by the forward (g = 1, /N for mean)
 * MEAN divides the gradient by the number of terms. Labels never get a gradient. */
#include <math.h>

#include "cpu_kernels.h"

/* Upstream gradient of term i: per term for NONE, the single element otherwise. */
#define GRAD_AT(g, red, i) ((red) == CG_REDUCE_NONE ? (double)(g)[i] : (double)(g)[0])

static int64_t label_at(const cg_tensor *labels, int64_t r) {
    return labels->dtype == CG_I32 ? (int64_t)((const int32_t *)cg__ptr(labels))[r]
                                   : ((const int64_t *)cg__ptr(labels))[r];
}

#define CG_CPU_TEMPLATE "loss_cpu.inc"
#include "instantiate.h"

cg_status cg_mse_fwd_cpu(const cg_op_call *c) { CG_CPU_DISPATCH("mse_loss", c->in[0]->dtype, mse_fwd, c); }

cg_status cg_mse_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_CPU_DISPATCH("mse_loss", c->in[0]->dtype, mse_bwd, c, gout, gin);
}

cg_status cg_bce_logits_fwd_cpu(const cg_op_call *c) {
    CG_CPU_DISPATCH("bce_with_logits", c->in[0]->dtype, bce_fwd, c);
}

cg_status cg_bce_logits_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_CPU_DISPATCH("bce_with_logits", c->in[0]->dtype, bce_bwd, c, gout, gin);
}

cg_status cg_softmax_ce_fwd_cpu(const cg_op_call *c) {
    CG_CPU_DISPATCH("softmax_cross_entropy", c->in[0]->dtype, ce_fwd, c);
}

cg_status cg_softmax_ce_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    if (!c->aux[0])
        return CG_FAIL(CG_E_INTERNAL, "softmax_cross_entropy backward: the forward did not keep its gradient");
    CG_CPU_DISPATCH("softmax_cross_entropy", gin[0]->dtype, ce_bwd, c, gout, gin[0]);
}
