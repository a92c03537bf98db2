/* Float64 references for the op-case table: plain loops over the host values of an
 * instance, written from the math, not from the kernels. */
#ifndef CGT_OP_REFS_H
#define CGT_OP_REFS_H

#include "op_cases.h"

void cgt_ref_matmul(const cgt_inst *I, cgt_ref *o);
void cgt_ref_linear(const cgt_inst *I, cgt_ref *o);
void cgt_ref_binary(const cgt_inst *I, cgt_ref *o);
void cgt_ref_unary(const cgt_inst *I, cgt_ref *o);
void cgt_ref_reduce(const cgt_inst *I, cgt_ref *o);
void cgt_ref_softmax(const cgt_inst *I, cgt_ref *o);
void cgt_ref_layernorm(const cgt_inst *I, cgt_ref *o);
void cgt_ref_batchnorm(const cgt_inst *I, cgt_ref *o);
void cgt_ref_dropout(const cgt_inst *I, cgt_ref *o);
void cgt_ref_pair_loss(const cgt_inst *I, cgt_ref *o);
void cgt_ref_ce(const cgt_inst *I, cgt_ref *o);
void cgt_ref_reshape(const cgt_inst *I, cgt_ref *o);
void cgt_ref_transpose(const cgt_inst *I, cgt_ref *o);
void cgt_ref_slice(const cgt_inst *I, cgt_ref *o);

/* Scalar references shared with the suites. */
double cgt_gelu_erf(double x);
double cgt_gelu_tanh(double x);
double cgt_sigmoid(double x);
/* Transpose dims d0, d1 of a dense row-major array. */
void cgt_transpose_nd(const double *src, const int64_t *shape, int ndim, int d0, int d1, double *dst,
                      int64_t *out_shape);

#endif
