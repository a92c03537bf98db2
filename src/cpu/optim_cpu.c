/* CPU optimizer updates (SGD, Adam, AdamW) over flat f32/f64 buffers, PyTorch semantics
 * as documented on cg_optim_call in backend.h. The per-element rules are in
 * src/optim_math.h, shared with the CUDA kernel. */
#include <math.h>

#include "cpu_kernels.h"
#include "optim_math.h"

#define CG_CPU_TEMPLATE "optim_cpu.inc"
#include "instantiate.h"

static cg_status check_buf(const cg_optim_call *c, const cg_tensor *t, const char *what, int64_t n) {
    if (!t) return CG_FAIL(CG_E_INVALID, "optimizer: %s buffer is NULL", what);
    if (t->dtype != c->param->dtype)
        return CG_FAIL(CG_E_DTYPE, "optimizer: %s is %s but the parameter is %s", what, cg_dtype_name(t->dtype),
                       cg_dtype_name(c->param->dtype));
    if (cg_cpu_numel(t) != n)
        return CG_FAIL(CG_E_SHAPE, "optimizer: %s has %lld elements, the parameter %lld", what,
                       (long long)cg_cpu_numel(t), (long long)n);
    return CG_OK;
}

cg_status cg_optim_cpu(const cg_optim_call *c) {
    if (!c || !c->param) return CG_FAIL(CG_E_INVALID, "optimizer: no parameter given");
    int64_t n = cg_cpu_numel(c->param);
    CG_TRY(check_buf(c, c->grad, "grad", n));
    if (c->kind == CG_OPTIM_SGD) {
        if (c->momentum != 0.0) CG_TRY(check_buf(c, c->m, "momentum", n));
    } else if (c->kind == CG_OPTIM_ADAM || c->kind == CG_OPTIM_ADAMW) {
        CG_TRY(check_buf(c, c->m, "exp_avg", n));
        CG_TRY(check_buf(c, c->v, "exp_avg_sq", n));
        if (c->step < 1) return CG_FAIL(CG_E_INVALID, "optimizer: step %lld must be >= 1", (long long)c->step);
    } else {
        return CG_FAIL(CG_E_INVALID, "optimizer: unknown kind %d", (int)c->kind);
    }
    CG_CPU_DISPATCH("optimizer", c->param->dtype, optim, c, n);
}
