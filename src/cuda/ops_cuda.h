/* The CUDA forward/backward op tables (ops_cuda.c) and the strided copy they share with
 * the backend table (backend_cuda.c). */
#ifndef CG_OPS_CUDA_H
#define CG_OPS_CUDA_H

#include "backend.h"

extern const cg_fwd_fn cg_cuda_forward_table[CG_OP_COUNT];
extern const cg_bwd_fn cg_cuda_backward_table[CG_OP_COUNT];

cg_status cg_cuda_copy_strided_impl(cg_tensor *dst, const cg_tensor *src);

#endif
