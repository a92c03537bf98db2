/* Sequential models: declaring layers, building (one flat parameter buffer, one flat
 * gradient buffer, each parameter a view; one flat buffer of BatchNorm running statistics),
 * initialisation, forward and thread-safe predict, modes and device moves. State dicts and the architecture string are in state.c. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "nn_internal.h"

static const char *act_names[CG_ACT_COUNT] = {"none", "relu", "leaky_relu", "gelu", "tanh", "sigmoid"};
static const char *init_names[CG_INIT_COUNT] = {"auto", "he_normal", "he_uniform", "xavier_normal",
                                                "xavier_uniform"};

const char *cg_activation_name(cg_activation a) {
    return (a >= 0 && a < CG_ACT_COUNT) ? act_names[a] : "unknown";
}
const char *cg_init_name(cg_init i) { return (i >= 0 && i < CG_INIT_COUNT) ? init_names[i] : "unknown"; }

cg_status cg_model_create(cg_device dev, cg_dtype dtype, uint64_t seed, cg_model **out) {
    CG_ARG_NOT_NULL(out, "cg_model_create");
    *out = NULL;
    if (!cg__is_float(dtype))
        return CG_FAIL(CG_E_DTYPE, "cg_model_create: parameters must be f32 or f64, got %s", cg_dtype_name(dtype));
    if (!cg__backend(dev)) return CG_E_DEVICE;
    cg_model *m = calloc(1, sizeof *m);
    if (!m) return CG_FAIL(CG_E_OOM, "cg_model_create: out of host memory");
    m->dev = dev;
    m->dtype = dtype;
    m->seed = seed;
    m->training = 1;
    /* the dropout stream is separate from the init stream: offset 2^40 */
    m->rng = cg_rng_make(seed);
    m->rng.offset = (uint64_t)1 << 40;
    m->loss = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    *out = m;
    return CG_OK;
}

static void release_layer(cg_layer *l) {
    cg_tensor_release(l->w);
    cg_tensor_release(l->b);
    cg_tensor_release(l->running_mean);
    cg_tensor_release(l->running_var);
    cg_tensor_release(l->num_batches);
    l->w = l->b = l->running_mean = l->running_var = l->num_batches = NULL;
}

void cg_model_free(cg_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_layers; i++) release_layer(&m->layers[i]);
    free(m->layers);
    free(m->entries);
    cg_tensor_release(m->flat);
    cg_tensor_release(m->gflat);
    cg_tensor_release(m->stats);
    cg_optimizer_free(m->opt);
    free(m);
}

static cg_status push_layer(cg_model *m, const cg_layer *l, const char *fn) {
    if (!m) return CG_FAIL(CG_E_INVALID, "%s: model is NULL", fn);
    if (m->built)
        return CG_FAIL(CG_E_STATE, "%s: the model is already built (its parameters exist); add every layer before "
                                   "the first forward, compile or cg_model_build", fn);
    if (m->n_layers == m->cap_layers) {
        int cap = m->cap_layers ? 2 * m->cap_layers : 8;
        cg_layer *v = realloc(m->layers, (size_t)cap * sizeof *v);
        if (!v) return CG_FAIL(CG_E_OOM, "%s: out of host memory", fn);
        m->layers = v;
        m->cap_layers = cap;
    }
    m->layers[m->n_layers++] = *l;
    return CG_OK;
}

cg_status cg_model_add_linear(cg_model *m, int64_t in_features, int64_t out_features, int bias, cg_init init) {
    if (in_features < 0 || out_features <= 0)
        return CG_FAIL(CG_E_INVALID, "linear: need in_features >= 0 (0 = infer) and out_features > 0, got %lld, %lld",
                       (long long)in_features, (long long)out_features);
    if (init < 0 || init >= CG_INIT_COUNT) return CG_FAIL(CG_E_INVALID, "linear: unknown init %d", (int)init);
    cg_layer l = {.kind = CG_LAYER_LINEAR, .in = in_features, .out = out_features, .bias = bias != 0, .init = init};
    return push_layer(m, &l, "cg_model_add_linear");
}

cg_status cg_model_add_activation(cg_model *m, cg_activation act, double alpha) {
    if (act <= CG_ACT_NONE || act >= CG_ACT_COUNT)
        return CG_FAIL(CG_E_INVALID, "activation: unknown activation %d", (int)act);
    if (act == CG_ACT_LEAKY_RELU && alpha == 0) alpha = 0.01;
    cg_layer l = {.kind = CG_LAYER_ACTIVATION, .act = act, .alpha = act == CG_ACT_LEAKY_RELU ? alpha : 0};
    return push_layer(m, &l, "cg_model_add_activation");
}

cg_status cg_model_add_dropout(cg_model *m, double p) {
    if (!(p >= 0 && p < 1)) return CG_FAIL(CG_E_INVALID, "dropout: p must be in [0, 1), got %g", p);
    cg_layer l = {.kind = CG_LAYER_DROPOUT, .p = p};
    return push_layer(m, &l, "cg_model_add_dropout");
}

cg_status cg_model_add_batchnorm1d(cg_model *m, int64_t features, double eps, double momentum) {
    if (features < 0) return CG_FAIL(CG_E_INVALID, "batchnorm1d: features must be >= 0 (0 = infer)");
    if (eps == 0) eps = 1e-5;
    if (momentum == 0) momentum = 0.1;
    if (!(eps > 0) || !(momentum > 0 && momentum <= 1))
        return CG_FAIL(CG_E_INVALID, "batchnorm1d: need eps > 0 and momentum in (0, 1], got %g, %g", eps, momentum);
    cg_layer l = {.kind = CG_LAYER_BATCHNORM1D, .in = features, .out = features, .eps = eps, .momentum = momentum};
    return push_layer(m, &l, "cg_model_add_batchnorm1d");
}

cg_status cg_model_add_layernorm(cg_model *m, int64_t features, double eps) {
    if (features < 0) return CG_FAIL(CG_E_INVALID, "layernorm: features must be >= 0 (0 = infer)");
    if (eps == 0) eps = 1e-5;
    if (!(eps > 0)) return CG_FAIL(CG_E_INVALID, "layernorm: eps must be > 0, got %g", eps);
    cg_layer l = {.kind = CG_LAYER_LAYERNORM, .in = features, .out = features, .eps = eps};
    return push_layer(m, &l, "cg_model_add_layernorm");
}

cg_status cg_model_add_flatten(cg_model *m) {
    cg_layer l = {.kind = CG_LAYER_FLATTEN};
    return push_layer(m, &l, "cg_model_add_flatten");
}

cg_status cg_model_add_dense(cg_model *m, int64_t in_features, int64_t units, cg_activation act) {
    if (act < CG_ACT_NONE || act >= CG_ACT_COUNT) return CG_FAIL(CG_E_INVALID, "dense: unknown activation %d", (int)act);
    CG_TRY(cg_model_add_linear(m, in_features, units, 1, CG_INIT_AUTO));
    if (act != CG_ACT_NONE) CG_TRY(cg_model_add_activation(m, act, 0));
    return CG_OK;
}

/* ---- building ---- */

/* The activation that follows layer i before the next Linear (NONE when there is none). */
static const cg_layer *next_activation(const cg_model *m, int i) {
    for (int j = i + 1; j < m->n_layers; j++) {
        if (m->layers[j].kind == CG_LAYER_ACTIVATION) return &m->layers[j];
        if (m->layers[j].kind == CG_LAYER_LINEAR) break;
    }
    return NULL;
}

static cg_status init_linear(cg_model *m, int i, cg_rng *rng) {
    cg_layer *l = &m->layers[i];
    cg_init init = l->init;
    double gain = sqrt(2.0);
    const cg_layer *a = next_activation(m, i);
    if (a && a->act == CG_ACT_LEAKY_RELU) gain = sqrt(2.0 / (1.0 + a->alpha * a->alpha));
    if (init == CG_INIT_AUTO) {
        int relu_family = a && (a->act == CG_ACT_RELU || a->act == CG_ACT_LEAKY_RELU || a->act == CG_ACT_GELU);
        init = relu_family ? CG_INIT_HE_NORMAL : CG_INIT_XAVIER_UNIFORM;
    }
    double fan_in = (double)l->in, fan_out = (double)l->out;
    switch (init) {
    case CG_INIT_HE_NORMAL: CG_TRY(cg_tensor_fill_normal(l->w, 0.0, gain / sqrt(fan_in), rng)); break;
    case CG_INIT_HE_UNIFORM: {
        double b = gain * sqrt(3.0 / fan_in);
        CG_TRY(cg_tensor_fill_uniform(l->w, -b, b, rng));
        break;
    }
    case CG_INIT_XAVIER_NORMAL: CG_TRY(cg_tensor_fill_normal(l->w, 0.0, sqrt(2.0 / (fan_in + fan_out)), rng)); break;
    case CG_INIT_XAVIER_UNIFORM: {
        double b = sqrt(6.0 / (fan_in + fan_out));
        CG_TRY(cg_tensor_fill_uniform(l->w, -b, b, rng));
        break;
    }
    default: return CG_FAIL(CG_E_INTERNAL, "linear: init %d not resolved", (int)init);
    }
    return CG_OK; /* biases stay zero */
}

enum { ENTRY_BUFFER, ENTRY_PARAM, ENTRY_STAT };

static cg_status add_entry(cg_model *m, int layer, const char *what, cg_tensor **slot, int64_t offset, int kind) {
    cg_entry *e = &m->entries[m->n_entries++];
    snprintf(e->name, sizeof e->name, "%d.%s", layer, what);
    e->slot = slot;
    e->offset = offset;
    e->is_param = kind == ENTRY_PARAM;
    e->is_stat = kind == ENTRY_STAT;
    if (e->is_param) m->n_params++;
    return CG_OK;
}

static int64_t align_up(int64_t n) { return (n + CG_PARAM_ALIGN - 1) / CG_PARAM_ALIGN * CG_PARAM_ALIGN; }

/* *total += align_up(n); nonzero when that (or the total's size in bytes) would not fit an int64 */
static int add_aligned(int64_t *total, int64_t n) {
    int64_t a, t;
    if (__builtin_add_overflow(n, (int64_t)CG_PARAM_ALIGN - 1, &a) || __builtin_add_overflow(*total, align_up(n), &t) ||
        t > INT64_MAX / 8)
        return 1;
    *total = t;
    return 0;
}

/* Views of the flat buffers for every parameter entry; requires_grad and grad attached. */
static cg_status attach_views(cg_model *m) {
    for (int k = 0; k < m->n_entries; k++) {
        cg_entry *e = &m->entries[k];
        if (!e->is_param) continue;
        /* shape: weight (out, in) for linear, vectors otherwise */
        int li = atoi(e->name);
        cg_layer *l = &m->layers[li];
        int64_t shape[2], strides[2];
        int nd;
        if (l->kind == CG_LAYER_LINEAR && strstr(e->name, ".weight")) {
            shape[0] = l->out;
            shape[1] = l->in;
            nd = 2;
        } else {
            shape[0] = l->out;
            nd = 1;
        }
        cg__contiguous_strides(shape, nd, strides);
        cg_tensor *v = NULL, *g = NULL;
        CG_TRY(cg__tensor_view(m->flat, shape, strides, nd, e->offset, &v));
        cg_status st = cg__tensor_view(m->gflat, shape, strides, nd, e->offset, &g);
        if (st == CG_OK) st = cg_tensor_set_requires_grad(v, 1);
        if (st == CG_OK) st = cg_tensor_set_grad(v, g);
        cg_tensor_release(g);
        if (st != CG_OK) {
            cg_tensor_release(v);
            return st;
        }
        cg_tensor_release(*e->slot);
        *e->slot = v;
    }
    return CG_OK;
}

/* Views of the statistics buffer for every running mean and variance. */
static cg_status attach_stat_views(cg_model *m) {
    for (int k = 0; k < m->n_entries; k++) {
        cg_entry *e = &m->entries[k];
        if (!e->is_stat) continue;
        int64_t shape[1] = {m->layers[atoi(e->name)].in}, strides[1] = {1};
        cg_tensor *v = NULL;
        CG_TRY(cg__tensor_view(m->stats, shape, strides, 1, e->offset, &v));
        cg_tensor_release(*e->slot);
        *e->slot = v;
    }
    return CG_OK;
}

cg_status cg_model_build(cg_model *m) {
    CG_ARG_NOT_NULL(m, "cg_model_build");
    if (m->built) return CG_OK;
    if (m->n_layers == 0) return CG_FAIL(CG_E_STATE, "cg_model_build: the model has no layers; add some first");
    /* widths */
    int64_t width = 0, total = 0, stats_total = 0;
    int n_entries = 0;
    for (int i = 0; i < m->n_layers; i++) {
        cg_layer *l = &m->layers[i];
        switch (l->kind) {
        case CG_LAYER_LINEAR:
            if (l->in == 0) l->in = width;
            if (l->in == 0)
                return CG_FAIL(CG_E_SHAPE, "layer %d (linear): in_features is 0 and cannot be inferred from the "
                                           "layers before it; pass it explicitly", i);
            if (width && width != l->in)
                return CG_FAIL(CG_E_SHAPE, "layer %d (linear): in_features %lld does not match the %lld outputs of "
                                           "the layers before it", i, (long long)l->in, (long long)width);
            int64_t wn;
            if (__builtin_mul_overflow(l->in, l->out, &wn) || add_aligned(&total, wn) ||
                (l->bias && add_aligned(&total, l->out)))
                return CG_FAIL(CG_E_SHAPE, "layer %d (linear): %lld x %lld weights overflow the model's parameter "
                                           "count (int64)", i, (long long)l->in, (long long)l->out);
            n_entries += 1 + l->bias;
            width = l->out;
            break;
        case CG_LAYER_BATCHNORM1D:
        case CG_LAYER_LAYERNORM:
            if (l->in == 0) l->in = l->out = width;
            if (l->in == 0)
                return CG_FAIL(CG_E_SHAPE, "layer %d (%s): features is 0 and cannot be inferred; pass it", i,
                               l->kind == CG_LAYER_LAYERNORM ? "layernorm" : "batchnorm1d");
            if (width && width != l->in)
                return CG_FAIL(CG_E_SHAPE, "layer %d: %lld features do not match the %lld outputs before it", i,
                               (long long)l->in, (long long)width);
            if (add_aligned(&total, l->in) || add_aligned(&total, l->in) ||
                (l->kind == CG_LAYER_BATCHNORM1D &&
                 (add_aligned(&stats_total, l->in) || add_aligned(&stats_total, l->in))))
                return CG_FAIL(CG_E_SHAPE, "layer %d: %lld features overflow the model's parameter count (int64)", i,
                               (long long)l->in);
            n_entries += l->kind == CG_LAYER_BATCHNORM1D ? 5 : 2;
            width = l->out;
            break;
        case CG_LAYER_FLATTEN: width = 0; break;
        default: break;
        }
    }
    m->entries = calloc((size_t)(n_entries ? n_entries : 1), sizeof *m->entries);
    if (!m->entries) return CG_FAIL(CG_E_OOM, "cg_model_build: out of host memory");
    m->n_entries = m->n_params = 0;
    int64_t off = 0, soff = 0;
    m->n_trainable = 0;
    for (int i = 0; i < m->n_layers; i++) {
        cg_layer *l = &m->layers[i];
        if (l->kind == CG_LAYER_LINEAR) {
            add_entry(m, i, "weight", &l->w, off, ENTRY_PARAM);
            off += align_up(l->in * l->out);
            m->n_trainable += l->in * l->out;
            if (l->bias) {
                add_entry(m, i, "bias", &l->b, off, ENTRY_PARAM);
                off += align_up(l->out);
                m->n_trainable += l->out;
            }
        } else if (l->kind == CG_LAYER_BATCHNORM1D || l->kind == CG_LAYER_LAYERNORM) {
            add_entry(m, i, "weight", &l->w, off, ENTRY_PARAM);
            off += align_up(l->in);
            add_entry(m, i, "bias", &l->b, off, ENTRY_PARAM);
            off += align_up(l->in);
            m->n_trainable += 2 * l->in;
            if (l->kind == CG_LAYER_BATCHNORM1D) {
                add_entry(m, i, "running_mean", &l->running_mean, soff, ENTRY_STAT);
                soff += align_up(l->in);
                add_entry(m, i, "running_var", &l->running_var, soff, ENTRY_STAT);
                soff += align_up(l->in);
                add_entry(m, i, "num_batches_tracked", &l->num_batches, 0, ENTRY_BUFFER);
            }
        }
    }
    m->flat_numel = total;
    /* built on the CPU (the same numbers whatever the device), then moved */
    cg_status st = CG_OK;
    int64_t shape[1] = {total};
    /* internal allocations: an open scope of the caller must not take these */
    CG_CHECK_GOTO(cg__tensor_new(shape, 1, m->dtype, CG_CPU, &m->flat));
    CG_CHECK_GOTO(cg_tensor_fill(m->flat, 0.0));
    CG_CHECK_GOTO(cg__tensor_new(shape, 1, m->dtype, CG_CPU, &m->gflat));
    CG_CHECK_GOTO(cg_tensor_fill(m->gflat, 0.0));
    CG_CHECK_GOTO(attach_views(m));
    m->stats_numel = stats_total;
    if (stats_total) {
        int64_t sshape[1] = {stats_total};
        CG_CHECK_GOTO(cg__tensor_new(sshape, 1, m->dtype, CG_CPU, &m->stats));
        CG_CHECK_GOTO(cg_tensor_fill(m->stats, 0.0));
        CG_CHECK_GOTO(attach_stat_views(m));
    }
    {
        cg_rng rng = cg_rng_make(m->seed);
        cg_no_grad_begin();
        for (int i = 0; i < m->n_layers && st == CG_OK; i++) {
            cg_layer *l = &m->layers[i];
            if (l->kind == CG_LAYER_LINEAR) {
                st = init_linear(m, i, &rng);
            } else if (l->kind == CG_LAYER_BATCHNORM1D || l->kind == CG_LAYER_LAYERNORM) {
                st = cg_tensor_fill(l->w, 1.0);
                if (st == CG_OK && l->kind == CG_LAYER_BATCHNORM1D) {
                    st = cg_tensor_fill(l->running_var, 1.0); /* the mean is 0 */
                    if (st == CG_OK) st = cg__tensor_new(NULL, 0, CG_I64, CG_CPU, &l->num_batches);
                    if (st == CG_OK) st = cg_tensor_fill(l->num_batches, 0.0);
                }
            }
        }
        cg_no_grad_end();
        if (st != CG_OK) goto fail;
    }
    m->built = 1;
    if (m->dev.type != CG_DEVICE_CPU) {
        cg_device target = m->dev;
        m->dev = CG_CPU;
        CG_CHECK_GOTO(cg_model_to(m, target));
    }
    return CG_OK;
fail:
    m->built = 0;
    for (int i = 0; i < m->n_layers; i++) release_layer(&m->layers[i]);
    cg_tensor_release(m->flat);
    cg_tensor_release(m->gflat);
    cg_tensor_release(m->stats);
    m->flat = m->gflat = m->stats = NULL;
    free(m->entries);
    m->entries = NULL;
    m->n_entries = m->n_params = 0;
    return st;
}

cg_status cg__model_ensure_built(cg_model *m) {
    CG_ARG_NOT_NULL(m, "model");
    return m->built ? CG_OK : cg_model_build(m);
}

/* ---- properties ---- */

int cg_model_layer_count(const cg_model *m) { return m ? m->n_layers : 0; }
cg_layer_kind cg_model_layer_kind(const cg_model *m, int i) {
    return (m && i >= 0 && i < m->n_layers) ? m->layers[i].kind : CG_LAYER_KIND_COUNT;
}
int64_t cg_model_param_count(const cg_model *m) {
    if (!m) return 0;
    if (!m->built && cg_model_build((cg_model *)m) != CG_OK) return -1;
    return m->n_trainable;
}
cg_device cg_model_device(const cg_model *m) { return m ? m->dev : CG_CPU; }
cg_dtype cg_model_dtype(const cg_model *m) { return m ? m->dtype : CG_F32; }

int64_t cg_model_in_features(const cg_model *m) {
    if (!m) return 0;
    for (int i = 0; i < m->n_layers; i++) {
        const cg_layer *l = &m->layers[i];
        if (l->kind == CG_LAYER_FLATTEN) return 0;
        if (l->kind == CG_LAYER_LINEAR || l->kind == CG_LAYER_BATCHNORM1D || l->kind == CG_LAYER_LAYERNORM) return l->in;
    }
    return 0;
}

int64_t cg_model_out_features(const cg_model *m) {
    if (!m) return 0;
    for (int i = m->n_layers; i-- > 0;) {
        const cg_layer *l = &m->layers[i];
        if (l->kind == CG_LAYER_FLATTEN) return 0;
        if (l->kind == CG_LAYER_LINEAR || l->kind == CG_LAYER_BATCHNORM1D || l->kind == CG_LAYER_LAYERNORM) return l->out;
    }
    return 0;
}

cg_status cg_model_parameters(cg_model *m, cg_tensor **params, const char **names, int cap, int *n) {
    CG_ARG_NOT_NULL(m, "cg_model_parameters");
    CG_TRY(cg__model_ensure_built(m));
    int k = 0;
    for (int i = 0; i < m->n_entries; i++) {
        if (!m->entries[i].is_param) continue;
        if (k < cap) {
            if (params) params[k] = *m->entries[i].slot;
            if (names) names[k] = m->entries[i].name;
        }
        k++;
    }
    if (n) *n = k;
    return CG_OK;
}

cg_tensor *cg_model_flat_params(cg_model *m) { return m && cg__model_ensure_built(m) == CG_OK ? m->flat : NULL; }
cg_tensor *cg_model_flat_grads(cg_model *m) { return m && cg__model_ensure_built(m) == CG_OK ? m->gflat : NULL; }

void cg_model_train(cg_model *m) {
    if (m) m->training = 1;
}
void cg_model_eval(cg_model *m) {
    if (m) m->training = 0;
}
int cg_model_is_training(const cg_model *m) { return m ? m->training : 0; }
cg_rng cg_model_rng(const cg_model *m) { return m ? m->rng : cg_rng_make(0); }
void cg_model_set_rng(cg_model *m, cg_rng rng) {
    if (m) m->rng = rng;
}

cg_status cg_model_to(cg_model *m, cg_device dev) {
    CG_ARG_NOT_NULL(m, "cg_model_to");
    if (!cg__backend(dev)) return CG_E_DEVICE;
    if (!m->built) { /* nothing allocated yet: build there */
        m->dev = dev;
        return CG_OK;
    }
    if (cg__same_device(m->dev, dev)) return CG_OK;
    cg_tensor *nf = NULL, *ng = NULL, *ns = NULL;
    CG_TRY(cg__tensor_copy_to(m->flat, m->flat->dtype, dev, &nf));
    cg_status st = cg__tensor_copy_to(m->gflat, m->gflat->dtype, dev, &ng);
    if (st == CG_OK && m->stats) st = cg__tensor_copy_to(m->stats, m->stats->dtype, dev, &ns);
    if (st != CG_OK) {
        cg_tensor_release(nf);
        cg_tensor_release(ng);
        return st;
    }
    /* new buffers for the state first, so a failure leaves the model where it was */
    int nb = m->n_entries - m->n_params;
    cg_tensor **bufs = calloc((size_t)(nb ? nb : 1), sizeof *bufs);
    if (!bufs) st = CG_FAIL(CG_E_OOM, "cg_model_to: out of host memory");
    for (int i = 0, k = 0; st == CG_OK && i < m->n_entries; i++)
        if (!m->entries[i].is_param && !m->entries[i].is_stat) {
            const cg_tensor *b = *m->entries[i].slot; /* num_batches_tracked, i64 */
            st = cg__tensor_copy_to(b, b->dtype, dev, &bufs[k++]);
        }
    if (st != CG_OK) {
        for (int k = 0; bufs && k < nb; k++) cg_tensor_release(bufs[k]);
        free(bufs);
        cg_tensor_release(nf);
        cg_tensor_release(ng);
        cg_tensor_release(ns);
        return st;
    }
    /* commit */
    cg_tensor_release(m->flat);
    cg_tensor_release(m->gflat);
    cg_tensor_release(m->stats);
    m->flat = nf;
    m->gflat = ng;
    m->stats = ns;
    for (int i = 0, k = 0; i < m->n_entries; i++)
        if (!m->entries[i].is_param && !m->entries[i].is_stat) {
            cg_tensor_release(*m->entries[i].slot);
            *m->entries[i].slot = bufs[k++];
        }
    free(bufs);
    m->dev = dev;
    st = attach_views(m);
    if (st == CG_OK && m->stats) st = attach_stat_views(m);
    if (st == CG_OK && m->opt) st = cg__optimizer_move(m->opt, dev);
    return st;
}
