/* Optimizers: one backend `optim` call per flat buffer (one per step for a model), learning-
 * rate schedules, gradient clipping by global norm, optimizer state for checkpoints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "../nn/nn_internal.h"

struct cg_optimizer {
    cg_optim_config cfg;
    cg_model *model;     /* model optimizer: the group is the model's flat buffers */
    cg_tensor **params;  /* parameter-list optimizer: one group per tensor (retained) */
    int n_groups;
    cg_tensor **m, **v;  /* state per group, created on the first step */
    int64_t *gsteps;     /* updates each group has had: its bias correction (PyTorch counts per tensor) */
    int64_t steps;       /* cg_optimizer_step calls */
    int64_t sched_pos;
    double last_norm;
    cg_tensor *sq;    /* squared global gradient norm of the last clipped step (f64 scalar, device) */
    int norm_pending; /* last_norm is still on the device, in sq */
    double last_lr;   /* used by the last step */
    const void *coef_dev; /* a CUDA graph being recorded: where its replays write the coefficients */
    uint64_t id;          /* unique in the process: a recorded step knows its optimizer by it */
};

static _Atomic uint64_t g_next_id = 1;

static const char *optim_names[CG_OPTIM_TYPE_COUNT] = {"sgd", "adam", "adamw"};

const char *cg_optim_type_name(cg_optim_type t) {
    return (t >= 0 && t < CG_OPTIM_TYPE_COUNT) ? optim_names[t] : "unknown";
}

static cg_optim_config base_config(cg_optim_type t, double lr) {
    cg_optim_config c;
    memset(&c, 0, sizeof c);
    c.type = t;
    c.lr = lr;
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    c.eps = 1e-8;
    c.schedule.kind = CG_SCHED_CONSTANT;
    c.schedule.gamma = 0.1;
    return c;
}

cg_optim_config cg_optim_sgd(double lr, double momentum, int nesterov, double weight_decay) {
    cg_optim_config c = base_config(CG_SGD, lr);
    c.momentum = momentum;
    c.nesterov = nesterov;
    c.weight_decay = weight_decay;
    return c;
}

cg_optim_config cg_optim_adam(double lr) { return base_config(CG_ADAM, lr); }

cg_optim_config cg_optim_adamw(double lr, double weight_decay) {
    cg_optim_config c = base_config(CG_ADAMW, lr);
    c.weight_decay = weight_decay;
    return c;
}

double cg_lr_at(const cg_lr_schedule *s, double base, int64_t t) {
    if (!s) return base;
    if (t < 0) t = 0;
    if (s->warmup > 0 && t < s->warmup) return base * (double)(t + 1) / (double)s->warmup;
    int64_t u = t - (s->warmup > 0 ? s->warmup : 0);
    switch (s->kind) {
    case CG_SCHED_STEP:
        if (s->step_size <= 0) return base;
        return base * pow(s->gamma, (double)(u / s->step_size));
    case CG_SCHED_COSINE: {
        if (s->total <= 0) return base;
        if (u >= s->total) return s->min_lr;
        return s->min_lr + (base - s->min_lr) * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)u / (double)s->total));
    }
    default: return base;
    }
}

static cg_status check_config(const cg_optim_config *c) {
    if (c->type < 0 || c->type >= CG_OPTIM_TYPE_COUNT)
        return CG_FAIL(CG_E_INVALID, "optimizer: unknown type %d", (int)c->type);
    if (!(c->lr >= 0) || !isfinite(c->lr)) return CG_FAIL(CG_E_INVALID, "optimizer: lr must be >= 0, got %g", c->lr);
    if (!(c->weight_decay >= 0)) return CG_FAIL(CG_E_INVALID, "optimizer: weight_decay must be >= 0, got %g", c->weight_decay);
    if (c->type == CG_SGD) {
        if (!(c->momentum >= 0)) return CG_FAIL(CG_E_INVALID, "sgd: momentum must be >= 0, got %g", c->momentum);
        if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
            return CG_FAIL(CG_E_INVALID, "sgd: Nesterov momentum requires a momentum > 0 and zero dampening");
    } else {
        if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
            return CG_FAIL(CG_E_INVALID, "%s: betas must be in [0, 1), got (%g, %g)", cg_optim_type_name(c->type),
                           c->beta1, c->beta2);
        if (!(c->eps >= 0)) return CG_FAIL(CG_E_INVALID, "%s: eps must be >= 0", cg_optim_type_name(c->type));
    }
    if (!(c->clip_norm >= 0)) return CG_FAIL(CG_E_INVALID, "optimizer: clip_norm must be >= 0 (0 = off)");
    if (c->schedule.kind < 0 || c->schedule.kind >= CG_SCHED_COUNT)
        return CG_FAIL(CG_E_INVALID, "optimizer: unknown schedule %d", (int)c->schedule.kind);
    return CG_OK;
}

static cg_status alloc_state(cg_optimizer *o, int n) {
    o->n_groups = n;
    o->m = calloc((size_t)n, sizeof *o->m);
    o->v = calloc((size_t)n, sizeof *o->v);
    o->gsteps = calloc((size_t)n, sizeof *o->gsteps);
    if (!o->m || !o->v || !o->gsteps) return CG_FAIL(CG_E_OOM, "optimizer: out of host memory");
    return CG_OK;
}

cg_status cg_optimizer_create(cg_model *m, const cg_optim_config *cfg, cg_optimizer **out) {
    CG_ARG_NOT_NULL(m, "cg_optimizer_create");
    CG_ARG_NOT_NULL(cfg, "cg_optimizer_create");
    CG_ARG_NOT_NULL(out, "cg_optimizer_create");
    CG_TRY(check_config(cfg));
    CG_TRY(cg__model_ensure_built(m));
    cg_optimizer *o = calloc(1, sizeof *o);
    if (o) o->id = g_next_id++;
    if (!o) return CG_FAIL(CG_E_OOM, "optimizer: out of host memory");
    o->cfg = *cfg;
    o->model = m;
    cg_status st = alloc_state(o, 1);
    if (st != CG_OK) {
        cg_optimizer_free(o);
        return st;
    }
    *out = o;
    return CG_OK;
}

cg_status cg_optimizer_create_params(cg_tensor *const *params, int n, const cg_optim_config *cfg, cg_optimizer **out) {
    CG_ARG_NOT_NULL(cfg, "cg_optimizer_create_params");
    CG_ARG_NOT_NULL(out, "cg_optimizer_create_params");
    if (n <= 0 || !params) return CG_FAIL(CG_E_INVALID, "cg_optimizer_create_params: need at least one tensor");
    CG_TRY(check_config(cfg));
    for (int i = 0; i < n; i++) {
        if (!params[i] || !params[i]->requires_grad || params[i]->node)
            return CG_FAIL(CG_E_INVALID, "cg_optimizer_create_params: tensor %d is not a leaf that requires grad", i);
        if (!cg_tensor_is_contiguous(params[i]))
            return CG_FAIL(CG_E_INVALID, "cg_optimizer_create_params: tensor %d is not contiguous", i);
    }
    cg_optimizer *o = calloc(1, sizeof *o);
    if (o) o->id = g_next_id++;
    if (!o) return CG_FAIL(CG_E_OOM, "optimizer: out of host memory");
    o->cfg = *cfg;
    cg_status st = alloc_state(o, n);
    if (st == CG_OK) {
        o->params = calloc((size_t)n, sizeof *o->params);
        if (!o->params) st = CG_FAIL(CG_E_OOM, "optimizer: out of host memory");
    }
    if (st != CG_OK) {
        cg_optimizer_free(o);
        return st;
    }
    for (int i = 0; i < n; i++) o->params[i] = cg_tensor_retain(params[i]);
    *out = o;
    return CG_OK;
}

void cg_optimizer_free(cg_optimizer *o) {
    if (!o) return;
    for (int i = 0; i < o->n_groups; i++) {
        if (o->params) cg_tensor_release(o->params[i]);
        if (o->m) cg_tensor_release(o->m[i]);
        if (o->v) cg_tensor_release(o->v[i]);
    }
    cg_tensor_release(o->sq);
    free(o->params);
    free(o->m);
    free(o->v);
    free(o->gsteps);
    free(o);
}

static cg_tensor *group_param(const cg_optimizer *o, int i) { return o->model ? o->model->flat : o->params[i]; }
static cg_tensor *group_grad(const cg_optimizer *o, int i) { return o->model ? o->model->gflat : o->params[i]->grad; }

/* State buffer matching p (zeros), or moved to p's device. */
static cg_status ensure_state(cg_tensor **s, const cg_tensor *p) {
    if (*s && cg__same_device((*s)->st->dev, p->st->dev)) return CG_OK;
    if (*s) {
        cg_tensor *moved;
        CG_TRY(cg__tensor_copy_to(*s, (*s)->dtype, p->st->dev, &moved));
        cg_tensor_release(*s);
        *s = moved;
        return CG_OK;
    }
    cg_tensor *t;
    CG_TRY(cg__tensor_new(p->shape, p->ndim, p->dtype, p->st->dev, &t));
    cg_status st = cg__backend(p->st->dev)->fill(t, 0.0);
    if (st != CG_OK) {
        cg_tensor_release(t);
        return st;
    }
    *s = t;
    return CG_OK;
}

cg_status cg__optimizer_move(cg_optimizer *o, cg_device dev) {
    for (int i = 0; i < o->n_groups; i++) {
        cg_tensor *p = group_param(o, i);
        if (!p || !cg__same_device(p->st->dev, dev)) continue;
        if (o->m[i]) CG_TRY(ensure_state(&o->m[i], p));
        if (o->v[i]) CG_TRY(ensure_state(&o->v[i], p));
    }
    return CG_OK;
}

void cg__optimizer_set_total(cg_optimizer *o, int64_t total) {
    if (o && o->cfg.schedule.total <= 0) o->cfg.schedule.total = total;
}

double cg_optimizer_lr(const cg_optimizer *o) { return o ? cg_lr_at(&o->cfg.schedule, o->cfg.lr, o->sched_pos) : 0; }
void cg_optimizer_set_base_lr(cg_optimizer *o, double lr) {
    if (o) o->cfg.lr = lr;
}
int64_t cg_optimizer_steps(const cg_optimizer *o) { return o ? o->steps : 0; }
int64_t cg_optimizer_schedule_pos(const cg_optimizer *o) { return o ? o->sched_pos : 0; }
void cg_optimizer_set_schedule_pos(cg_optimizer *o, int64_t t) {
    if (o) o->sched_pos = t;
}
const cg_optim_config *cg_optimizer_config(const cg_optimizer *o) { return o ? &o->cfg : NULL; }
cg_status cg_optimizer_get_last_grad_norm(const cg_optimizer *o, double *norm) {
    CG_ARG_NOT_NULL(o, "cg_optimizer_get_last_grad_norm");
    CG_ARG_NOT_NULL(norm, "cg_optimizer_get_last_grad_norm");
    *norm = NAN;
    if (!o->norm_pending) {
        *norm = o->last_norm;
        return CG_OK;
    }
    double s; /* read lazily: the training loop's steps do not wait for it */
    CG_TRY(cg__read_f64(o->sq, &s, 1));
    *norm = sqrt(s);
    return CG_OK;
}
double cg_optimizer_last_grad_norm(const cg_optimizer *o) {
    if (!o) return 0;
    double v;
    return cg_optimizer_get_last_grad_norm(o, &v) == CG_OK ? v : NAN;
}
double cg_optimizer_last_lr(const cg_optimizer *o) { return o ? (o->steps ? o->last_lr : cg_optimizer_lr(o)) : 0; }

static cg_status clip_tensors(cg_tensor *const *grads, int n, double max_norm, double *total) {
    double s = 0;
    for (int i = 0; i < n; i++) {
        if (!grads[i]) continue;
        double q;
        CG_TRY(cg_sumsq(grads[i], &q));
        s += q;
    }
    double norm = sqrt(s);
    if (total) *total = norm;
    if (!isfinite(norm))
        return CG_FAIL(CG_E_NUMERIC, "clip_grad_norm: the gradient norm is %g; the loss or a gradient overflowed "
                                     "(lower the learning rate)", norm);
    if (max_norm > 0 && norm > max_norm) {
        double coef = max_norm / (norm + 1e-6); /* as torch.nn.utils.clip_grad_norm_ */
        for (int i = 0; i < n; i++) {
            if (!grads[i]) continue;
            CG_TRY(cg__backend(grads[i]->st->dev)->scal(grads[i], coef));
            cg__bump_version(grads[i]);
        }
    }
    return CG_OK;
}

cg_status cg_clip_grad_norm(cg_tensor *const *params, int n, double max_norm, double *total_norm) {
    if (n > 0 && !params) return CG_FAIL(CG_E_INVALID, "cg_clip_grad_norm: params is NULL");
    if (!(max_norm > 0)) return CG_FAIL(CG_E_INVALID, "cg_clip_grad_norm: max_norm must be > 0, got %g", max_norm);
    cg_tensor **g = calloc((size_t)(n ? n : 1), sizeof *g);
    if (!g) return CG_FAIL(CG_E_OOM, "cg_clip_grad_norm: out of host memory");
    for (int i = 0; i < n; i++) g[i] = params[i] ? params[i]->grad : NULL;
    cg_status st = clip_tensors(g, n, max_norm, total_norm);
    free(g);
    return st;
}

/* The device all groups live on, or -1 when they are spread over several. */
static int single_device(const cg_optimizer *o, cg_device *dev) {
    int found = 0;
    for (int i = 0; i < o->n_groups; i++) {
        if (!group_grad(o, i)) continue;
        cg_device d = group_param(o, i)->st->dev;
        if (found && !cg__same_device(d, *dev)) return -1;
        *dev = d;
        found = 1;
    }
    return found;
}

/* o->sq = the squared global gradient norm, computed on the device; no host wait. */
static cg_status device_sumsq(cg_optimizer *o, cg_device dev) {
    if (o->sq && !cg__same_device(o->sq->st->dev, dev)) {
        cg_tensor_release(o->sq);
        o->sq = NULL;
    }
    if (!o->sq) CG_TRY(cg__f64_zeros(dev, 1, &o->sq));
    int first = 1;
    for (int i = 0; i < o->n_groups; i++) {
        cg_tensor *g = group_grad(o, i);
        if (!g) continue;
        CG_TRY(cg__reduce_to(o->sq, g, 1.0, 1, !first));
        first = 0;
    }
    return CG_OK;
}

/* The update of group i at learning rate lr (gate, clipping and graph fields left 0). */
static cg_optim_call group_call(const cg_optimizer *o, int i, double lr) {
    const cg_optim_config *c = &o->cfg;
    int need_m = c->type != CG_SGD || c->momentum != 0.0;
    cg_optim_call call = {
        .kind = c->type == CG_SGD ? CG_OPTIM_SGD : c->type == CG_ADAM ? CG_OPTIM_ADAM : CG_OPTIM_ADAMW,
        .param = group_param(o, i),
        .grad = group_grad(o, i),
        .m = need_m ? o->m[i] : NULL,
        .v = c->type != CG_SGD ? o->v[i] : NULL,
        .lr = lr,
        .momentum = c->momentum,
        .dampening = c->dampening,
        .weight_decay = c->weight_decay,
        .beta1 = c->beta1,
        .beta2 = c->beta2,
        .eps = c->eps,
        .nesterov = c->nesterov,
        .step = o->gsteps[i] + 1,
    };
    return call;
}

/* The step counters after a step at lr (each group counts its own updates). */
static void advance(cg_optimizer *o, double lr) {
    o->steps++;
    o->last_lr = lr;
    if (!o->cfg.schedule.per_epoch) o->sched_pos++;
}

/* One update. gate: see cg_optim_call (NULL: none); it first absorbs 0 * the squared norm
 * (clipping) or 0 * the sum of the gradients, so a non-finite gradient skips this step and
 * every later gated one. wait: read
 * the clipping norm on the host and fail with CG_E_NUMERIC when it is not finite (the public
 * step); otherwise nothing waits for the device. */
static cg_status step_impl(cg_optimizer *o, cg_tensor *gate, int wait, int *updated) {
    const cg_optim_config *c = &o->cfg;
    *updated = 0;
    if (o->model) CG_TRY(cg__model_ensure_built(o->model));
    const cg_tensor *clip_sq = NULL;
    cg_device dev = {0};
    int one = single_device(o, &dev);
    if (gate && (one != 1 || !cg__same_device(gate->st->dev, dev)))
        return CG_FAIL(CG_E_INTERNAL, "optimizer: a gated step needs every parameter on the gate's device");
    /* clipping first: a non-finite norm leaves everything untouched */
    if (c->clip_norm > 0 && one == 1) {
        CG_TRY(device_sumsq(o, dev));
        clip_sq = o->sq; /* the kernels scale the gradient as they read it */
        if (gate) CG_TRY(cg__reduce_to(gate, o->sq, 0.0, 0, 1));
        o->norm_pending = 1;
        if (wait) {
            double sq = 0;
            CG_TRY(cg__read_f64(o->sq, &sq, 1));
            o->last_norm = sqrt(sq);
            o->norm_pending = 0;
            if (!isfinite(o->last_norm))
                return CG_FAIL(CG_E_NUMERIC, "clip_grad_norm: the gradient norm is %g; the loss or a gradient "
                                             "overflowed (lower the learning rate)", o->last_norm);
        }
    } else if (gate) { /* a non-finite gradient skips the step too: gate += 0 * sum(g) */
        for (int i = 0; i < o->n_groups; i++)
            if (group_grad(o, i)) CG_TRY(cg__reduce_to(gate, group_grad(o, i), 0.0, 0, 1));
    } else if (c->clip_norm > 0) { /* groups on several devices: the host adds the norms */
        cg_tensor *stackg[16] = {0};
        cg_tensor **g = o->n_groups <= 16 ? stackg : calloc((size_t)o->n_groups, sizeof *g);
        if (!g) return CG_FAIL(CG_E_OOM, "optimizer: out of host memory");
        for (int i = 0; i < o->n_groups; i++) g[i] = group_grad(o, i);
        o->norm_pending = 0;
        cg_status st = clip_tensors(g, o->n_groups, c->clip_norm, &o->last_norm);
        if (g != stackg) free(g);
        CG_TRY(st);
    }
    double lr = cg_lr_at(&c->schedule, c->lr, o->sched_pos);
    /* everything that can fail short of the kernels themselves, before the first update */
    int need_m = c->type != CG_SGD || c->momentum != 0.0;
    for (int i = 0; i < o->n_groups; i++) {
        cg_tensor *p = group_param(o, i);
        if (!group_grad(o, i)) continue; /* no gradient reached this tensor: skipped, as in PyTorch */
        const cg_backend *be = cg__backend(p->st->dev);
        if (!be) return CG_E_DEVICE;
        if (!be->optim)
            return CG_FAIL(CG_E_UNSUPPORTED, "optimizer: the %s backend has no optimizer kernel", be->name);
        if (need_m) CG_TRY(ensure_state(&o->m[i], p));
        if (c->type != CG_SGD) CG_TRY(ensure_state(&o->v[i], p));
    }
    for (int i = 0; i < o->n_groups; i++) {
        cg_tensor *p = group_param(o, i);
        if (!group_grad(o, i)) continue;
        cg_optim_call call = group_call(o, i, lr);
        call.gate = gate;
        call.clip_sumsq = clip_sq;
        call.clip_max = c->clip_norm;
        call.coef_dev = o->coef_dev;
        *updated = 1; /* from here a failure may leave a parameter changed */
        CG_TRY(cg__backend(p->st->dev)->optim(&call));
        cg__bump_version(p);
        o->gsteps[i]++;
    }
    advance(o, lr);
    return CG_OK;
}

void cg__optimizer_set_graph_coef(cg_optimizer *o, const void *coef_dev) { o->coef_dev = coef_dev; }

const void *cg__optimizer_state_data(const cg_optimizer *o, int which) {
    const cg_tensor *t = which == 2 ? o->sq : o->n_groups > 0 ? (which ? o->v[0] : o->m[0]) : NULL;
    return t ? cg__ptr(t) : NULL;
}

uint64_t cg__optimizer_id(const cg_optimizer *o) { return o->id; }

cg_status cg__optimizer_replay_step(cg_optimizer *o, cg_optim_coef *coef) {
    if (!o->model) return CG_FAIL(CG_E_INTERNAL, "optimizer: a replayed step needs a model optimizer");
    if (!group_grad(o, 0))
        return CG_FAIL(CG_E_STATE, "optimizer: the model has no gradient buffer to replay a step on");
    double lr = cg_lr_at(&o->cfg.schedule, o->cfg.lr, o->sched_pos);
    cg_optim_call call = group_call(o, 0, lr);
    *coef = cg_optim_call_coef(&call);
    if (o->cfg.clip_norm > 0) o->norm_pending = 1; /* the replay's kernel leaves the norm in o->sq */
    cg__bump_version(group_param(o, 0));
    o->gsteps[0]++;
    advance(o, lr);
    return CG_OK;
}

cg_status cg_optimizer_step(cg_optimizer *o) {
    int updated;
    return cg__optimizer_step_ex(o, &updated);
}

cg_status cg__optimizer_step_ex(cg_optimizer *o, int *updated) {
    *updated = 0;
    CG_ARG_NOT_NULL(o, "cg_optimizer_step");
    return step_impl(o, NULL, 1, updated);
}

cg_status cg__optimizer_step_gated(cg_optimizer *o, cg_tensor *gate, int *updated) {
    return step_impl(o, gate, 0, updated);
}

void cg__optimizer_unstep(cg_optimizer *o, int64_t n) {
    if (!o || n <= 0) return;
    for (int i = 0; i < o->n_groups; i++)
        if (group_grad(o, i)) o->gsteps[i] = o->gsteps[i] > n ? o->gsteps[i] - n : 0;
    o->steps = o->steps > n ? o->steps - n : 0;
    if (!o->cfg.schedule.per_epoch) o->sched_pos = o->sched_pos > n ? o->sched_pos - n : 0;
    o->last_lr = cg_lr_at(&o->cfg.schedule, o->cfg.lr, o->sched_pos > 0 ? o->sched_pos - 1 : 0);
}

cg_status cg_optimizer_zero_grad(cg_optimizer *o) {
    CG_ARG_NOT_NULL(o, "cg_optimizer_zero_grad");
    if (o->model) return cg_model_zero_grad(o->model);
    return cg_zero_grad(o->params, o->n_groups);
}

/* ---- state for checkpoints ---- */

static cg_status set_meta_i64(cg_state_dict *sd, const char *k, int64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", (long long)v);
    return cg_state_dict_set_meta(sd, k, b);
}

static cg_status set_meta_f64(cg_state_dict *sd, const char *k, double v) {
    char b[40];
    snprintf(b, sizeof b, "%.17g", v);
    return cg_state_dict_set_meta(sd, k, b);
}

/* Metadata key of group i's update count. */
static void step_key(const cg_optimizer *o, int i, char *b, size_t n) {
    if (o->model) snprintf(b, n, "optimizer.group_step");
    else snprintf(b, n, "optimizer.%d.step", i);
}

static void state_name(const cg_optimizer *o, int i, const char *what, char *b, size_t n) {
    if (o->model) snprintf(b, n, "optimizer.%s", what);
    else snprintf(b, n, "optimizer.%d.%s", i, what);
}

cg_status cg_optimizer_state_dict(const cg_optimizer *o, cg_state_dict *sd) {
    CG_ARG_NOT_NULL(o, "cg_optimizer_state_dict");
    CG_ARG_NOT_NULL(sd, "cg_optimizer_state_dict");
    for (int i = 0; i < o->n_groups; i++) {
        cg_tensor *st_[2] = {o->m[i], o->v[i]};
        const char *what[2] = {o->cfg.type == CG_SGD ? "momentum_buffer" : "exp_avg", "exp_avg_sq"};
        for (int k = 0; k < 2; k++) {
            if (!st_[k]) continue;
            char name[64];
            state_name(o, i, what[k], name, sizeof name);
            cg_tensor *c;
            CG_TRY(cg__tensor_copy_to(st_[k], st_[k]->dtype, CG_CPU, &c));
            cg_status st = cg_state_dict_set(sd, name, c);
            cg_tensor_release(c);
            CG_TRY(st);
        }
    }
    const cg_optim_config *c = &o->cfg;
    CG_TRY(cg_state_dict_set_meta(sd, "optimizer.type", cg_optim_type_name(c->type)));
    CG_TRY(set_meta_i64(sd, "optimizer.step", o->steps));
    for (int i = 0; i < o->n_groups; i++) {
        char key[64];
        step_key(o, i, key, sizeof key);
        CG_TRY(set_meta_i64(sd, key, o->gsteps[i]));
    }
    CG_TRY(set_meta_i64(sd, "optimizer.schedule_pos", o->sched_pos));
    CG_TRY(set_meta_f64(sd, "optimizer.lr", c->lr));
    CG_TRY(set_meta_f64(sd, "optimizer.momentum", c->momentum));
    CG_TRY(set_meta_f64(sd, "optimizer.dampening", c->dampening));
    CG_TRY(set_meta_i64(sd, "optimizer.nesterov", c->nesterov));
    CG_TRY(set_meta_f64(sd, "optimizer.weight_decay", c->weight_decay));
    CG_TRY(set_meta_f64(sd, "optimizer.beta1", c->beta1));
    CG_TRY(set_meta_f64(sd, "optimizer.beta2", c->beta2));
    CG_TRY(set_meta_f64(sd, "optimizer.eps", c->eps));
    CG_TRY(set_meta_f64(sd, "optimizer.clip_norm", c->clip_norm));
    CG_TRY(set_meta_i64(sd, "optimizer.schedule.kind", c->schedule.kind));
    CG_TRY(set_meta_i64(sd, "optimizer.schedule.per_epoch", c->schedule.per_epoch));
    CG_TRY(set_meta_i64(sd, "optimizer.schedule.warmup", c->schedule.warmup));
    CG_TRY(set_meta_i64(sd, "optimizer.schedule.step_size", c->schedule.step_size));
    CG_TRY(set_meta_f64(sd, "optimizer.schedule.gamma", c->schedule.gamma));
    CG_TRY(set_meta_i64(sd, "optimizer.schedule.total", c->schedule.total));
    CG_TRY(set_meta_f64(sd, "optimizer.schedule.min_lr", c->schedule.min_lr));
    return CG_OK;
}

cg_status cg_optimizer_load_state_dict(cg_optimizer *o, const cg_state_dict *sd) {
    CG_ARG_NOT_NULL(o, "cg_optimizer_load_state_dict");
    CG_ARG_NOT_NULL(sd, "cg_optimizer_load_state_dict");
    const char *type = cg_state_dict_get_meta(sd, "optimizer.type");
    int64_t steps = 0, pos = 0, total = 0;
    if (!type || strcmp(type, cg_optim_type_name(o->cfg.type)))
        return CG_FAIL(CG_E_FORMAT, "optimizer state: %s holds state of a '%s' optimizer, this one is '%s'",
                       cg_state_dict_source(sd), type ? type : "(none)", cg_optim_type_name(o->cfg.type));
    if (cg__parse_i64(cg_state_dict_get_meta(sd, "optimizer.step"), &steps) ||
        cg__parse_i64(cg_state_dict_get_meta(sd, "optimizer.schedule_pos"), &pos))
        return CG_FAIL(CG_E_FORMAT, "optimizer state: %s lacks a valid optimizer.step / optimizer.schedule_pos",
                       cg_state_dict_source(sd));
    if (steps < 0 || pos < 0)
        return CG_FAIL(CG_E_FORMAT, "optimizer state: %s has a negative optimizer.step (%lld) or schedule_pos (%lld)",
                       cg_state_dict_source(sd), (long long)steps, (long long)pos);
    /* validate everything first; found[k][i] / fresh[k][i] live at [k * n + i] */
    int n = o->n_groups;
    cg_tensor **found = calloc((size_t)(2 * n), sizeof *found), **fresh = calloc((size_t)(2 * n), sizeof *fresh);
    int64_t *gsteps = calloc((size_t)n, sizeof *gsteps);
    cg_status st = CG_OK;
    if (!found || !fresh || !gsteps) {
        st = CG_FAIL(CG_E_OOM, "optimizer state: out of host memory");
        goto done;
    }
    for (int i = 0; i < n && st == CG_OK; i++) {
        char key[64];
        step_key(o, i, key, sizeof key);
        const char *v = cg_state_dict_get_meta(sd, key);
        /* files from before per-group counts: every group with state had all the steps */
        gsteps[i] = steps;
        if (v && (cg__parse_i64(v, &gsteps[i]) || gsteps[i] < 0 || gsteps[i] > steps))
            st = CG_FAIL(CG_E_FORMAT, "optimizer state: %s has an invalid %s '%s' (need 0..%lld)",
                         cg_state_dict_source(sd), key, v, (long long)steps);
    }
    for (int i = 0; i < n && st == CG_OK; i++) {
        const char *what[2] = {o->cfg.type == CG_SGD ? "momentum_buffer" : "exp_avg", "exp_avg_sq"};
        cg_tensor *p = group_param(o, i);
        for (int k = 0; k < 2 && st == CG_OK; k++) {
            char name[64];
            state_name(o, i, what[k], name, sizeof name);
            cg_tensor *t = cg_state_dict_get(sd, name);
            int needed = (k == 0 && (o->cfg.type != CG_SGD || o->cfg.momentum != 0)) || (k == 1 && o->cfg.type != CG_SGD);
            char a[96], b[96];
            if (t && !cg__same_shape(t, p))
                st = CG_FAIL(CG_E_SHAPE, "optimizer state: '%s' has shape %s, the parameters %s", name,
                             cg__shape_str(t->shape, t->ndim, a, 96), cg__shape_str(p->shape, p->ndim, b, 96));
            else if (t && !(cg__is_float(t->dtype) || t->dtype == CG_F16 || t->dtype == CG_BF16))
                st = CG_FAIL(CG_E_DTYPE, "optimizer state: '%s' is %s, not floating point", name,
                             cg_dtype_name(t->dtype));
            else if (!t && needed && gsteps[i] > 0)
                st = CG_FAIL(CG_E_FORMAT, "optimizer state: %s lacks '%s'", cg_state_dict_source(sd), name);
            found[k * n + i] = t;
        }
        if (st == CG_OK && !found[i] && !found[n + i]) gsteps[i] = 0; /* never updated */
    }
    /* build the new state aside; the old one is replaced only when all of it is ready */
    for (int i = 0; i < n && st == CG_OK; i++)
        for (int k = 0; k < 2 && st == CG_OK; k++) {
            if (!found[k * n + i]) continue;
            st = ensure_state(&fresh[k * n + i], group_param(o, i));
            if (st == CG_OK) st = cg_tensor_copy_(fresh[k * n + i], found[k * n + i]);
        }
    if (st == CG_OK) {
        for (int i = 0; i < n; i++) {
            cg_tensor **dst[2] = {&o->m[i], &o->v[i]};
            for (int k = 0; k < 2; k++) {
                cg_tensor_release(*dst[k]);
                *dst[k] = fresh[k * n + i];
                fresh[k * n + i] = NULL;
            }
            o->gsteps[i] = gsteps[i];
        }
        o->steps = steps;
        o->sched_pos = pos;
        if (!cg__parse_i64(cg_state_dict_get_meta(sd, "optimizer.schedule.total"), &total) && total > 0)
            o->cfg.schedule.total = total;
    }
done:
    if (fresh)
        for (int j = 0; j < 2 * n; j++) cg_tensor_release(fresh[j]);
    free(found);
    free(fresh);
    free(gsteps);
    return st;
}
