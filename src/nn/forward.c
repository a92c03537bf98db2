/* Running a model: forward in either mode, thread-safe predict, gradient norms,
 * descriptions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "nn_internal.h"

/* act: the activation fused into a linear layer (the next layer, then skipped) */
static cg_status layer_forward(const cg_model *m, const cg_layer *l, int idx, const cg_tensor *x, int training,
                               cg_rng *rng, cg_linear_act act, cg_tensor **y) {
    switch (l->kind) {
    case CG_LAYER_LINEAR: {
        if (x->ndim != 2 || x->shape[1] != l->in) {
            char b[96];
            return CG_FAIL(CG_E_SHAPE, "layer %d (linear %lld -> %lld): input %s must be (N, %lld)", idx,
                           (long long)l->in, (long long)l->out, cg__shape_str(x->shape, x->ndim, b, sizeof b),
                           (long long)l->in);
        }
        return cg_linear(x, l->w, l->b, act, y);
    }
    case CG_LAYER_ACTIVATION:
        switch (l->act) {
        case CG_ACT_RELU: return cg_relu(x, y);
        case CG_ACT_LEAKY_RELU: return cg_leaky_relu(x, l->alpha, y);
        case CG_ACT_GELU: return cg_gelu(x, CG_GELU_ERF, y);
        case CG_ACT_TANH: return cg_tanh(x, y);
        case CG_ACT_SIGMOID: return cg_sigmoid(x, y);
        default: return CG_FAIL(CG_E_INTERNAL, "layer %d: unknown activation", idx);
        }
    case CG_LAYER_DROPOUT: return cg__dropout(x, l->p, training, rng, m->rng_shift_dev, y);
    case CG_LAYER_BATCHNORM1D: {
        cg_status st = cg_batchnorm(x, l->w, l->b, l->running_mean, l->running_var, training, l->momentum, l->eps, y);
        /* num_batches_tracked counts on the host; state dicts write it into the tensor */
        if (st == CG_OK && training) ((cg_layer *)l)->tracked++;
        return st;
    }
    case CG_LAYER_LAYERNORM: return cg_layernorm(x, l->w, l->b, l->eps, y);
    case CG_LAYER_FLATTEN: {
        int64_t s[2] = {x->ndim ? x->shape[0] : 1, -1};
        return cg_reshape(x, s, 2, y);
    }
    default: return CG_FAIL(CG_E_INTERNAL, "layer %d: unknown kind %d", idx, (int)l->kind);
    }
}

/* Runs inside the caller's scope: every temporary is registered there. */
static cg_status forward_layers(const cg_model *m, const cg_tensor *x, int training, cg_rng *rng, cg_tensor **y) {
    const cg_tensor *cur = x;
    cg_tensor *moved = NULL;
    if (!cg__same_device(x->st->dev, m->dev)) {
        CG_TRY(cg_tensor_to(x, m->dev, &moved));
        cur = moved;
    }
    if (cur->dtype != m->dtype) {
        cg_tensor *c;
        CG_TRY(cg_tensor_cast(cur, m->dtype, &c));
        cur = c;
    }
    cg_tensor *out = (cg_tensor *)cur;
    for (int i = 0; i < m->n_layers; i++) {
        const cg_layer *l = &m->layers[i], *next = i + 1 < m->n_layers ? &m->layers[i + 1] : NULL;
        /* Linear followed by ReLU runs as one op (bias and ReLU in the matmul's epilogue on a GPU) */
        int fuse = l->kind == CG_LAYER_LINEAR && next && next->kind == CG_LAYER_ACTIVATION && next->act == CG_ACT_RELU;
        cg_tensor *nx = NULL;
        CG_TRY(layer_forward(m, l, i, out, training, rng, fuse ? CG_LINEAR_RELU : CG_LINEAR_NONE, &nx));
        out = nx;
        i += fuse;
    }
    *y = out;
    return CG_OK;
}

cg_status cg__model_forward_impl(const cg_model *m, const cg_tensor *x, int training, cg_rng *rng, cg_tensor **y) {
    CG_ARG_NOT_NULL(m, "model forward");
    CG_ARG_NOT_NULL(x, "model forward");
    CG_ARG_NOT_NULL(y, "model forward");
    *y = NULL;
    if (!m->built) return CG_FAIL(CG_E_STATE, "model forward: the model is not built (call cg_model_build)");
    CG_TRY(cg_scope_begin());
    cg_tensor *out = NULL;
    cg_status st = forward_layers(m, x, training, rng, &out);
    if (st == CG_OK) cg_keep(out);
    cg_scope_end();
    if (st != CG_OK) return st;
    *y = cg__autorelease(out);
    return CG_OK;
}

cg_status cg_model_forward(cg_model *m, const cg_tensor *x, cg_tensor **y) {
    CG_ARG_NOT_NULL(m, "cg_model_forward");
    CG_TRY(cg__model_ensure_built(m));
    return cg__model_forward_impl(m, x, m->training, &m->rng, y);
}

cg_status cg_model_predict(const cg_model *m, const cg_tensor *x, cg_tensor **y) {
    CG_ARG_NOT_NULL(m, "cg_model_predict");
    if (!m->built)
        return CG_FAIL(CG_E_STATE, "cg_model_predict: build the model first (cg_model_build); predict never changes "
                                   "the model so that threads can share it");
    cg_no_grad_begin();
    cg_status st = cg__model_forward_impl(m, x, 0, NULL, y);
    cg_no_grad_end();
    return st;
}

cg_status cg_model_zero_grad(cg_model *m) {
    CG_ARG_NOT_NULL(m, "cg_model_zero_grad");
    CG_TRY(cg__model_ensure_built(m));
    CG_TRY(cg__backend(m->dev)->fill(m->gflat, 0.0));
    cg__bump_version(m->gflat);
    return CG_OK;
}

cg_status cg_model_grad_norms(cg_model *m, cg_grad_norm *out, int cap, int *n) {
    CG_ARG_NOT_NULL(m, "cg_model_grad_norms");
    CG_TRY(cg__model_ensure_built(m));
    int k = 0;
    for (int i = 0; i < m->n_entries; i++) {
        const cg_entry *e = &m->entries[i];
        if (!e->is_param) continue;
        if (out && k < cap) {
            double s = 0;
            CG_TRY(cg_sumsq((*e->slot)->grad, &s));
            snprintf(out[k].name, sizeof out[k].name, "%s", e->name);
            out[k].norm = sqrt(s);
        }
        k++;
    }
    if (n) *n = k;
    return CG_OK;
}

cg_status cg_model_grad_global_norm(cg_model *m, double *norm) {
    CG_ARG_NOT_NULL(m, "cg_model_grad_global_norm");
    CG_ARG_NOT_NULL(norm, "cg_model_grad_global_norm");
    CG_TRY(cg__model_ensure_built(m));
    double s = 0;
    CG_TRY(cg_sumsq(m->gflat, &s)); /* padding holds zeros */
    *norm = sqrt(s);
    return CG_OK;
}

/* ---- descriptions ---- */

static int layer_str(const cg_layer *l, char *b, size_t n) {
    switch (l->kind) {
    case CG_LAYER_LINEAR:
        return snprintf(b, n, "linear(%lld, %lld%s)", (long long)l->in, (long long)l->out, l->bias ? "" : ", bias=0");
    case CG_LAYER_ACTIVATION:
        if (l->act == CG_ACT_LEAKY_RELU) return snprintf(b, n, "leaky_relu(%g)", l->alpha);
        return snprintf(b, n, "%s", cg_activation_name(l->act));
    case CG_LAYER_DROPOUT: return snprintf(b, n, "dropout(%g)", l->p);
    case CG_LAYER_BATCHNORM1D: return snprintf(b, n, "batchnorm1d(%lld)", (long long)l->in);
    case CG_LAYER_LAYERNORM: return snprintf(b, n, "layernorm(%lld)", (long long)l->in);
    case CG_LAYER_FLATTEN: return snprintf(b, n, "flatten");
    default: return snprintf(b, n, "?");
    }
}

cg_status cg_model_describe(const cg_model *m, char *buf, size_t n) {
    CG_ARG_NOT_NULL(m, "cg_model_describe");
    CG_ARG_NOT_NULL(buf, "cg_model_describe");
    if (n == 0) return CG_FAIL(CG_E_INVALID, "cg_model_describe: buffer too small (size 0)");
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < m->n_layers; i++) {
        char t[96];
        layer_str(&m->layers[i], t, sizeof t);
        int w = snprintf(buf + used, used < n ? n - used : 0, "%s%s", i ? " " : "", t);
        if (w < 0 || used + (size_t)w >= n) return CG_FAIL(CG_E_INVALID, "cg_model_describe: buffer too small");
        used += (size_t)w;
    }
    return CG_OK;
}

static int64_t layer_params(const cg_layer *l) {
    if (l->kind == CG_LAYER_LINEAR) return l->in * l->out + (l->bias ? l->out : 0);
    if (l->kind == CG_LAYER_BATCHNORM1D || l->kind == CG_LAYER_LAYERNORM) return 2 * l->in;
    return 0;
}

cg_status cg_model_summary(cg_model *m, FILE *fp) {
    CG_ARG_NOT_NULL(m, "cg_model_summary");
    CG_ARG_NOT_NULL(fp, "cg_model_summary");
    CG_TRY(cg__model_ensure_built(m));
    fprintf(fp, "%-4s %-26s %-14s %12s\n", "#", "layer", "output", "params");
    int64_t width = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const cg_layer *l = &m->layers[i];
        char t[96], o[32];
        layer_str(l, t, sizeof t);
        if (l->out) width = l->out;
        if (l->kind == CG_LAYER_FLATTEN) width = 0;
        if (width) snprintf(o, sizeof o, "(N, %lld)", (long long)width);
        else snprintf(o, sizeof o, "(N, ?)");
        fprintf(fp, "%-4d %-26s %-14s %12lld\n", i, t, o, (long long)layer_params(l));
    }
    fprintf(fp, "trainable parameters: %lld (%s, %s)\n", (long long)m->n_trainable, cg_dtype_name(m->dtype),
            cg_device_str(m->dev));
    return CG_OK;
}
