/* CPU softmax and log-softmax over the last axis, max-subtracted, row sums in double.
 * Backward from the saved output y: softmax dx = y (g - sum(g y));
 * log-softmax dx = g - exp(y) sum(g). */
#include <math.h>

#include "cpu_kernels.h"

#define CG_CPU_TEMPLATE "softmax_cpu.inc"
#include "instantiate.h"

cg_status cg_softmax_fwd_cpu(const cg_op_call *c) {
    CG_CPU_DISPATCH(cg_cpu_op_name(c), c->out->dtype, softmax_fwd, c);
}

cg_status cg_softmax_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    if (!c->out) return CG_FAIL(CG_E_INTERNAL, "%s backward: saved output missing", cg_cpu_op_name(c));
    CG_CPU_DISPATCH(cg_cpu_op_name(c), gout->dtype, softmax_bwd, c, gout, gin[0]);
}
