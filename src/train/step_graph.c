/* A training step recorded once and replayed (include/cgrad/train.h, cg_step_graph).
 *
 * Every step, ordinary or recorded, is step_body: zero grads, forward, loss, backward and
 * the gated optimizer update, with the bookkeeping the host reads at sync queued on the
 * device (no host wait):
 *   log[LOSS]  = the step's loss;      log[GUARD] += 0 * loss (and the optimizer adds 0 * the
 *   gradients): NaN from the first bad step on, and then every update is skipped;
 *   log[FIRST] = log[DONE] copied while the guard is finite, then log[DONE] += 1: the index
 *   (since the last sync) of the first bad step; undo = the BatchNorm statistics, copied at
 *   the start of each step while the guard is finite: those before the first bad step.
 * The host keeps the dropout stream at the start of each step since the last sync, so that
 * sync can put everything back as it was before the first bad step.
 *
 * Recording (backend graph_begin/graph_end): the second step of a shape runs step_body on
 * static copies of x and y while the backend records it. Two things change between steps
 * that the kernels take as arguments: the optimizer's coefficients (learning rate, bias
 * corrections) and the dropout stream's offset. While recording, the optimizer reads its
 * coefficients from dyn.coef and each dropout adds dyn.shift to its offset; before each
 * launch the host computes both as an ordinary step would (cg__optimizer_replay_step; the
 * stream's position now minus at recording) and writes them with set_bytes.
 *
 * fit (train_internal.h, for_fit) runs its steps through the same code: it keeps its own
 * record and undo ring, so the undo copy and the first-bad index are left out, and it asks for
 * the correct count (log[CORRECT]); a step with a hook (fit's gradient check, which reads the
 * gradients between backward and update) is an ordinary one. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "train_internal.h"

/* SAVED_*: an ordinary step's start, put back when it fails before its update */
enum { LOSS = CG_STEP_LOSS, GUARD = CG_STEP_GUARD, CORRECT = CG_STEP_CORRECT, DONE, FIRST, ONE, SAVED_LOSS, SAVED_GUARD,
       N_LOG };
#define N_HELD 8

typedef struct step_dyn { /* what a replay reads from device memory */
    uint64_t shift;       /* dropout: the stream's advance since the recorded step */
    uint64_t pad;
    cg_optim_coef coef;   /* the update's coefficients */
} step_dyn;

typedef struct shape_key {
    int ndim[2];
    int64_t shape[2][CG_MAX_DIMS];
    cg_dtype dt[2];
} shape_key;

struct cg_step_graph {
    cg_model *m;
    int for_fit;  /* fit keeps its own record: no undo copy, no first-bad index */
    int want_acc; /* log[CORRECT] = the batch's correct rows */
    cg_device dev; /* the model's at creation */
    const cg_backend *be;
    cg_tensor *log, *at[N_LOG]; /* f64 slots on the model's device */
    cg_tensor *undo;            /* BatchNorm statistics before the first bad step (NULL: none) */
    cg_tensor *dyn;             /* step_dyn, on the device */
    /* host record of the steps since the last sync */
    cg_rng *rng_at;
    int64_t *tracked_at; /* per step, per layer: num_batches_tracked at the step's start */
    int64_t n, cap;
    /* the recorded step */
    int have_key, recorded, give_up;
    shape_key key;
    cg_tensor *xs, *ys; /* static inputs */
    void *graph;
    uint64_t rng0, rng_adv; /* the stream at the recorded step, and its advance per step */
    /* what a recording holds of the model (held_by_model), after the last ordinary step and
       at the recording */
    uint64_t warm[N_HELD], rec[N_HELD];
    cg_step_graph_stats stats;
};

static shape_key key_of(const cg_tensor *x, const cg_tensor *y) {
    shape_key k;
    memset(&k, 0, sizeof k);
    const cg_tensor *t[2] = {x, y};
    for (int i = 0; i < 2; i++) {
        k.ndim[i] = t[i]->ndim;
        memcpy(k.shape[i], t[i]->shape, sizeof(int64_t) * (size_t)t[i]->ndim);
        k.dt[i] = t[i]->dtype;
    }
    return k;
}

/* Room for one more step in the host record; saves its start. */
static cg_status record_start(cg_step_graph *g) {
    cg_model *m = g->m;
    if (g->n == g->cap) {
        int64_t cap = g->cap ? 2 * g->cap : 64;
        cg_rng *r = realloc(g->rng_at, sizeof *r * (size_t)cap);
        if (r) g->rng_at = r;
        int64_t *t = realloc(g->tracked_at, sizeof *t * (size_t)(cap * m->n_layers + 1));
        if (t) g->tracked_at = t;
        if (!r || !t) return CG_FAIL(CG_E_OOM, "cg_step_graph_run: out of host memory");
        g->cap = cap;
    }
    g->rng_at[g->n] = m->rng;
    for (int i = 0; i < m->n_layers; i++) g->tracked_at[g->n * m->n_layers + i] = m->layers[i].tracked;
    return CG_OK;
}

/* Puts the host-side state back to the start of step k of the record. */
static void host_back_to(cg_step_graph *g, int64_t k) {
    cg_model *m = g->m;
    m->rng = g->rng_at[k];
    for (int i = 0; i < m->n_layers; i++) m->layers[i].tracked = g->tracked_at[k * m->n_layers + i];
}

/* One step on (x, y) inside the caller's scope; queued. hook (may be NULL) runs after the
 * backward. *began: the step's start was saved and counted (from there the device-side
 * record and the BatchNorm statistics are the step's); *updated: the update was queued. */
static cg_status step_body(cg_step_graph *g, const cg_tensor *x, const cg_tensor *y, cg_step_hook hook, void *user,
                           int *began, int *updated) {
    cg_model *m = g->m;
    cg_tensor *out = NULL, *l = NULL;
    *updated = 0;
    if (!g->for_fit) {
        if (g->undo) CG_TRY(cg__copy_gated(g->undo, m->stats, g->at[GUARD]));
        CG_TRY(cg__copy_gated(g->at[FIRST], g->at[DONE], g->at[GUARD]));
        CG_TRY(cg__reduce_to(g->at[DONE], g->at[ONE], 1.0, 0, 1));
    }
    *began = 1;
    CG_TRY(cg_model_zero_grad(m));
    CG_TRY(cg__model_forward_impl(m, x, 1, &m->rng, &out));
    CG_TRY(cg_loss(&m->loss, out, y, &l));
    CG_TRY(cg__reduce_to(g->at[LOSS], l, 1.0, 0, 0));
    CG_TRY(cg__reduce_to(g->at[GUARD], l, 0.0, 0, 1)); /* 0 * NaN: poisoned for good */
    CG_TRY(cg_backward(l));
    if (hook) CG_TRY(hook(m, user));
    CG_TRY(cg__optimizer_step_gated(m->opt, g->at[GUARD], updated));
    if (g->want_acc) CG_TRY(cg__count_correct(g->at[CORRECT], out, y, 0));
    return CG_OK;
}

/* An ordinary step, recorded in the host record. */
static cg_status eager_step(cg_step_graph *g, const cg_tensor *x, const cg_tensor *y, cg_step_hook hook, void *user,
                            int *updated_out) {
    CG_TRY(record_start(g));
    cg_model *m = g->m;
    if (!g->for_fit) { /* the step's start, for a failure before its update (fit stops at one) */
        CG_TRY(cg__reduce_to(g->at[SAVED_LOSS], g->at[LOSS], 1.0, 0, 0));
        CG_TRY(cg__reduce_to(g->at[SAVED_GUARD], g->at[GUARD], 1.0, 0, 0));
    }
    int was = m->training, updated = 0, began = 0;
    m->training = 1;
    cg_status st = cg_scope_begin();
    if (st == CG_OK) {
        st = step_body(g, x, y, hook, user, &began, &updated);
        cg_scope_end();
    }
    *updated_out = updated;
    m->training = was;
    if (st != CG_OK && !updated) { /* nothing was updated: what the forward changed goes back too */
        host_back_to(g, g->n);
        cg_status rs = CG_OK;
        if (!began) return st; /* it failed before it changed anything on the device */
        if (g->undo) {
            rs = cg__backend(m->dev)->copy_strided(m->stats, g->undo);
            cg__bump_version(m->stats);
        }
        if (!g->for_fit) { /* no trace in the device-side record either: loss, guard, step count */
            if (rs == CG_OK) rs = cg__reduce_to(g->at[LOSS], g->at[SAVED_LOSS], 1.0, 0, 0);
            if (rs == CG_OK) rs = cg__reduce_to(g->at[GUARD], g->at[SAVED_GUARD], 1.0, 0, 0);
            if (rs == CG_OK) rs = cg__reduce_to(g->at[DONE], g->at[ONE], -1.0, 0, 1);
        }
        return rs != CG_OK ? rs : st;
    }
    g->n++; /* counted even when it failed after its update was queued: sync accounts for it */
    g->stats.steps++;
    return st;
}

/* What a recording holds of the model: its memory, its optimizer (by id: a new one may
 * reuse a freed one's address, and brings its own loss and settings) and the dropout seed
 * (the kernels take it by value). A change (cg_model_to, a recompile, an optimizer state
 * moved or reloaded, cg_model_set_rng) means recording again, not replaying a stale step. */
static void held_by_model(const cg_step_graph *g, uint64_t *held) {
    const cg_model *m = g->m;
    held[0] = (uint64_t)(uintptr_t)(m->flat ? cg__ptr(m->flat) : NULL);
    held[1] = (uint64_t)(uintptr_t)(m->gflat ? cg__ptr(m->gflat) : NULL);
    held[2] = (uint64_t)(uintptr_t)(m->stats ? cg__ptr(m->stats) : NULL);
    held[3] = m->opt ? cg__optimizer_id(m->opt) : 0;
    for (int i = 0; i < 3; i++)
        held[4 + i] = (uint64_t)(uintptr_t)(m->opt ? cg__optimizer_state_data(m->opt, i) : NULL);
    held[7] = m->rng.seed;
}

static void drop_graph(cg_step_graph *g) {
    if (g->graph) g->be->graph_free(g->graph);
    g->graph = NULL;
    g->recorded = 0;
}

/* Records step_body on the static inputs; the step itself runs at the first launch. On a
 * failure nothing ran, the host state is as before, and the caller runs the step as an
 * ordinary one. */
static cg_status record(cg_step_graph *g) {
    cg_model *m = g->m;
    step_dyn *dyn = cg__ptr(g->dyn);
    CG_TRY(record_start(g));
    int64_t steps0 = cg_optimizer_steps(m->opt);
    g->rng0 = m->rng.offset;
    m->rng_shift_dev = &dyn->shift;
    cg__optimizer_set_graph_coef(m->opt, &dyn->coef);
    int was = m->training;
    m->training = 1;
    cg_status st = g->be->graph_begin(m->dev.index, &g->graph);
    if (st == CG_OK) {
        st = cg_scope_begin();
        if (st == CG_OK) {
            int began = 0, updated = 0;
            st = step_body(g, g->xs, g->ys, NULL, NULL, &began, &updated);
            cg_scope_end(); /* the temporaries go back to the graph's pool */
        }
        cg_status es = g->be->graph_end(g->graph);
        if (st == CG_OK) st = es;
    }
    m->training = was;
    m->rng_shift_dev = NULL;
    cg__optimizer_set_graph_coef(m->opt, NULL);
    uint64_t adv = m->rng.offset - g->rng0;
    /* nothing ran either way: the host state goes back to the step's start (on success the
       first launch is this step, and it advances the state like every replay) */
    cg__optimizer_unstep(m->opt, cg_optimizer_steps(m->opt) - steps0);
    host_back_to(g, g->n);
    if (st != CG_OK) {
        drop_graph(g);
        return st;
    }
    g->rng_adv = adv;
    held_by_model(g, g->rec);
    g->recorded = 1;
    return CG_OK;
}

/* One replay: this step's coefficients and dropout shift, then the launch. */
static cg_status replay(cg_step_graph *g) {
    cg_model *m = g->m;
    CG_TRY(record_start(g));
    step_dyn d;
    memset(&d, 0, sizeof d);
    CG_TRY(cg__optimizer_replay_step(m->opt, &d.coef));
    d.shift = m->rng.offset - g->rng0;
    cg_status st = g->be->set_bytes(m->dev.index, cg__ptr(g->dyn), &d, sizeof d);
    if (st == CG_OK) st = g->be->graph_launch(g->graph);
    if (st != CG_OK) { /* nothing of this step was queued */
        cg__optimizer_unstep(m->opt, 1);
        return st;
    }
    m->rng.offset += g->rng_adv;
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].kind == CG_LAYER_BATCHNORM1D) m->layers[i].tracked++;
    if (m->gflat) cg__bump_version(m->gflat);
    if (m->stats) cg__bump_version(m->stats);
    g->n++;
    g->stats.steps++;
    g->stats.replays++;
    return CG_OK;
}

/* An ordinary step; when it succeeded (the optimizer's state then exists), the model's
 * memory after it is the warm fingerprint a recording needs. */
static cg_status warm_step(cg_step_graph *g, const cg_tensor *x, const cg_tensor *y, cg_step_hook hook, void *user,
                           int *updated) {
    cg_status st = eager_step(g, x, y, hook, user, updated);
    if (st == CG_OK) held_by_model(g, g->warm);
    return st;
}

/* The static inputs, of the first step's shapes, on the model's device. */
static cg_status make_inputs(cg_step_graph *g) {
    if (!g->xs) CG_TRY(cg__tensor_new(g->key.shape[0], g->key.ndim[0], g->key.dt[0], g->m->dev, &g->xs));
    if (!g->ys) CG_TRY(cg__tensor_new(g->key.shape[1], g->key.ndim[1], g->key.dt[1], g->m->dev, &g->ys));
    return CG_OK;
}

/* Copies (x, y) into the static inputs, unless they are the static inputs themselves. */
static cg_status fill_inputs(cg_step_graph *g, const cg_tensor *x, const cg_tensor *y) {
    if (x != g->xs) CG_TRY(cg_tensor_copy_(g->xs, x));
    if (y != g->ys) CG_TRY(cg_tensor_copy_(g->ys, y));
    return CG_OK;
}

cg_status cg_step_graph_inputs(cg_step_graph *g, cg_tensor **x, cg_tensor **y) {
    if (x) *x = NULL;
    if (y) *y = NULL;
    CG_ARG_NOT_NULL(g, "cg_step_graph_inputs");
    if (!g->have_key)
        return CG_FAIL(CG_E_STATE, "cg_step_graph_inputs: run one step first (cg_step_graph_run): the first that "
                                   "succeeds fixes the inputs' shapes and dtypes");
    CG_TRY(make_inputs(g));
    if (x) *x = g->xs;
    if (y) *y = g->ys;
    return CG_OK;
}

cg_status cg_step_graph_run(cg_step_graph *g, const cg_tensor *x, const cg_tensor *y) {
    int updated;
    return cg__step_graph_step(g, x, y, NULL, NULL, &updated);
}

cg_status cg__step_graph_step(cg_step_graph *g, const cg_tensor *x, const cg_tensor *y, cg_step_hook hook, void *user,
                              int *updated) {
    *updated = 0;
    CG_ARG_NOT_NULL(g, "cg_step_graph_run");
    CG_ARG_NOT_NULL(x, "cg_step_graph_run");
    CG_ARG_NOT_NULL(y, "cg_step_graph_run");
    if (x->ndim > CG_MAX_DIMS || y->ndim > CG_MAX_DIMS) return CG_FAIL(CG_E_SHAPE, "cg_step_graph_run: too many dims");
    if (!cg__same_device(g->m->dev, g->dev)) {
        char a[32], b[32];
        snprintf(a, sizeof a, "%s", cg_device_str(g->dev));
        snprintf(b, sizeof b, "%s", cg_device_str(g->m->dev));
        return CG_FAIL(CG_E_DEVICE, "cg_step_graph_run: the model moved from %s to %s since the step graph was made; "
                                    "free it and create a new one", a, b);
    }
    shape_key k = key_of(x, y);
    if (!g->have_key) { /* the first step that succeeds fixes the shapes recorded (not one that failed on them) */
        cg_status st = warm_step(g, x, y, hook, user, updated);
        if (st == CG_OK) g->key = k, g->have_key = 1;
        return st;
    }
    int same_shape = memcmp(&k, &g->key, sizeof k) == 0;
    uint64_t now[N_HELD];
    held_by_model(g, now);
    if (g->recorded && memcmp(now, g->rec, sizeof now) != 0) drop_graph(g); /* moved, loaded, recompiled */
    if (!same_shape || hook) return warm_step(g, x, y, hook, user, updated);
    if (!g->recorded) {
        /* record only once an ordinary step has run on this very memory: the optimizer's first
           step creates its state, which a recording would zero again at every replay */
        if (g->give_up || !g->be->graph_begin || memcmp(now, g->warm, sizeof now) != 0)
            return warm_step(g, x, y, NULL, NULL, updated);
        cg_status st = make_inputs(g);
        if (st == CG_OK) st = fill_inputs(g, x, y);
        if (st == CG_OK) st = record(g);
        if (st != CG_OK) {
            /* not recordable (the driver refuses a call, or a copy from the host), out of memory
               (a recording cannot wait for the stream to give the cache back; an ordinary step
               can), or a failure of the step itself: nothing ran, and this step and the later
               ones run without a graph (the ordinary step reports its own failure, if any) */
            snprintf(g->stats.why_not, sizeof g->stats.why_not, "%s", cg_last_error());
            g->give_up = 1;
            return warm_step(g, x, y, NULL, NULL, updated);
        }
    } else {
        CG_TRY(fill_inputs(g, x, y));
    }
    CG_TRY(replay(g));
    *updated = 1;
    return CG_OK;
}

cg_tensor *cg__step_graph_slot(cg_step_graph *g, int which) { return g->at[which]; }

void cg__step_graph_forget(cg_step_graph *g) { g->n = 0; }

cg_status cg_step_graph_sync(cg_step_graph *g, double *last_loss) {
    CG_ARG_NOT_NULL(g, "cg_step_graph_sync");
    cg_model *m = g->m;
    double r[N_LOG];
    cg_status rst = cg__read_f64(g->log, r, N_LOG); /* waits */
    if (rst != CG_OK && rst != CG_E_INVALID) return rst; /* CG_E_INVALID: a kernel's data error; r came back */
    char data_msg[400] = "";
    if (rst == CG_E_INVALID) snprintf(data_msg, sizeof data_msg, "%s", cg_last_error());
    int64_t n = g->n;
    cg_status st = CG_OK;
    if (!isfinite(r[GUARD]) && n > 0) {
        int64_t k = (int64_t)r[FIRST];
        if (k < 0 || k >= n) k = 0;
        cg__optimizer_unstep(m->opt, n - k); /* the gate skipped steps k .. n-1 */
        host_back_to(g, k);
        if (g->undo) {
            st = cg__backend(m->dev)->copy_strided(m->stats, g->undo);
            cg__bump_version(m->stats);
        }
        if (st == CG_OK) {
            if (rst == CG_E_INVALID)
                st = CG_FAIL(CG_E_INVALID, "cg_step_graph: step %lld of %lld since the last sync: %s; the model is as "
                                           "it was before that step",
                             (long long)k + 1, (long long)n, data_msg);
            else
                st = CG_FAIL(CG_E_NUMERIC, "cg_step_graph: the loss or a gradient is not finite at step %lld of %lld "
                                           "since the last sync; that step and the ones after it made no update: the "
                                           "model is as it was before it (lower the learning rate, or set clip_norm)",
                             (long long)k + 1, (long long)n);
        }
    } else if (rst == CG_E_INVALID) {
        st = CG_FAIL(CG_E_INVALID, "cg_step_graph: %s", data_msg);
    }
    if (last_loss) *last_loss = r[LOSS];
    /* a new record: the guard and counters start again (queued; the next read waits for it) */
    cg_status fs = cg__backend(m->dev)->fill(g->log, 0.0);
    if (fs == CG_OK) fs = cg__backend(m->dev)->fill(g->at[ONE], 1.0);
    g->n = 0;
    return st != CG_OK ? st : fs;
}

cg_status cg_step_graph_create(cg_model *m, cg_step_graph **out) { return cg__step_graph_create(m, 0, 0, 0, out); }

cg_status cg__step_graph_create(cg_model *m, int for_fit, int want_acc, int no_graphs, cg_step_graph **out) {
    CG_ARG_NOT_NULL(out, "cg_step_graph_create");
    *out = NULL;
    CG_ARG_NOT_NULL(m, "cg_step_graph_create");
    if (!m->compiled || !m->opt)
        return CG_FAIL(CG_E_STATE, "cg_step_graph_create: compile the model first (cg_model_compile)");
    CG_TRY(cg__model_ensure_built(m));
    cg_step_graph *g = calloc(1, sizeof *g);
    if (!g) return CG_FAIL(CG_E_OOM, "cg_step_graph_create: out of host memory");
    g->m = m;
    g->for_fit = for_fit;
    g->want_acc = want_acc;
    g->dev = m->dev;
    g->be = cg__backend(m->dev);
    int64_t one = 1, nd = (int64_t)((sizeof(step_dyn) + 7) / 8);
    cg_status st = cg__f64_zeros(m->dev, N_LOG, &g->log);
    for (int i = 0; i < N_LOG && st == CG_OK; i++) st = cg__tensor_view(g->log, &one, &one, 1, i, &g->at[i]);
    if (st == CG_OK) st = g->be->fill(g->at[ONE], 1.0);
    if (st == CG_OK && m->stats && !for_fit) st = cg__tensor_new_like(m->stats, &g->undo);
    if (st == CG_OK && g->be->graph_begin) st = cg__f64_zeros(m->dev, nd, &g->dyn);
    if (st != CG_OK) {
        cg_step_graph_free(g);
        return st;
    }
    if (!g->be->graph_begin)
        snprintf(g->stats.why_not, sizeof g->stats.why_not, "the %s backend has no graphs", g->be->name);
    else if (no_graphs)
        snprintf(g->stats.why_not, sizeof g->stats.why_not, "graphs were turned off");
    g->give_up = no_graphs;
    *out = g;
    return CG_OK;
}

cg_status cg_step_graph_stats_get(const cg_step_graph *g, cg_step_graph_stats *out) {
    CG_ARG_NOT_NULL(g, "cg_step_graph_stats_get");
    CG_ARG_NOT_NULL(out, "cg_step_graph_stats_get");
    *out = g->stats;
    out->recorded = g->recorded;
    return CG_OK;
}

void cg_step_graph_free(cg_step_graph *g) {
    if (!g) return;
    drop_graph(g); /* queued replays keep what they use (graph.c) */
    for (int i = 0; i < N_LOG; i++) cg_tensor_release(g->at[i]);
    cg_tensor_release(g->log);
    cg_tensor_release(g->undo);
    cg_tensor_release(g->dyn);
    cg_tensor_release(g->xs);
    cg_tensor_release(g->ys);
    free(g->rng_at);
    free(g->tracked_at);
    free(g);
}
