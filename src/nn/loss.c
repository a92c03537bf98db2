/* Losses (thin, checked wrappers over the fused loss ops) and the accuracy metric. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn_internal.h"

static const char *loss_names[CG_LOSS_COUNT] = {"mse", "bce_with_logits", "cross_entropy"};

const char *cg_loss_name(cg_loss_kind k) { return (k >= 0 && k < CG_LOSS_COUNT) ? loss_names[k] : "unknown"; }

cg_loss_config cg_loss_config_default(cg_loss_kind kind) {
    cg_loss_config c = {.kind = kind, .reduction = CG_REDUCE_MEAN, .label_smoothing = 0.0};
    return c;
}

/* target reshaped to pred's shape when only the layout differs ((N) vs (N, 1)) */
static cg_status match_target(const cg_tensor *pred, const cg_tensor *target, const cg_tensor **out) {
    *out = target;
    if (cg__same_shape(pred, target)) return CG_OK;
    if (cg_tensor_numel(pred) != cg_tensor_numel(target)) {
        char a[96], b[96];
        return CG_FAIL(CG_E_SHAPE, "loss: prediction %s and target %s must have the same number of elements",
                       cg__shape_str(pred->shape, pred->ndim, a, 96), cg__shape_str(target->shape, target->ndim, b, 96));
    }
    cg_tensor *r;
    CG_TRY(cg_reshape(target, pred->shape, pred->ndim, &r));
    *out = r;
    return CG_OK;
}

static cg_status loss_impl(const cg_loss_config *cfg, const cg_tensor *pred, const cg_tensor *target, cg_tensor **out);

/* Temporaries (a moved, cast or reshaped target) live in a scope of their own. */
cg_status cg_loss(const cg_loss_config *cfg, const cg_tensor *pred, const cg_tensor *target, cg_tensor **out) {
    CG_ARG_NOT_NULL(out, "cg_loss");
    *out = NULL;
    CG_TRY(cg_scope_begin());
    cg_tensor *l = NULL;
    cg_status st = loss_impl(cfg, pred, target, &l);
    if (st == CG_OK) cg_keep(l);
    cg_scope_end();
    if (st == CG_OK) *out = cg__autorelease(l);
    return st;
}

static cg_status loss_impl(const cg_loss_config *cfg, const cg_tensor *pred, const cg_tensor *target, cg_tensor **out) {
    CG_ARG_NOT_NULL(cfg, "cg_loss");
    CG_ARG_NOT_NULL(pred, "cg_loss");
    CG_ARG_NOT_NULL(target, "cg_loss");
    CG_ARG_NOT_NULL(out, "cg_loss");
    const cg_tensor *t = target;
    cg_tensor *moved = NULL;
    if (!cg__same_device(pred->st->dev, target->st->dev)) {
        CG_TRY(cg_tensor_to(target, pred->st->dev, &moved));
        t = moved;
    }
    switch (cfg->kind) {
    case CG_LOSS_MSE:
    case CG_LOSS_BCE_LOGITS: {
        if (!cg__is_float(t->dtype)) {
            cg_tensor *c;
            CG_TRY(cg_tensor_cast(t, pred->dtype, &c));
            t = c;
        }
        CG_TRY(match_target(pred, t, &t));
        return cfg->kind == CG_LOSS_MSE ? cg_mse_loss(pred, t, cfg->reduction, out)
                                        : cg_bce_with_logits(pred, t, cfg->reduction, out);
    }
    case CG_LOSS_CROSS_ENTROPY:
        if (t->dtype != CG_I64 && t->dtype != CG_I32)
            return CG_FAIL(CG_E_DTYPE, "cross_entropy: labels must be integer class indices (i64 or i32), got %s; "
                                       "for one-hot or probability targets use MSE or BCE", cg_dtype_name(t->dtype));
        return cg_softmax_cross_entropy(pred, t, cfg->reduction, cfg->label_smoothing, out);
    default: return CG_FAIL(CG_E_INVALID, "cg_loss: unknown loss kind %d", (int)cfg->kind);
    }
}

/* Host copy as doubles (any dtype, any device). */
cg_status cg_accuracy_count(const cg_tensor *pred, const cg_tensor *target, int64_t *correct, int64_t *total) {
    CG_ARG_NOT_NULL(pred, "cg_accuracy_count");
    CG_ARG_NOT_NULL(target, "cg_accuracy_count");
    CG_ARG_NOT_NULL(correct, "cg_accuracy_count");
    cg_tensor *acc;
    CG_TRY(cg__f64_zeros(pred->st->dev, 1, &acc));
    double v = 0;
    cg_status st = cg__count_correct(acc, pred, target, 0); /* on the device: only the count comes back */
    if (st == CG_OK) st = cg__read_f64(acc, &v, 1);
    cg_tensor_release(acc);
    CG_TRY(st);
    *correct = (int64_t)v;
    if (total) *total = pred->ndim ? pred->shape[0] : 1;
    return CG_OK;
}

cg_status cg_accuracy(const cg_tensor *pred, const cg_tensor *target, double *acc) {
    CG_ARG_NOT_NULL(acc, "cg_accuracy");
    int64_t ok = 0, n = 0;
    CG_TRY(cg_accuracy_count(pred, target, &ok, &n));
    *acc = n ? (double)ok / (double)n : NAN;
    return CG_OK;
}
