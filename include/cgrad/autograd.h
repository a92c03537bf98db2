/* cgrad: reverse-mode autodiff over the host-side dynamic graph, grad mode and scopes.
 *
 * Graph: an op whose input requires grad records a node on its output. cg_backward()
 * walks the nodes in reverse topological order; each backward rule computes input
 * gradients and cgrad ADDS them (+=) into leaf .grad buffers, so gradients accumulate
 * across calls until cg_zero_grad(). After backward the graph's saved tensors are freed
 * (unless retain_graph); a second backward through it fails with CG_E_STATE. */
#ifndef CGRAD_AUTOGRAD_H
#define CGRAD_AUTOGRAD_H

#include "tensor.h"

CG_EXTERN_C_BEGIN

/* Backward from a one-element tensor, seeding its gradient with 1. */
CG_API cg_status cg_backward(cg_tensor *loss);
/* Backward from any tensor with a given output gradient (same shape, dtype and device).
 * grad_out is only read, during the call; it may be any tensor, a .grad buffer included. */
CG_API cg_status cg_backward_ex(cg_tensor *out, const cg_tensor *grad_out, int retain_graph);

/* Sets the gradients of these tensors to zero (keeps the buffers). NULL entries skipped. */
CG_API cg_status cg_zero_grad(cg_tensor *const *params, int n);

/* Grad mode is per thread. Inside no_grad no graph is recorded (inference). Nests. */
CG_API void cg_no_grad_begin(void);
CG_API void cg_no_grad_end(void);
CG_API int cg_grad_enabled(void);

/* Scopes (per thread, nest): every tensor a cgrad call hands back while a scope is open
 * is released when the scope ends, unless the caller took its own reference with
 * cg_keep(). Lets a training step create temporaries without releasing each one. */
CG_API cg_status cg_scope_begin(void);
CG_API cg_status cg_scope_end(void);
/* Take an extra reference (survives the current scope); returns t. */
CG_API cg_tensor *cg_keep(cg_tensor *t);

CG_EXTERN_C_END
#endif
