/* Per-element optimizer updates shared by the CPU and CUDA backends, so both apply the same
 * expression in the same order (semantics: cg_optim_call in backend.h, PyTorch's rules).
 * Math in double, rounded once when stored. On the device every product and sum is an
 * explicitly rounded intrinsic: nvcc would otherwise contract them into fmas, which round
 * differently from the CPU build (ISO C, no contraction). The coefficients, which need
 * pow(), are computed once on the host. */
#ifndef CG_OPTIM_MATH_H
#define CG_OPTIM_MATH_H

#include <math.h>
#include <stdint.h>

#include "hostdev.h"

#ifdef __CUDA_ARCH__
#define CG_MUL(a, b) __dmul_rn((a), (b))
#define CG_ADD(a, b) __dadd_rn((a), (b))
#define CG_SUB(a, b) __dsub_rn((a), (b))
#else
#define CG_MUL(a, b) ((a) * (b))
#define CG_ADD(a, b) ((a) + (b))
#define CG_SUB(a, b) ((a) - (b))
#endif

typedef struct cg_optim_coef {
    int kind; /* cg_optim_kind: 0 SGD, 1 Adam, 2 AdamW */
    int nesterov, first_step;
    double lr, momentum, dampening, weight_decay;
    double beta1, beta2, eps;
    double decay;        /* AdamW: 1 - lr * wd, else 1 */
    double l2;           /* Adam: wd (added to the gradient), else 0 */
    double step_size;    /* lr / (1 - beta1^t) */
    double inv_sqrt_bc2; /* 1 / sqrt(1 - beta2^t) */
} cg_optim_coef;

/* Host side: the coefficients of update number `step` (1-based). */
static inline cg_optim_coef cg_optim_coef_make(int kind, double lr, double momentum, double dampening,
                                               double weight_decay, double beta1, double beta2, double eps,
                                               int nesterov, int64_t step) {
    cg_optim_coef k;
    k.kind = kind;
    k.nesterov = nesterov;
    k.first_step = step <= 1;
    k.lr = lr;
    k.momentum = momentum;
    k.dampening = dampening;
    k.weight_decay = weight_decay;
    k.beta1 = beta1;
    k.beta2 = beta2;
    k.eps = eps;
    k.decay = kind == 2 ? 1.0 - lr * weight_decay : 1.0;
    k.l2 = kind == 1 ? weight_decay : 0.0;
    k.step_size = kind == 0 ? 0.0 : lr / (1.0 - pow(beta1, (double)step));
    k.inv_sqrt_bc2 = kind == 0 ? 0.0 : 1.0 / sqrt(1.0 - pow(beta2, (double)step));
    return k;
}

/* The device-side gate of cg_optim_call (backend.h), read by the update kernel itself: 0 when
 * the update is skipped; otherwise *gscale is the factor the gradient is scaled by before
 * the rule (1 when not clipping). gate, sumsq: the f64 scalars, or NULL. */
CG_HOSTDEV int cg_optim_gate(const double *gate, const double *sumsq, double clip_max, double *gscale) {
    *gscale = 1.0;
    if (gate && !isfinite(*gate)) return 0;
    if (sumsq) {
        double s = *sumsq;
        if (!isfinite(s)) return 0;
        double norm = sqrt(s);
        if (clip_max > 0 && norm > clip_max) *gscale = clip_max / CG_ADD(norm, 1e-6); /* as clip_grad_norm_ */
    }
    return 1;
}

/* SGD: g += wd*p; buf = momentum*buf + (1-dampening)*g (buf = g on the first step);
 * g = nesterov ? g + momentum*buf : buf; p -= lr*g. has_buf: momentum != 0. */
CG_HOSTDEV void cg_sgd_elem(const cg_optim_coef *k, double *p, double g, double *buf, int has_buf) {
    double gi = k->weight_decay != 0.0 ? CG_ADD(g, CG_MUL(k->weight_decay, *p)) : g;
    if (has_buf) {
        double b = k->first_step ? gi : CG_ADD(CG_MUL(k->momentum, *buf), CG_MUL(1.0 - k->dampening, gi));
        *buf = b;
        gi = k->nesterov ? CG_ADD(gi, CG_MUL(k->momentum, b)) : b;
    }
    *p = CG_SUB(*p, CG_MUL(k->lr, gi));
}

/* Adam / AdamW: g += l2*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 * p = p*decay - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps). */
CG_HOSTDEV void cg_adam_elem(const cg_optim_coef *k, double *p, double g, double *m, double *v) {
    double pi = *p;
    double gi = k->l2 != 0.0 ? CG_ADD(g, CG_MUL(k->l2, pi)) : g;
    double mi = CG_ADD(CG_MUL(k->beta1, *m), CG_MUL(1.0 - k->beta1, gi));
    double vi = CG_ADD(CG_MUL(k->beta2, *v), CG_MUL(CG_MUL(1.0 - k->beta2, gi), gi));
    *m = mi;
    *v = vi;
    *p = CG_SUB(CG_MUL(pi, k->decay), CG_MUL(k->step_size, mi) / CG_ADD(CG_MUL(sqrt(vi), k->inv_sqrt_bc2), k->eps));
}

#endif
