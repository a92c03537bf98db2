/* compile / train_step / fit / evaluate / predict: the Keras-style loop over the data
 * helper's loader (seeded per-epoch shuffling, batches on the model's device). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad/data.h"
#include "train_internal.h"

cg_status cg_model_compile(cg_model *m, const cg_optim_config *opt, const cg_loss_config *loss, int metrics) {
    CG_ARG_NOT_NULL(m, "cg_model_compile");
    CG_ARG_NOT_NULL(opt, "cg_model_compile");
    CG_ARG_NOT_NULL(loss, "cg_model_compile");
    if (loss->kind < 0 || loss->kind >= CG_LOSS_COUNT)
        return CG_FAIL(CG_E_INVALID, "cg_model_compile: unknown loss %d", (int)loss->kind);
    if (loss->reduction != CG_REDUCE_MEAN && loss->reduction != CG_REDUCE_SUM)
        return CG_FAIL(CG_E_INVALID, "cg_model_compile: the training loss needs reduction MEAN or SUM");
    cg_optimizer *o;
    CG_TRY(cg_optimizer_create(m, opt, &o));
    cg_optimizer_free(m->opt);
    m->opt = o;
    m->loss = *loss;
    m->metrics = metrics;
    m->compiled = 1;
    return CG_OK;
}

cg_optimizer *cg_model_optimizer(cg_model *m) { return m ? m->opt : NULL; }

cg_fit_config cg_fit_config_default(void) {
    cg_fit_config c;
    memset(&c, 0, sizeof c);
    c.epochs = 1;
    c.batch_size = 32;
    c.shuffle = 1;
    c.early_stopping.monitor = CG_MONITOR_VAL_LOSS;
    c.verbose = CG_VERBOSE_AUTO;
    c.grad_vanish = 1e-7;
    c.grad_explode = 1e3;
    return c;
}

/* One step on a batch, inside the caller's scope (cg_model_train_step: the host reads the
 * loss before the update). On a non-finite loss, or any failure before the update, nothing
 * is updated: the BatchNorm statistics and the dropout stream the forward changed are put back
 * from `ring`. */
static cg_status train_batch(cg_model *m, cg_step_ring *ring, const cg_tensor *xb, const cg_tensor *yb,
                             double *loss) {
    cg_tensor *out = NULL, *l = NULL;
    CG_TRY(cg_model_zero_grad(m));
    CG_TRY(cg__step_ring_save(m, ring, 0));
    double v = 0;
    cg_status st = cg__model_forward_impl(m, xb, 1, &m->rng, &out);
    if (st == CG_OK) st = cg_loss(&m->loss, out, yb, &l);
    if (st == CG_OK) st = cg_tensor_item(l, &v);
    *loss = v;
    if (st == CG_OK && !isfinite(v))
        st = CG_FAIL(CG_E_NUMERIC, "loss is %g; nothing was updated", v);
    if (st == CG_OK) st = cg_backward(l);
    int updated = 0;
    if (st == CG_OK) st = cg__optimizer_step_ex(m->opt, &updated);
    if (st != CG_OK && !updated) { /* e.g. a non-finite clipping norm: nothing was updated */
        cg_status rs = cg__step_ring_restore(m, ring, 0);
        return rs != CG_OK ? rs : st;
    }
    return st;
}

static cg_status need_compiled(const cg_model *m, const char *fn) {
    if (!m) return CG_FAIL(CG_E_INVALID, "%s: model is NULL", fn);
    if (!m->compiled || !m->opt)
        return CG_FAIL(CG_E_STATE, "%s: compile the model first (cg_model_compile with an optimizer and a loss)", fn);
    return CG_OK;
}

cg_status cg_model_train_step(cg_model *m, const cg_tensor *x, const cg_tensor *y, double *loss) {
    CG_TRY(need_compiled(m, "cg_model_train_step"));
    CG_ARG_NOT_NULL(x, "cg_model_train_step");
    CG_ARG_NOT_NULL(y, "cg_model_train_step");
    cg_step_ring ring;
    CG_TRY(cg__step_ring_init(m, 1, &ring));
    int was = m->training;
    m->training = 1;
    double v = 0;
    cg_status st = cg_scope_begin();
    if (st == CG_OK) {
        st = train_batch(m, &ring, x, y, &v);
        cg_scope_end();
    }
    m->training = was;
    cg__step_ring_free(&ring);
    if (loss) *loss = v;
    return st;
}

/* ---- evaluate / predict ---- */

static int64_t rows(const cg_tensor *t) { return t->ndim ? t->shape[0] : 1; }

cg_status cg_model_evaluate(cg_model *m, const cg_tensor *x, const cg_tensor *y, int64_t batch_size, double *loss,
                            double *accuracy) {
    CG_TRY(need_compiled(m, "cg_model_evaluate"));
    CG_ARG_NOT_NULL(x, "cg_model_evaluate");
    CG_ARG_NOT_NULL(y, "cg_model_evaluate");
    int64_t n = rows(x);
    if (rows(y) != n)
        return CG_FAIL(CG_E_SHAPE, "cg_model_evaluate: x has %lld rows but y %lld", (long long)n, (long long)rows(y));
    if (n == 0) return CG_FAIL(CG_E_SHAPE, "cg_model_evaluate: no rows to evaluate");
    if (batch_size <= 0) batch_size = 256;
    int want_acc = (m->metrics & CG_METRIC_ACCURACY) != 0;
    /* loss sum and correct count accumulate on the model's device: one read at the end */
    cg_tensor *acc = NULL, *lsum = NULL, *csum = NULL;
    CG_TRY(cg__f64_zeros(m->dev, 2, &acc));
    cg_status st = cg__tensor_view(acc, (int64_t[]){1}, (int64_t[]){1}, 1, 0, &lsum);
    if (st == CG_OK) st = cg__tensor_view(acc, (int64_t[]){1}, (int64_t[]){1}, 1, 1, &csum);
    int no_grad = st == CG_OK;
    if (no_grad) cg_no_grad_begin();
    for (int64_t s = 0; s < n && st == CG_OK; s += batch_size) {
        int64_t e = s + batch_size < n ? s + batch_size : n;
        if ((st = cg_scope_begin()) != CG_OK) break;
        cg_tensor *xb, *yb, *out, *l;
        st = cg_slice_rows(x, s, e, &xb);
        if (st == CG_OK) st = cg_slice_rows(y, s, e, &yb);
        if (st == CG_OK) st = cg__model_forward_impl(m, xb, 0, NULL, &out);
        if (st == CG_OK) st = cg_loss(&m->loss, out, yb, &l);
        if (st == CG_OK)
            st = cg__reduce_to(lsum, l, m->loss.reduction == CG_REDUCE_MEAN ? (double)(e - s) : 1.0, 0, 1);
        if (st == CG_OK && want_acc) st = cg__count_correct(csum, out, yb, 1);
        cg_scope_end();
    }
    if (no_grad) cg_no_grad_end();
    double r[2] = {0, 0};
    if (st == CG_OK) st = cg__read_f64(acc, r, 2);
    cg_tensor_release(lsum);
    cg_tensor_release(csum);
    cg_tensor_release(acc);
    if (st != CG_OK) return st;
    if (loss) *loss = r[0] / (double)n;
    if (accuracy) *accuracy = want_acc ? r[1] / (double)n : NAN;
    return CG_OK;
}

cg_status cg_model_predict_batches(const cg_model *m, const cg_tensor *x, int64_t batch_size, cg_tensor **y) {
    CG_ARG_NOT_NULL(m, "cg_model_predict_batches");
    CG_ARG_NOT_NULL(x, "cg_model_predict_batches");
    CG_ARG_NOT_NULL(y, "cg_model_predict_batches");
    if (!m->built) return CG_FAIL(CG_E_STATE, "cg_model_predict_batches: build the model first");
    if (batch_size <= 0) batch_size = 256;
    int64_t n = rows(x);
    char *host = NULL;
    size_t row_bytes = 0;
    int64_t shape[CG_MAX_DIMS];
    int ndim = 0;
    cg_dtype dt = m->dtype;
    cg_status st = CG_OK;
    for (int64_t s = 0; s < n && st == CG_OK; s += batch_size) {
        int64_t e = s + batch_size < n ? s + batch_size : n;
        if ((st = cg_scope_begin()) != CG_OK) break;
        cg_tensor *xb, *out = NULL;
        st = cg_slice_rows(x, s, e, &xb);
        if (st == CG_OK) st = cg_model_predict(m, xb, &out);
        if (st == CG_OK && !host) {
            ndim = out->ndim;
            memcpy(shape, out->shape, sizeof shape);
            shape[0] = n;
            row_bytes = cg_tensor_nbytes(out) / (size_t)(e - s);
            dt = out->dtype;
            host = malloc(row_bytes * (size_t)n + 1);
            if (!host) st = CG_FAIL(CG_E_OOM, "cg_model_predict_batches: out of host memory");
        }
        if (st == CG_OK) st = cg_tensor_to_host(out, host + row_bytes * (size_t)s, row_bytes * (size_t)(e - s));
        cg_scope_end();
    }
    if (st == CG_OK && n == 0) st = CG_FAIL(CG_E_SHAPE, "cg_model_predict_batches: x has no rows");
    if (st == CG_OK) st = cg_tensor_from_host(host, shape, ndim, dt, m->dev, y);
    free(host);
    return st;
}

/* ---- fit's step log ----
 * A training step never waits for the device. Each step is one of the step graph's
 * (step_graph.c: on a GPU, after one ordinary step, a CUDA graph replayed), which leaves the
 * step's loss, its correct count and the sticky guard (which absorbs 0 * loss and 0 * the
 * gradients' sum or squared norm, so one non-finite value makes it NaN for good) in slots of
 * its own; the optimizer kernels skip their update once the guard is NaN. Three copies put
 * them into the step's one-element slots of a small device buffer. The host
 * reads the buffer when the window is full, when the progress bar is due, and at the end of
 * an epoch; it then adds the losses in step order (the same sums as reading each loss) and,
 * on a poisoned guard, reports the first failing step and takes back the step counters of
 * the skipped updates: the parameters are those before that step. What the forwards of the
 * failing step and the ones after it did change (BatchNorm statistics, the dropout stream) is
 * put back from a copy made at the start of every step (`undo`). */

#define LOG_WINDOW 64

typedef struct step_log {
    cg_step_graph *sg;                       /* runs the steps; its slots hold the last one's results */
    cg_tensor *buf;                          /* f64 (3 W): losses, counts, guards */
    cg_tensor *loss[LOG_WINDOW], *corr[LOG_WINDOW], *guard_at[LOG_WINDOW];
    int64_t rows[LOG_WINDOW];                /* batch rows of each recorded step */
    int n;                                   /* steps recorded since the last read */
    int64_t step0;                           /* epoch step of record 0 */
    int unrecorded;                          /* 1: the step after the records failed on the host after
                                                its gated update was queued (its counters advanced) */
    cg_step_ring undo;                      /* the model's state at the start of each step */
    /* A data error a kernel reported at a host read inside the window (CG_E_INVALID, e.g. a
     * label out of range on the GPU, where the kernel writes NaN and the report waits for the
     * next synchronisation): kept until the window is read, so that the skipped updates are
     * taken back first, then returned with the step it poisoned. */
    int data_err;
    char data_msg[400];
} step_log;

static void step_log_keep_data_error(step_log *g) {
    if (g->data_err) return; /* the first one */
    g->data_err = 1;
    snprintf(g->data_msg, sizeof g->data_msg, "%s", cg_last_error());
}

static void step_log_free(step_log *g) {
    for (int k = 0; k < LOG_WINDOW; k++) {
        cg_tensor_release(g->loss[k]);
        cg_tensor_release(g->corr[k]);
        cg_tensor_release(g->guard_at[k]);
    }
    cg_tensor_release(g->buf);
    cg_step_graph_free(g->sg);
    cg__step_ring_free(&g->undo);
    memset(g, 0, sizeof *g);
}

static cg_status step_log_init(step_log *g, cg_model *m, int want_acc, int no_graphs) {
    memset(g, 0, sizeof *g);
    CG_TRY(cg__step_ring_init(m, LOG_WINDOW, &g->undo));
    int64_t one = 1;
    cg_status st = cg__step_graph_create(m, 1, want_acc, no_graphs, &g->sg);
    if (st == CG_OK) st = cg__f64_zeros(m->dev, 3 * LOG_WINDOW, &g->buf);
    for (int k = 0; k < LOG_WINDOW && st == CG_OK; k++) {
        st = cg__tensor_view(g->buf, &one, &one, 1, k, &g->loss[k]);
        if (st == CG_OK) st = cg__tensor_view(g->buf, &one, &one, 1, LOG_WINDOW + k, &g->corr[k]);
        if (st == CG_OK) st = cg__tensor_view(g->buf, &one, &one, 1, 2 * LOG_WINDOW + k, &g->guard_at[k]);
    }
    if (st != CG_OK) step_log_free(g);
    return st;
}

typedef struct epoch_sums {
    double loss;
    int64_t seen, correct;
} epoch_sums;

/* One step on a batch, inside the caller's scope; queued on the device, recorded in slot g->n.
 * hook (optional, it makes the step an ordinary one) may read the device; a data error it
 * meets goes to the step log. */
static cg_status fit_step(cg_model *m, step_log *g, const cg_tensor *xb, const cg_tensor *yb, int want_acc,
                          cg_step_hook hook, void *hook_user) {
    int k = g->n;
    CG_TRY(cg__step_ring_save(m, &g->undo, k));
    cg__step_graph_forget(g->sg); /* the ring is the record */
    int updated = 0;
    cg_status st = cg__step_graph_step(g->sg, xb, yb, hook, hook_user, &updated);
    if (st != CG_OK && !updated) { /* a failure before the update leaves the model as it was before this step */
        cg_status rs = cg__step_ring_restore(m, &g->undo, k);
        return rs != CG_OK ? rs : st;
    }
    if (st == CG_OK) st = cg__reduce_to(g->loss[k], cg__step_graph_slot(g->sg, CG_STEP_LOSS), 1.0, 0, 0);
    if (st == CG_OK) st = cg__reduce_to(g->guard_at[k], cg__step_graph_slot(g->sg, CG_STEP_GUARD), 1.0, 0, 0);
    if (st == CG_OK && want_acc)
        st = cg__reduce_to(g->corr[k], cg__step_graph_slot(g->sg, CG_STEP_CORRECT), 1.0, 0, 0);
    if (st != CG_OK) { /* after the update: should an earlier step have poisoned the gate, */
        g->unrecorded = 1; /* this step's counters go back too */
        return st;
    }
    g->rows[k] = rows(xb);
    g->n++;
    return CG_OK;
}

/* Reads the recorded steps (waits for the device), adds them to e and the progress bar. */
static cg_status step_log_read(cg_model *m, step_log *g, epoch_sums *e, cg_progress *prog, int want_acc, int epoch,
                               int64_t spe) {
    int unrecorded = g->unrecorded;
    g->unrecorded = 0;
    if (g->n == 0 && !g->data_err) return CG_OK;
    double r[3 * LOG_WINDOW];
    cg_status rst = cg__read_f64(g->buf, r, 3 * LOG_WINDOW);
    if (rst == CG_E_INVALID) step_log_keep_data_error(g); /* the copy still came back */
    else if (rst != CG_OK) return rst;
    for (int k = 0; k < g->n; k++) {
        double v = r[k];
        if (!isfinite(r[2 * LOG_WINDOW + k])) {
            cg__optimizer_unstep(m->opt, g->n - k + unrecorded); /* the gate skipped steps k .. n-1 */
            cg_status rs = cg__step_ring_restore(m, &g->undo, k);
            int64_t at = g->step0 + k + 1;
            g->n = 0;
            if (rs != CG_OK) return rs;
            if (g->data_err) {
                g->data_err = 0;
                return CG_FAIL(CG_E_INVALID, "fit: epoch %d, step %lld of %lld: %s; the parameters are those before "
                                             "this step",
                               epoch + 1, (long long)at, (long long)spe, g->data_msg);
            }
            if (!isfinite(v))
                return CG_FAIL(CG_E_NUMERIC, "fit: the loss is %g at epoch %d, step %lld of %lld; the parameters are "
                                             "those before this step (lower the learning rate, or set clip_norm)",
                               v, epoch + 1, (long long)at, (long long)spe);
            return CG_FAIL(CG_E_NUMERIC, "fit: the gradient norm is not finite at epoch %d, step %lld of %lld (loss "
                                         "%g); the parameters are those before this step (lower the learning rate)",
                           epoch + 1, (long long)at, (long long)spe, v);
        }
        int64_t b = g->rows[k];
        e->loss += m->loss.reduction == CG_REDUCE_MEAN ? v * (double)b : v;
        e->seen += b;
        e->correct += (int64_t)r[LOG_WINDOW + k];
        cg__progress_step(prog, g->step0 + k + 1, e->loss / (double)e->seen,
                          want_acc ? (double)e->correct / (double)e->seen : NAN);
    }
    g->step0 += g->n;
    g->n = 0;
    if (g->data_err) { /* reported without poisoning a step's guard */
        g->data_err = 0;
        return CG_FAIL(CG_E_INVALID, "fit: epoch %d: %s", epoch + 1, g->data_msg);
    }
    return CG_OK;
}

/* After a step failed on the host: a step earlier in the window may have failed on the device
 * already (a NaN the gate absorbed). That failure came first: it is reported, and the steps
 * from it on are taken back (the failed step's own state was put back by fit_step, so the ring
 * reaches back from there). Otherwise the step's own failure stands. */
static cg_status step_log_settle(cg_model *m, step_log *g, cg_status st, epoch_sums *e, cg_progress *prog,
                                 int want_acc, int epoch, int64_t spe) {
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", cg_last_error());
    cg_status rs = step_log_read(m, g, e, prog, want_acc, epoch, spe);
    if (rs == CG_E_NUMERIC || rs == CG_E_INVALID) return rs; /* found in the log: it came first */
    cg__restore_error(keep);                                /* else (the read's own failure too) */
    return st;
}

/* ---- fit ---- */

typedef struct grad_watch {
    cg_fit_config const *cfg;
    cg_progress *prog;
    step_log *log;
    cg_grad_norm *norms;
    int cap;
    int epoch;
    int64_t step, every;
    int warned; /* once per epoch */
} grad_watch;

/* Whether the gradient-health check runs on this step. */
static int grad_hook_due(const grad_watch *w) {
    if (w->every < 0 || w->warned) return 0;
    return w->every == 0 ? w->step == 0 : w->step % w->every == 0;
}

/* The gradient-health warning: reads the per-layer norms (a host wait) on the chosen steps.
 * A data error reported by that read is kept in the step log (see step_log); other
 * failures are returned. */
static cg_status grad_hook(cg_model *m, void *user) {
    grad_watch *w = user;
    int n = 0;
    cg_status st = cg_model_grad_norms(m, w->norms, w->cap, &n);
    if (st == CG_E_INVALID) {
        step_log_keep_data_error(w->log);
        return CG_OK;
    }
    CG_TRY(st);
    for (int i = 0; i < n && i < w->cap; i++) {
        double g = w->norms[i].norm;
        const char *what = NULL;
        if (!isfinite(g) || g > w->cfg->grad_explode) what = "exploding: clip gradients (clip_norm) or lower the learning rate";
        else if (g < w->cfg->grad_vanish && strstr(w->norms[i].name, ".weight"))
            what = "vanishing: use ReLU/GELU, He/Xavier init or normalization layers";
        if (!what) continue;
        char msg[256];
        snprintf(msg, sizeof msg, "warning: epoch %d step %lld: gradient norm of %s is %.3g (%s)", w->epoch + 1,
                 (long long)w->step + 1, w->norms[i].name, g, what);
        cg__progress_message(w->prog, msg);
        w->warned = 1;
        break;
    }
    return CG_OK;
}

static double monitor_value(const cg_epoch_logs *l, cg_monitor mon, int has_val) {
    switch (mon) {
    case CG_MONITOR_VAL_LOSS: return has_val ? l->val_loss : l->loss;
    case CG_MONITOR_VAL_ACCURACY: return has_val ? l->val_accuracy : l->accuracy;
    case CG_MONITOR_LOSS: return l->loss;
    case CG_MONITOR_ACCURACY: return l->accuracy;
    }
    return NAN;
}

static int has_batchnorm(const cg_model *m) {
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].kind == CG_LAYER_BATCHNORM1D) return 1;
    return 0;
}

cg_status cg_model_fit(cg_model *m, const cg_tensor *x, const cg_tensor *y, const cg_fit_config *cfg_in,
                       cg_history **hist_out) {
    CG_TRY(need_compiled(m, "cg_model_fit"));
    CG_ARG_NOT_NULL(x, "cg_model_fit");
    CG_ARG_NOT_NULL(y, "cg_model_fit");
    cg_fit_config cfg = cfg_in ? *cfg_in : cg_fit_config_default();
    if (hist_out) *hist_out = NULL;
    if (cfg.epochs < 0 || cfg.batch_size <= 0)
        return CG_FAIL(CG_E_INVALID, "cg_model_fit: need epochs >= 0 and batch_size > 0, got %d and %lld", cfg.epochs,
                       (long long)cfg.batch_size);
    if (!(cfg.validation_split >= 0 && cfg.validation_split < 1))
        return CG_FAIL(CG_E_INVALID, "cg_model_fit: validation_split must be in [0, 1), got %g", cfg.validation_split);
    if ((cfg.x_val == NULL) != (cfg.y_val == NULL))
        return CG_FAIL(CG_E_INVALID, "cg_model_fit: give both x_val and y_val, or neither");
    /* without the metric the monitor is NaN every epoch: training would stop after `patience` epochs
     * with nothing restored (unless on_epoch_end supplies the value) */
    if (cfg.early_stopping.enabled && !(m->metrics & CG_METRIC_ACCURACY) && !cfg.on_epoch_end &&
        (cfg.early_stopping.monitor == CG_MONITOR_ACCURACY || cfg.early_stopping.monitor == CG_MONITOR_VAL_ACCURACY))
        return CG_FAIL(CG_E_INVALID, "cg_model_fit: early stopping monitors %s but the accuracy metric is not "
                                     "computed; compile with CG_METRIC_ACCURACY (or monitor a loss)",
                       cfg.early_stopping.monitor == CG_MONITOR_ACCURACY ? "accuracy" : "val_accuracy");
    int64_t n = rows(x);
    if (rows(y) != n)
        return CG_FAIL(CG_E_SHAPE, "cg_model_fit: x has %lld rows but y %lld", (long long)n, (long long)rows(y));
    CG_TRY(cg__model_ensure_built(m));

    cg_status st = CG_OK;
    cg_dataset *ds = NULL;
    cg_loader *ld = NULL;
    cg_history *hist = NULL;
    cg_weights_snapshot best_w = {0};
    cg_grad_norm *norms = NULL;
    step_log slog = {0};
    int was_training = m->training;
    /* no scope stays open across the epoch loop: the user's callback runs there */
    const cg_tensor *xv = cfg.x_val, *yv = cfg.y_val;
    cg_tensor *xt = (cg_tensor *)x, *yt = (cg_tensor *)y;
    cg_tensor *held[4] = {NULL, NULL, NULL, NULL}; /* split slices, owned */
    if (!xv && cfg.validation_split > 0) {
        int64_t n_val = (int64_t)((double)n * cfg.validation_split);
        if (n_val > 0 && n_val < n) { /* Keras: the last fraction, before shuffling */
            CG_CHECK_GOTO(cg_scope_begin());
            st = cg_slice_rows(x, 0, n - n_val, &held[0]);
            if (st == CG_OK) st = cg_slice_rows(y, 0, n - n_val, &held[1]);
            if (st == CG_OK) st = cg_slice_rows(x, n - n_val, n, &held[2]);
            if (st == CG_OK) st = cg_slice_rows(y, n - n_val, n, &held[3]);
            for (int i = 0; i < 4; i++) cg_keep(held[i]);
            cg_scope_end();
            if (st != CG_OK) goto fail;
            xt = held[0], yt = held[1], xv = held[2], yv = held[3];
        }
    }
    int has_val = xv != NULL;
    int64_t n_train = rows(xt);
    if (n_train == 0) {
        st = CG_FAIL(CG_E_SHAPE, "cg_model_fit: no training rows");
        goto fail;
    }
    CG_CHECK_GOTO(cg_dataset_from_tensors(xt, yt, &ds));
    cg_loader_opts lo = {.batch_size = cfg.batch_size,
                         .shuffle = cfg.shuffle,
                         .seed = cfg.seed ? cfg.seed : m->seed,
                         /* BatchNorm cannot train on a batch of one row */
                         .drop_last = has_batchnorm(m) && n_train % cfg.batch_size == 1,
                         .device = m->dev};
    CG_CHECK_GOTO(cg_loader_create(ds, &lo, &ld));
    int64_t spe = cg_loader_num_batches(ld);
    {
        const cg_lr_schedule *s = &cg_optimizer_config(m->opt)->schedule;
        if (s->kind == CG_SCHED_COSINE && s->total <= 0) {
            int64_t total = s->per_epoch ? cfg.epochs : (int64_t)cfg.epochs * spe;
            total -= s->warmup;
            cg__optimizer_set_total(m->opt, total > 0 ? total : 1);
        }
    }
    CG_CHECK_GOTO(cg_history_create(&hist));
    int want_acc = (m->metrics & CG_METRIC_ACCURACY) != 0;
    CG_CHECK_GOTO(step_log_init(&slog, m, want_acc, cfg.no_graphs));
    cg_progress prog;
    cg__progress_init(&prog, cfg.out, cfg.verbose, cfg.epochs, want_acc);
    int n_par = 0;
    CG_CHECK_GOTO(cg_model_parameters(m, NULL, NULL, 0, &n_par));
    norms = calloc((size_t)n_par + 1, sizeof *norms);
    if (!norms) {
        st = CG_FAIL(CG_E_OOM, "cg_model_fit: out of host memory");
        goto fail;
    }
    grad_watch gw = {.cfg = &cfg, .prog = &prog, .log = &slog, .norms = norms, .cap = n_par,
                     .every = cfg.grad_check_every};
    if (cfg.verbose == CG_VERBOSE_QUIET) gw.every = -1;

    const cg_early_stopping *es = &cfg.early_stopping;
    int maximize = es->monitor == CG_MONITOR_VAL_ACCURACY || es->monitor == CG_MONITOR_ACCURACY;
    double best = maximize ? -INFINITY : INFINITY;
    int best_epoch = -1, wait = 0, stopped = -1;

    for (int epoch = cfg.initial_epoch; epoch < cfg.epochs; epoch++) {
        double t0 = cg__now();
        m->training = 1;
        CG_CHECK_GOTO(cg_loader_set_epoch(ld, (uint64_t)epoch));
        cg__progress_epoch_begin(&prog, epoch, spe);
        gw.epoch = epoch;
        gw.warned = 0;
        epoch_sums sums = {0, 0, 0};
        slog.step0 = 0;
        cg_step_graph_stats gs0;
        CG_CHECK_GOTO(cg_step_graph_stats_get(slog.sg, &gs0));
        for (int64_t step = 0;; step++) {
            CG_CHECK_GOTO(cg_scope_begin());
            cg_tensor *xb = NULL, *yb = NULL;
            st = cg_loader_next(ld, &xb, &yb);
            if (st != CG_OK || !xb) {
                cg_scope_end();
                if (st != CG_OK) goto fail;
                break;
            }
            gw.step = step;
            st = fit_step(m, &slog, xb, yb, want_acc, grad_hook_due(&gw) ? grad_hook : NULL, &gw);
            cg_scope_end();
            if (st != CG_OK) {
                st = step_log_settle(m, &slog, st, &sums, &prog, want_acc, epoch, spe);
                goto fail;
            }
            if (slog.n == LOG_WINDOW || cg__progress_due(&prog))
                CG_CHECK_GOTO(step_log_read(m, &slog, &sums, &prog, want_acc, epoch, spe));
        }
        CG_CHECK_GOTO(step_log_read(m, &slog, &sums, &prog, want_acc, epoch, spe));
        double sum = sums.loss;
        int64_t seen = sums.seen, correct = sums.correct;
        const cg_lr_schedule *sch = &cg_optimizer_config(m->opt)->schedule;
        if (sch->per_epoch) cg_optimizer_set_schedule_pos(m->opt, cg_optimizer_schedule_pos(m->opt) + 1);
        cg_epoch_logs logs = {.epoch = epoch,
                              .loss = seen ? sum / (double)seen : NAN,
                              .accuracy = want_acc && seen ? (double)correct / (double)seen : NAN,
                              .val_loss = NAN,
                              .val_accuracy = NAN,
                              .lr = cg_optimizer_last_lr(m->opt),
                              .steps = cg_optimizer_steps(m->opt)};
        cg_step_graph_stats gs1;
        CG_CHECK_GOTO(cg_step_graph_stats_get(slog.sg, &gs1));
        logs.replayed = gs1.replays - gs0.replays;
        if (has_val) {
            m->training = 0;
            st = cg_model_evaluate(m, xv, yv, cfg.batch_size > 256 ? cfg.batch_size : 256, &logs.val_loss,
                                   &logs.val_accuracy);
            m->training = 1;
            if (st != CG_OK) goto fail;
        }
        logs.seconds = cg__now() - t0;
        int stop = cfg.on_epoch_end ? cfg.on_epoch_end(m, &logs, cfg.user) : 0;
        if (es->enabled) {
            double cur = monitor_value(&logs, es->monitor, has_val);
            int better = maximize ? cur > best + es->min_delta : cur < best - es->min_delta;
            if (isfinite(cur) && (better || best_epoch < 0)) {
                best = cur;
                best_epoch = epoch;
                wait = 0;
                if (es->restore_best_weights) CG_CHECK_GOTO(cg__model_snapshot(m, &best_w));
            } else if (++wait >= es->patience) {
                stop = 1;
                stopped = epoch;
            }
        }
        CG_CHECK_GOTO(cg_history_append(hist, &logs));
        cg__progress_epoch_end(&prog, &logs);
        if (cfg.checkpoint_path) {
            cg_checkpoint_info ci = {.epoch = epoch + 1, .step = cg_optimizer_steps(m->opt)};
            CG_CHECK_GOTO(cg_checkpoint_save(cfg.checkpoint_path, m, &ci, NULL, 0));
        }
        if (stop) break;
    }
    m->training = was_training;
    if (es->enabled && es->restore_best_weights && best_w.flat) {
        CG_CHECK_GOTO(cg__model_restore(m, &best_w));
        if (stopped >= 0 && cfg.verbose != CG_VERBOSE_QUIET) {
            char msg[128];
            snprintf(msg, sizeof msg, "Early stopping at epoch %d; restored the weights of epoch %d", stopped + 1,
                     best_epoch + 1);
            cg__progress_message(&prog, msg);
        }
    }
    cg__history_set_stop(hist, stopped, best_epoch);
fail:
    m->training = was_training;
    for (int i = 0; i < 4; i++) cg_tensor_release(held[i]);
    cg__snapshot_free(&best_w);
    step_log_free(&slog);
    free(norms);
    cg_loader_free(ld);
    cg_dataset_free(ds);
    if (st == CG_OK && hist_out) *hist_out = hist;
    else cg_history_free(hist);
    return st;
}
