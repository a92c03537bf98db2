/* CPU elementwise kernels: add/sub/mul/div with numpy broadcasting, scale, exp/log/sqrt
 * and the activations. Math runs in double and rounds once on store. Broadcast backward
 * sums the gradient over the broadcast axes in a double scratch buffer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "cpu_kernels.h"

/* Runs the statement(s) given after `it` for every output element, with `pos` (output
 * index), `ia` and `ib` (input indices) in scope. */
#define BCAST_LOOP(it, ...)                                                                                    \
    do {                                                                                                      \
        int64_t idx_[CG_MAX_DIMS] = {0}, oa_ = 0, ob_ = 0;                                                    \
        int nd_ = (it).nd;                                                                                    \
        int64_t inner_ = nd_ ? (it).shape[nd_ - 1] : 1;                                                       \
        int64_t ia_s_ = nd_ ? (it).sa[nd_ - 1] : 0, ib_s_ = nd_ ? (it).sb[nd_ - 1] : 0;                       \
        for (int64_t base_ = 0; base_ < (it).n; base_ += inner_) {                                            \
            for (int64_t k_ = 0; k_ < inner_; k_++) {                                                         \
                int64_t pos = base_ + k_, ia = oa_ + k_ * ia_s_, ib = ob_ + k_ * ib_s_;                       \
                (void)pos, (void)ia, (void)ib;                                                                \
                __VA_ARGS__;                                                                                  \
            }                                                                                                 \
            for (int d_ = nd_ - 2; d_ >= 0; d_--) {                                                           \
                idx_[d_]++;                                                                                   \
                oa_ += (it).sa[d_];                                                                           \
                ob_ += (it).sb[d_];                                                                           \
                if (idx_[d_] < (it).shape[d_]) break;                                                         \
                oa_ -= (it).sa[d_] * (it).shape[d_];                                                          \
                ob_ -= (it).sb[d_] * (it).shape[d_];                                                          \
                idx_[d_] = 0;                                                                                 \
            }                                                                                                 \
        }                                                                                                     \
    } while (0)

/* (N, C) op (C): a walks both axes densely, b only the last one. */
static int is_bias_bcast(const cg_bcast *it) {
    return it->nd == 2 && it->sa[0] == it->shape[1] && it->sa[1] == 1 && it->sb[0] == 0 && it->sb[1] == 1;
}

/* Double scratch for a gradient that is summed over broadcast axes, or NULL when g has
 * the output's element count (written directly). *fail is set on allocation failure. */
static double *reduce_scratch(const cg_tensor *g, int64_t n_out, int *fail) {
    if (!g) return NULL;
    int64_t n = cg_cpu_numel(g);
    if (n == n_out) return NULL;
    double *s = calloc((size_t)(n ? n : 1), sizeof(double));
    if (!s) *fail = 1;
    return s;
}

#define CG_CPU_TEMPLATE "elementwise_cpu.inc"
#include "instantiate.h"

cg_status cg_binary_fwd_cpu(const cg_op_call *c) {
    CG_CPU_DISPATCH(cg_cpu_op_name(c), c->out->dtype, binary_fwd, c);
}

cg_status cg_binary_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_CPU_DISPATCH(cg_cpu_op_name(c), gout->dtype, binary_bwd, c, gout, gin);
}

cg_status cg_scale_fwd_cpu(const cg_op_call *c) { CG_CPU_DISPATCH("scale", c->out->dtype, scale_fwd, c); }

cg_status cg_scale_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_CPU_DISPATCH("scale", gout->dtype, scale_bwd, c, gout, gin);
}

cg_status cg_unary_fwd_cpu(const cg_op_call *c) {
    CG_CPU_DISPATCH(cg_cpu_op_name(c), c->out->dtype, unary_fwd, c);
}

cg_status cg_unary_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_CPU_DISPATCH(cg_cpu_op_name(c), gout->dtype, unary_bwd, c, gout, gin);
}

cg_status cg_cpu_colsum(cg_dtype dt, const void *g, int64_t rows, int64_t cols, void *y) {
    CG_CPU_DISPATCH("column sum", dt, colsum, g, y, rows, cols, 1.0);
}
