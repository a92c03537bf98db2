#define _POSIX_C_SOURCE 200809L /* strdup, strtok_r */
/* Model state: PyTorch-named state dicts, the architecture string, safetensors save/load,
 * and weight snapshots for restore_best_weights. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "nn_internal.h"

int cg__parse_f64(const char *s, double *v) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || *end) return -1;
    *v = d;
    return 0;
}

int cg__parse_i64(const char *s, int64_t *v) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long d = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *v = d;
    return 0;
}

cg_status cg__model_sync_counters(cg_model *m) {
    for (int i = 0; i < m->n_layers; i++) {
        cg_layer *l = &m->layers[i];
        if (l->kind == CG_LAYER_BATCHNORM1D && l->num_batches)
            CG_TRY(cg_tensor_copy_from_host(l->num_batches, &l->tracked, sizeof l->tracked));
    }
    return CG_OK;
}

cg_status cg__model_read_counters(cg_model *m) {
    for (int i = 0; i < m->n_layers; i++) {
        cg_layer *l = &m->layers[i];
        if (l->kind == CG_LAYER_BATCHNORM1D && l->num_batches)
            CG_TRY(cg_tensor_to_host(l->num_batches, &l->tracked, sizeof l->tracked));
    }
    return CG_OK;
}

cg_status cg_model_state_dict(cg_model *m, cg_state_dict **out) {
    CG_ARG_NOT_NULL(m, "cg_model_state_dict");
    CG_ARG_NOT_NULL(out, "cg_model_state_dict");
    CG_TRY(cg__model_ensure_built(m));
    CG_TRY(cg__model_sync_counters(m));
    cg_state_dict *sd;
    CG_TRY(cg_state_dict_create(&sd));
    cg_status st = CG_OK;
    for (int i = 0; i < m->n_entries && st == CG_OK; i++) {
        cg_tensor *c = NULL;
        st = cg__tensor_copy_to(*m->entries[i].slot, (*m->entries[i].slot)->dtype, CG_CPU, &c);
        if (st == CG_OK) st = cg_state_dict_set(sd, m->entries[i].name, c);
        cg_tensor_release(c);
    }
    char *arch = NULL;
    if (st == CG_OK) st = cg__model_arch_alloc(m, &arch);
    if (st == CG_OK) st = cg_state_dict_set_meta(sd, "cgrad.arch", arch);
    free(arch);
    if (st == CG_OK) st = cg_state_dict_set_meta(sd, "model.dtype", cg_dtype_name(m->dtype));
    if (st == CG_OK) st = cg_state_dict_set_meta(sd, "format", "pt");
    /* which cgrad wrote the file (like Keras' keras_version); loading does not require it */
    if (st == CG_OK) st = cg_state_dict_set_meta(sd, "cgrad.version", cg_version_string());
    if (st != CG_OK) {
        cg_state_dict_free(sd);
        return st;
    }
    *out = sd;
    return CG_OK;
}

static int known_prefix(const char *name) {
    return !strncmp(name, "optimizer.", 10) || !strncmp(name, "trainer.", 8);
}

cg_status cg_model_load_state_dict(cg_model *m, const cg_state_dict *sd) {
    CG_ARG_NOT_NULL(m, "cg_model_load_state_dict");
    CG_ARG_NOT_NULL(sd, "cg_model_load_state_dict");
    CG_TRY(cg__model_ensure_built(m));
    const char *src = cg_state_dict_source(sd);
    /* check everything before writing anything */
    for (int i = 0; i < m->n_entries; i++) {
        const cg_entry *e = &m->entries[i];
        const cg_tensor *want = *e->slot;
        cg_tensor *t = cg_state_dict_get(sd, e->name);
        if (!t)
            return CG_FAIL(CG_E_FORMAT, "load_state_dict: %s has no tensor '%s' (the model expects %d tensors; was it "
                                        "saved from another architecture?)", *src ? src : "state dict", e->name,
                           m->n_entries);
        if (!cg__same_shape(t, want)) {
            char a[96], b[96];
            return CG_FAIL(CG_E_SHAPE, "load_state_dict: %s: '%s' has shape %s, the model needs %s",
                           *src ? src : "state dict", e->name, cg__shape_str(t->shape, t->ndim, a, 96),
                           cg__shape_str(want->shape, want->ndim, b, 96));
        }
        int int_ok = want->dtype == CG_I64 && (t->dtype == CG_I64 || t->dtype == CG_I32);
        int float_ok = cg__is_float(want->dtype) &&
                       (cg__is_float(t->dtype) || t->dtype == CG_F16 || t->dtype == CG_BF16);
        if (!int_ok && !float_ok)
            return CG_FAIL(CG_E_DTYPE, "load_state_dict: '%s' is %s, the model needs %s", e->name,
                           cg_dtype_name(t->dtype), cg_dtype_name(want->dtype));
    }
    size_t n = cg_state_dict_count(sd);
    for (size_t i = 0; i < n; i++) {
        const char *name = cg_state_dict_name_at(sd, i);
        if (known_prefix(name)) continue;
        int found = 0;
        for (int k = 0; k < m->n_entries && !found; k++) found = !strcmp(m->entries[k].name, name);
        if (!found)
            return CG_FAIL(CG_E_FORMAT, "load_state_dict: %s has an unexpected tensor '%s' the model does not have",
                           *src ? src : "state dict", name);
    }
    cg_status st = CG_OK;
    cg_no_grad_begin();
    for (int i = 0; i < m->n_entries && st == CG_OK; i++)
        st = cg_tensor_copy_(*m->entries[i].slot, cg_state_dict_get(sd, m->entries[i].name));
    cg_no_grad_end();
    if (st == CG_OK) st = cg__model_read_counters(m);
    return st;
}

/* ---- architecture string ---- */

/* Writes the architecture into buf (n bytes, may be 0 with buf NULL) like snprintf: *len gets the
 * full length without the terminator even when it does not fit. */
static cg_status arch_write(const cg_model *m, char *buf, size_t n, size_t *len) {
    size_t used = 0;
    int w = snprintf(buf, n, "v1");
    if (w < 0) return CG_FAIL(CG_E_INTERNAL, "cg_model_arch: formatting failed");
    used = (size_t)w;
    for (int i = 0; i < m->n_layers; i++) {
        const cg_layer *l = &m->layers[i];
        char t[128];
        switch (l->kind) {
        case CG_LAYER_LINEAR:
            snprintf(t, sizeof t, "linear:%lld:%lld:%d:%s", (long long)l->in, (long long)l->out, l->bias,
                     cg_init_name(l->init));
            break;
        case CG_LAYER_ACTIVATION:
            if (l->act == CG_ACT_LEAKY_RELU) snprintf(t, sizeof t, "leaky_relu:%.17g", l->alpha);
            else snprintf(t, sizeof t, "%s", cg_activation_name(l->act));
            break;
        case CG_LAYER_DROPOUT: snprintf(t, sizeof t, "dropout:%.17g", l->p); break;
        case CG_LAYER_BATCHNORM1D:
            snprintf(t, sizeof t, "batchnorm1d:%lld:%.17g:%.17g", (long long)l->in, l->eps, l->momentum);
            break;
        case CG_LAYER_LAYERNORM: snprintf(t, sizeof t, "layernorm:%lld:%.17g", (long long)l->in, l->eps); break;
        case CG_LAYER_FLATTEN: snprintf(t, sizeof t, "flatten"); break;
        default: return CG_FAIL(CG_E_INTERNAL, "cg_model_arch: unknown layer kind");
        }
        w = snprintf(used < n ? buf + used : NULL, used < n ? n - used : 0, ";%s", t);
        if (w < 0) return CG_FAIL(CG_E_INTERNAL, "cg_model_arch: formatting failed");
        used += (size_t)w;
    }
    *len = used;
    return CG_OK;
}

cg_status cg_model_arch(const cg_model *m, char *buf, size_t n) {
    CG_ARG_NOT_NULL(m, "cg_model_arch");
    CG_ARG_NOT_NULL(buf, "cg_model_arch");
    size_t len;
    CG_TRY(arch_write(m, buf, n, &len));
    if (len >= n)
        return CG_FAIL(CG_E_INVALID, "cg_model_arch: buffer too small (%zu bytes needed)", len + 1);
    return CG_OK;
}

cg_status cg__model_arch_alloc(const cg_model *m, char **out) {
    size_t len;
    *out = NULL;
    CG_TRY(arch_write(m, NULL, 0, &len));
    char *buf = malloc(len + 1);
    if (!buf) return CG_FAIL(CG_E_OOM, "cg_model_arch: out of host memory");
    cg_status st = arch_write(m, buf, len + 1, &len);
    if (st != CG_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    return CG_OK;
}

static cg_status parse_layer(cg_model *m, char *tok) {
    char *f[6] = {0};
    int nf = 0;
    for (char *p = tok; p && nf < 6;) {
        f[nf++] = p;
        p = strchr(p, ':');
        if (p) *p++ = 0;
    }
    int64_t a = 0, b = 0;
    double x = 0, y = 0;
    if (!strcmp(f[0], "linear") && nf >= 4 && !cg__parse_i64(f[1], &a) && !cg__parse_i64(f[2], &b)) {
        cg_init init = CG_INIT_AUTO;
        if (nf >= 5)
            for (int i = 0; i < CG_INIT_COUNT; i++)
                if (!strcmp(f[4], cg_init_name((cg_init)i))) init = (cg_init)i;
        return cg_model_add_linear(m, a, b, atoi(f[3]), init);
    }
    if (!strcmp(f[0], "leaky_relu") && nf == 2 && !cg__parse_f64(f[1], &x))
        return cg_model_add_activation(m, CG_ACT_LEAKY_RELU, x);
    for (int i = 1; i < CG_ACT_COUNT; i++)
        if (nf == 1 && !strcmp(f[0], cg_activation_name((cg_activation)i)))
            return cg_model_add_activation(m, (cg_activation)i, 0);
    if (!strcmp(f[0], "dropout") && nf == 2 && !cg__parse_f64(f[1], &x)) return cg_model_add_dropout(m, x);
    if (!strcmp(f[0], "batchnorm1d") && nf == 4 && !cg__parse_i64(f[1], &a) && !cg__parse_f64(f[2], &x) &&
        !cg__parse_f64(f[3], &y))
        return cg_model_add_batchnorm1d(m, a, x, y);
    if (!strcmp(f[0], "layernorm") && nf == 3 && !cg__parse_i64(f[1], &a) && !cg__parse_f64(f[2], &x))
        return cg_model_add_layernorm(m, a, x);
    if (!strcmp(f[0], "flatten") && nf == 1) return cg_model_add_flatten(m);
    return CG_FAIL(CG_E_FORMAT, "architecture: cannot parse layer '%s'", f[0]);
}

cg_status cg_model_from_arch(const char *arch, cg_device dev, cg_dtype dtype, uint64_t seed, cg_model **out) {
    CG_ARG_NOT_NULL(arch, "cg_model_from_arch");
    CG_ARG_NOT_NULL(out, "cg_model_from_arch");
    if (strncmp(arch, "v1", 2) || (arch[2] && arch[2] != ';'))
        return CG_FAIL(CG_E_FORMAT, "architecture '%.40s' is not a cgrad v1 description", arch);
    char *copy = strdup(arch);
    if (!copy) return CG_FAIL(CG_E_OOM, "cg_model_from_arch: out of host memory");
    cg_model *m = NULL;
    cg_status st = cg_model_create(dev, dtype, seed, &m);
    char *save = NULL;
    for (char *tok = strtok_r(copy + 2, ";", &save); tok && st == CG_OK; tok = strtok_r(NULL, ";", &save))
        st = parse_layer(m, tok);
    free(copy);
    if (st != CG_OK) {
        cg_model_free(m);
        return st;
    }
    *out = m;
    return CG_OK;
}

cg_status cg_model_save(cg_model *m, const char *path) {
    CG_ARG_NOT_NULL(m, "cg_model_save");
    CG_ARG_NOT_NULL(path, "cg_model_save");
    cg_state_dict *sd;
    CG_TRY(cg_model_state_dict(m, &sd));
    cg_status st = cg_safetensors_save(path, sd);
    cg_state_dict_free(sd);
    return st;
}

cg_status cg_model_load(const char *path, cg_device dev, cg_model **out) {
    CG_ARG_NOT_NULL(path, "cg_model_load");
    CG_ARG_NOT_NULL(out, "cg_model_load");
    cg_state_dict *sd;
    CG_TRY(cg_safetensors_load(path, CG_CPU, &sd));
    const char *arch = cg_state_dict_get_meta(sd, "cgrad.arch");
    cg_status st = CG_OK;
    cg_model *m = NULL;
    if (!arch) {
        st = CG_FAIL(CG_E_FORMAT, "cg_model_load: %s has no 'cgrad.arch' metadata (was it written by cg_model_save "
                                  "or cg_checkpoint_save?); build the model in code and use "
                                  "cg_model_load_state_dict", path);
    } else {
        /* the saved model dtype; files without it: the first floating-point model tensor's */
        cg_dtype dt = CG_DTYPE_COUNT;
        const char *dn = cg_state_dict_get_meta(sd, "model.dtype");
        for (int i = 0; dn && i < CG_DTYPE_COUNT; i++)
            if (cg__is_float((cg_dtype)i) && !strcmp(dn, cg_dtype_name((cg_dtype)i))) dt = (cg_dtype)i;
        for (size_t i = 0; dt == CG_DTYPE_COUNT && i < cg_state_dict_count(sd); i++) {
            const cg_tensor *t = cg_state_dict_tensor_at(sd, i);
            if (!known_prefix(cg_state_dict_name_at(sd, i)) && cg__is_float(t->dtype)) dt = t->dtype;
        }
        if (dt == CG_DTYPE_COUNT) dt = CG_F32;
        st = cg_model_from_arch(arch, CG_CPU, dt, 0, &m);
        if (st == CG_OK) st = cg_model_build(m);
        if (st == CG_OK) st = cg_model_load_state_dict(m, sd);
        if (st == CG_OK) st = cg_model_to(m, dev);
    }
    cg_state_dict_free(sd);
    if (st != CG_OK) {
        cg_model_free(m);
        return st;
    }
    cg_model_eval(m);
    *out = m;
    return CG_OK;
}

/* ---- snapshots ---- */

void cg__snapshot_free(cg_weights_snapshot *s) {
    cg_tensor_release(s->flat);
    for (int i = 0; i < s->n_bufs; i++) cg_tensor_release(s->bufs[i]);
    free(s->bufs);
    memset(s, 0, sizeof *s);
}

cg_status cg__model_snapshot(cg_model *m, cg_weights_snapshot *s) {
    CG_TRY(cg__model_ensure_built(m));
    CG_TRY(cg__model_sync_counters(m));
    cg_weights_snapshot n = {0};
    int nb = m->n_entries - m->n_params;
    n.bufs = calloc((size_t)(nb ? nb : 1), sizeof *n.bufs);
    if (!n.bufs) return CG_FAIL(CG_E_OOM, "snapshot: out of host memory");
    cg_status st = cg__tensor_copy_to(m->flat, m->flat->dtype, m->flat->st->dev, &n.flat);
    for (int i = 0; st == CG_OK && i < m->n_entries; i++)
        if (!m->entries[i].is_param) {
            const cg_tensor *b = *m->entries[i].slot;
            st = cg__tensor_copy_to(b, b->dtype, b->st->dev, &n.bufs[n.n_bufs++]);
        }
    if (st != CG_OK) {
        cg__snapshot_free(&n);
        return st;
    }
    cg__snapshot_free(s);
    *s = n;
    return CG_OK;
}

cg_status cg__model_restore(cg_model *m, const cg_weights_snapshot *s) {
    if (!s->flat) return CG_OK;
    const cg_backend *be = cg__backend(m->dev);
    CG_TRY(be->copy_strided(m->flat, s->flat));
    cg__bump_version(m->flat);
    for (int i = 0, k = 0; i < m->n_entries; i++) {
        if (m->entries[i].is_param) continue;
        cg_tensor *dst = *m->entries[i].slot;
        CG_TRY(be->copy_strided(dst, s->bufs[k++]));
        cg__bump_version(dst);
    }
    return cg__model_read_counters(m);
}

/* ---- the state of recent training steps ---- */

void cg__step_ring_free(cg_step_ring *r) {
    for (int k = 0; r->at && k < r->slots; k++) cg_tensor_release(r->at[k]);
    free(r->at);
    free(r->rng);
    free(r->tracked);
    cg_tensor_release(r->buf);
    memset(r, 0, sizeof *r);
}

cg_status cg__step_ring_init(cg_model *m, int slots, cg_step_ring *r) {
    memset(r, 0, sizeof *r);
    CG_TRY(cg__model_ensure_built(m));
    r->slots = slots;
    r->at = calloc((size_t)slots, sizeof *r->at);
    r->rng = calloc((size_t)slots, sizeof *r->rng);
    r->tracked = calloc((size_t)m->n_layers, sizeof *r->tracked);
    if (!r->at || !r->rng || !r->tracked) {
        cg__step_ring_free(r);
        return CG_FAIL(CG_E_OOM, "training step: out of host memory");
    }
    if (!m->stats) return CG_OK;
    int64_t shape[2] = {slots, m->stats_numel}, one = 1;
    cg_status st = cg__tensor_new(shape, 2, m->stats->dtype, m->dev, &r->buf);
    for (int k = 0; st == CG_OK && k < slots; k++)
        st = cg__tensor_view(r->buf, &m->stats_numel, &one, 1, (int64_t)k * m->stats_numel, &r->at[k]);
    if (st != CG_OK) cg__step_ring_free(r);
    return st;
}

cg_status cg__step_ring_save(cg_model *m, cg_step_ring *r, int slot) {
    if (r->buf) CG_TRY(cg__backend(m->dev)->copy_strided(r->at[slot], m->stats));
    r->rng[slot] = m->rng;
    for (int i = 0; i < m->n_layers; i++) r->tracked[i] = m->layers[i].tracked;
    r->last = slot;
    return CG_OK;
}

cg_status cg__step_ring_restore(cg_model *m, const cg_step_ring *r, int slot) {
    if (r->buf) {
        CG_TRY(cg__backend(m->dev)->copy_strided(m->stats, r->at[slot]));
        cg__bump_version(m->stats);
    }
    m->rng = r->rng[slot];
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].kind == CG_LAYER_BATCHNORM1D) m->layers[i].tracked = r->tracked[i] - (r->last - slot);
    return CG_OK;
}
