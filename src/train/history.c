/* Training history: one record per epoch, exported as CSV and JSON (written atomically). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

struct cg_history {
    cg_epoch_logs *v;
    int n, cap;
    int stopped_epoch, best_epoch;
};

cg_status cg_history_create(cg_history **out) {
    CG_ARG_NOT_NULL(out, "cg_history_create");
    cg_history *h = calloc(1, sizeof *h);
    if (!h) return CG_FAIL(CG_E_OOM, "cg_history_create: out of host memory");
    h->stopped_epoch = h->best_epoch = -1;
    *out = h;
    return CG_OK;
}

void cg_history_free(cg_history *h) {
    if (!h) return;
    free(h->v);
    free(h);
}

int cg_history_count(const cg_history *h) { return h ? h->n : 0; }
const cg_epoch_logs *cg_history_at(const cg_history *h, int i) { return (h && i >= 0 && i < h->n) ? &h->v[i] : NULL; }
int cg_history_stopped_epoch(const cg_history *h) { return h ? h->stopped_epoch : -1; }
int cg_history_best_epoch(const cg_history *h) { return h ? h->best_epoch : -1; }

void cg__history_set_stop(cg_history *h, int stopped_epoch, int best_epoch) {
    h->stopped_epoch = stopped_epoch;
    h->best_epoch = best_epoch;
}

cg_status cg_history_append(cg_history *h, const cg_epoch_logs *logs) {
    CG_ARG_NOT_NULL(h, "cg_history_append");
    CG_ARG_NOT_NULL(logs, "cg_history_append");
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        cg_epoch_logs *v = realloc(h->v, (size_t)cap * sizeof *v);
        if (!v) return CG_FAIL(CG_E_OOM, "cg_history_append: out of host memory");
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n++] = *logs;
    return CG_OK;
}

static void cell(FILE *fp, double v) {
    if (isnan(v)) fputc(',', fp);
    else fprintf(fp, ",%.9g", v);
}

cg_status cg_history_save_csv(const cg_history *h, const char *path) {
    CG_ARG_NOT_NULL(h, "cg_history_save_csv");
    CG_ARG_NOT_NULL(path, "cg_history_save_csv");
    cg_atomic_file *af;
    FILE *fp;
    CG_TRY(cg_atomic_open(path, &af, &fp));
    fprintf(fp, "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n");
    for (int i = 0; i < h->n; i++) {
        const cg_epoch_logs *l = &h->v[i];
        fprintf(fp, "%d", l->epoch);
        cell(fp, l->loss);
        cell(fp, l->accuracy);
        cell(fp, l->val_loss);
        cell(fp, l->val_accuracy);
        cell(fp, l->lr);
        cell(fp, l->seconds);
        fputc('\n', fp);
    }
    return cg_atomic_commit(af);
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

cg_status cg_history_save_json(const cg_history *h, const char *path) {
    CG_ARG_NOT_NULL(h, "cg_history_save_json");
    CG_ARG_NOT_NULL(path, "cg_history_save_json");
    json_t *root = json_object(), *arr = json_array();
    if (!root || !arr) {
        json_decref(root);
        json_decref(arr);
        return CG_FAIL(CG_E_OOM, "cg_history_save_json: out of memory");
    }
    for (int i = 0; i < h->n; i++) {
        const cg_epoch_logs *l = &h->v[i];
        json_t *o = json_object();
        json_object_set_new(o, "epoch", json_integer(l->epoch));
        json_object_set_new(o, "loss", num(l->loss));
        json_object_set_new(o, "accuracy", num(l->accuracy));
        json_object_set_new(o, "val_loss", num(l->val_loss));
        json_object_set_new(o, "val_accuracy", num(l->val_accuracy));
        json_object_set_new(o, "lr", num(l->lr));
        json_object_set_new(o, "seconds", num(l->seconds));
        json_object_set_new(o, "steps", json_integer(l->steps));
        json_object_set_new(o, "replayed", json_integer(l->replayed));
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "epochs", arr);
    json_object_set_new(root, "stopped_epoch", h->stopped_epoch >= 0 ? json_integer(h->stopped_epoch) : json_null());
    json_object_set_new(root, "best_epoch", h->best_epoch >= 0 ? json_integer(h->best_epoch) : json_null());
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(9));
    json_decref(root);
    if (!text) return CG_FAIL(CG_E_OOM, "cg_history_save_json: out of memory");
    cg_atomic_file *af;
    FILE *fp;
    cg_status st = cg_atomic_open(path, &af, &fp);
    if (st == CG_OK) {
        fputs(text, fp);
        fputc('\n', fp);
        st = cg_atomic_commit(af);
    }
    free(text);
    return st;
}
