/* cgrad: optimizers (SGD with momentum/Nesterov, Adam, AdamW), learning-rate schedules and
 * gradient clipping.
 *
 * Update rules follow PyTorch exactly (torch.optim.SGD / Adam / AdamW):
 *   SGD:   g = grad + wd*p;  buf = g (first step) or momentum*buf + (1-dampening)*g;
 *          g = nesterov ? g + momentum*buf : buf;  p -= lr*g
 *   Adam:  g = grad + wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *          p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
 *   AdamW: p *= 1 - lr*wd, then Adam without the wd term (decoupled decay).
 * An optimizer over a model updates the model's one flat parameter buffer with one backend
 * call per step; its state (momentum / exp_avg / exp_avg_sq) is flat too. */
#ifndef CGRAD_OPTIM_H
#define CGRAD_OPTIM_H

#include "nn.h"

CG_EXTERN_C_BEGIN

typedef struct cg_optimizer cg_optimizer;

typedef enum cg_optim_type { CG_SGD = 0, CG_ADAM, CG_ADAMW, CG_OPTIM_TYPE_COUNT } cg_optim_type;

typedef enum cg_schedule_kind {
    CG_SCHED_CONSTANT = 0,
    CG_SCHED_STEP,   /* lr * gamma^floor(t / step_size)                          (StepLR) */
    CG_SCHED_COSINE, /* min_lr + (lr - min_lr) * (1 + cos(pi * t / total)) / 2  (CosineAnnealingLR) */
    CG_SCHED_COUNT
} cg_schedule_kind;

/* t counts optimizer steps, or epochs when per_epoch is set (then fit advances it once per
 * epoch, like calling scheduler.step() after each epoch in PyTorch). A linear warmup from
 * lr/warmup to lr over the first `warmup` units comes before any schedule; the schedule's t
 * starts after it. */
typedef struct cg_lr_schedule {
    cg_schedule_kind kind;
    int per_epoch;
    int64_t warmup;
    int64_t step_size; /* STEP */
    double gamma;      /* STEP */
    int64_t total;     /* COSINE: length of the decay; 0 = filled in by fit (all remaining units) */
    double min_lr;     /* COSINE */
} cg_lr_schedule;

typedef struct cg_optim_config {
    cg_optim_type type;
    double lr;
    double momentum, dampening; /* SGD */
    int nesterov;               /* SGD */
    double weight_decay;        /* L2 for SGD/Adam, decoupled for AdamW */
    double beta1, beta2, eps;   /* Adam/AdamW */
    double clip_norm;           /* > 0: scale gradients so their global L2 norm is <= clip_norm
                                 * (Keras clipnorm: the update kernel scales them as it reads
                                 * them; the .grad buffers are left as they are) */
    cg_lr_schedule schedule;
} cg_optim_config;

/* PyTorch defaults: SGD(lr, momentum 0), Adam(lr, betas (0.9, 0.999), eps 1e-8),
 * AdamW(lr, weight_decay 0.01). */
CG_API cg_optim_config cg_optim_sgd(double lr, double momentum, int nesterov, double weight_decay);
CG_API cg_optim_config cg_optim_adam(double lr);
CG_API cg_optim_config cg_optim_adamw(double lr, double weight_decay);
CG_API const char *cg_optim_type_name(cg_optim_type t); /* "sgd", "adam", "adamw" */

/* Learning rate at schedule position t for a base rate. */
CG_API double cg_lr_at(const cg_lr_schedule *s, double base_lr, int64_t t);

/* An optimizer over all trainable parameters of a model (built on first use). */
CG_API cg_status cg_optimizer_create(cg_model *m, const cg_optim_config *cfg, cg_optimizer **out);
/* An optimizer over arbitrary leaf tensors (each must require grad; gradients come from
 * cg_backward). One update call per tensor. The tensors are retained. */
CG_API cg_status cg_optimizer_create_params(cg_tensor *const *params, int n, const cg_optim_config *cfg,
                                            cg_optimizer **out);
CG_API void cg_optimizer_free(cg_optimizer *o); /* NULL is fine */

/* One update with the current learning rate, after clipping when clip_norm > 0. A tensor no
 * backward reached (no gradient) is skipped, as in PyTorch. When clipping, the norm is read
 * on the host: a non-finite one fails with CG_E_NUMERIC and leaves the parameters alone
 * (cg_model_fit's own steps do the same check on the device, without waiting). */
CG_API cg_status cg_optimizer_step(cg_optimizer *o);
CG_API cg_status cg_optimizer_zero_grad(cg_optimizer *o);

/* Learning rate the next step will use / the last step used (the next one before any step). */
CG_API double cg_optimizer_lr(const cg_optimizer *o);
CG_API double cg_optimizer_last_lr(const cg_optimizer *o);
/* Overrides the base learning rate (the schedule scales it). */
CG_API void cg_optimizer_set_base_lr(cg_optimizer *o, double lr);
/* Steps taken so far (PyTorch's state['step']). */
CG_API int64_t cg_optimizer_steps(const cg_optimizer *o);
/* Position of the schedule (steps, or epochs when per_epoch); fit advances per-epoch ones. */
CG_API int64_t cg_optimizer_schedule_pos(const cg_optimizer *o);
CG_API void cg_optimizer_set_schedule_pos(cg_optimizer *o, int64_t t);
CG_API const cg_optim_config *cg_optimizer_config(const cg_optimizer *o);
/* Global gradient norm before clipping, as measured by the last step (0 when not clipping).
 * On a device the norm is read when asked for (a host wait); the status says whether that
 * read worked (a device error, or a data error a kernel reported meanwhile). */
CG_API cg_status cg_optimizer_get_last_grad_norm(const cg_optimizer *o, double *norm);
/* The same as a value: NaN when the read fails (cg_last_error() says why). */
CG_API double cg_optimizer_last_grad_norm(const cg_optimizer *o);

/* Scales the gradients of params so their global L2 norm is at most max_norm
 * (torch.nn.utils.clip_grad_norm_); *total_norm (may be NULL) receives the norm before. */
CG_API cg_status cg_clip_grad_norm(cg_tensor *const *params, int n, double max_norm, double *total_norm);

/* Optimizer state for checkpoints: "optimizer.<kind>" flat tensors (CPU copies) plus
 * metadata (step, schedule position, config). */
CG_API cg_status cg_optimizer_state_dict(const cg_optimizer *o, cg_state_dict *sd);
CG_API cg_status cg_optimizer_load_state_dict(cg_optimizer *o, const cg_state_dict *sd);

CG_EXTERN_C_END
#endif
