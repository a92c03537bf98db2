/* CPU sum and mean over one axis or all of them. The input is viewed as (outer, n, inner)
 * around the reduced axis; sums accumulate in double. Backward broadcasts the output
 * gradient back over the axis (divided by n for mean). */
#include <stdlib.h>

#include "cpu_kernels.h"

static void split(const cg_tensor *x, int axis, int64_t *outer, int64_t *n, int64_t *inner) {
    if (axis == CG_ALL_AXES || x->ndim == 0) {
        *outer = 1;
        *n = cg_cpu_numel(x);
        *inner = 1;
        return;
    }
    *outer = cg__numel(x->shape, axis);
    *n = x->shape[axis];
    *inner = cg__numel(x->shape + axis + 1, x->ndim - axis - 1);
}

static cg_status check_axis(const cg_op_call *c, const cg_tensor *x) {
    int axis = c->p->axis;
    if (axis != CG_ALL_AXES && x->ndim > 0 && (axis < 0 || axis >= x->ndim))
        return CG_FAIL(CG_E_INVALID, "%s: axis %d out of range for a %d-d tensor", cg_cpu_op_name(c), axis, x->ndim);
    return CG_OK;
}

#define CG_CPU_TEMPLATE "reduce_cpu.inc"
#include "instantiate.h"

cg_status cg_reduce_fwd_cpu(const cg_op_call *c) {
    CG_TRY(check_axis(c, c->in[0]));
    CG_CPU_DISPATCH(cg_cpu_op_name(c), c->out->dtype, reduce_fwd, c);
}

cg_status cg_reduce_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    CG_TRY(check_axis(c, gin[0]));
    CG_CPU_DISPATCH(cg_cpu_op_name(c), gout->dtype, reduce_bwd, c, gout, gin[0]);
}
