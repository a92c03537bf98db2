/* cg_state_dict: an ordered name -> tensor map with string metadata, and the checks a
 * model runs on a loaded one (expected names/shapes, finite values). Lookups are linear:
 * state dicts hold tens to hundreds of entries, read once per load. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io_internal.h"
#include "st_internal.h"

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

cg_status cg_state_dict_create(cg_state_dict **out) {
    CG_ARG_NOT_NULL(out, "cg_state_dict_create");
    cg_state_dict *sd = calloc(1, sizeof *sd);
    if (!sd) return CG_FAIL(CG_E_OOM, "cg_state_dict_create: out of memory");
    *out = sd;
    return CG_OK;
}

void cg_state_dict_free(cg_state_dict *sd) {
    if (!sd) return;
    for (size_t i = 0; i < sd->n; i++) {
        free(sd->names[i]);
        cg_tensor_release(sd->tensors[i]);
    }
    for (size_t i = 0; i < sd->n_meta; i++) {
        free(sd->meta_keys[i]);
        free(sd->meta_values[i]);
    }
    free(sd->names);
    free(sd->tensors);
    free(sd->meta_keys);
    free(sd->meta_values);
    free(sd->source);
    free(sd);
}

static long find(char *const *keys, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i], key) == 0) return (long)i;
    return -1;
}

/* Grows the parallel arrays a and b (element sizes ea, eb) to hold at least n + 1. */
static int grow2(void **a, size_t ea, void **b, size_t eb, size_t n, size_t *cap) {
    if (n < *cap) return 1;
    size_t nc = *cap ? *cap * 2 : 8;
    void *na = realloc(*a, nc * ea);
    if (!na) return 0;
    *a = na;
    void *nb = realloc(*b, nc * eb);
    if (!nb) return 0;
    *b = nb;
    *cap = nc;
    return 1;
}

cg_status cg_state_dict_set(cg_state_dict *sd, const char *name, cg_tensor *t) {
    CG_ARG_NOT_NULL(sd, "cg_state_dict_set");
    CG_ARG_NOT_NULL(name, "cg_state_dict_set");
    CG_ARG_NOT_NULL(t, "cg_state_dict_set");
    if (!name[0]) return CG_FAIL(CG_E_INVALID, "cg_state_dict_set: tensor name is empty");
    if (strcmp(name, "__metadata__") == 0)
        return CG_FAIL(CG_E_INVALID, "cg_state_dict_set: '__metadata__' is reserved by safetensors; use "
                                     "cg_state_dict_set_meta for metadata");
    long i = find(sd->names, sd->n, name);
    if (i >= 0) {
        cg_tensor_retain(t);
        cg_tensor_release(sd->tensors[i]);
        sd->tensors[i] = t;
        return CG_OK;
    }
    if (!grow2((void **)&sd->names, sizeof(char *), (void **)&sd->tensors, sizeof(cg_tensor *), sd->n, &sd->cap))
        return CG_FAIL(CG_E_OOM, "cg_state_dict_set: out of memory adding '%s'", name);
    char *d = dup_str(name);
    if (!d) return CG_FAIL(CG_E_OOM, "cg_state_dict_set: out of memory adding '%s'", name);
    sd->names[sd->n] = d;
    sd->tensors[sd->n] = cg_tensor_retain(t);
    sd->n++;
    return CG_OK;
}

cg_tensor *cg_state_dict_get(const cg_state_dict *sd, const char *name) {
    if (!sd || !name) return NULL;
    long i = find(sd->names, sd->n, name);
    return i >= 0 ? sd->tensors[i] : NULL;
}

size_t cg_state_dict_count(const cg_state_dict *sd) { return sd ? sd->n : 0; }

const char *cg_state_dict_name_at(const cg_state_dict *sd, size_t i) {
    return sd && i < sd->n ? sd->names[i] : NULL;
}

cg_tensor *cg_state_dict_tensor_at(const cg_state_dict *sd, size_t i) {
    return sd && i < sd->n ? sd->tensors[i] : NULL;
}

cg_status cg_state_dict_set_meta(cg_state_dict *sd, const char *key, const char *value) {
    CG_ARG_NOT_NULL(sd, "cg_state_dict_set_meta");
    CG_ARG_NOT_NULL(key, "cg_state_dict_set_meta");
    CG_ARG_NOT_NULL(value, "cg_state_dict_set_meta");
    char *v = dup_str(value);
    if (!v) return CG_FAIL(CG_E_OOM, "cg_state_dict_set_meta: out of memory");
    long i = find(sd->meta_keys, sd->n_meta, key);
    if (i >= 0) {
        free(sd->meta_values[i]);
        sd->meta_values[i] = v;
        return CG_OK;
    }
    char *k = dup_str(key);
    if (!k || !grow2((void **)&sd->meta_keys, sizeof(char *), (void **)&sd->meta_values, sizeof(char *), sd->n_meta,
                     &sd->cap_meta)) {
        free(k);
        free(v);
        return CG_FAIL(CG_E_OOM, "cg_state_dict_set_meta: out of memory");
    }
    sd->meta_keys[sd->n_meta] = k;
    sd->meta_values[sd->n_meta] = v;
    sd->n_meta++;
    return CG_OK;
}

const char *cg_state_dict_get_meta(const cg_state_dict *sd, const char *key) {
    if (!sd || !key) return NULL;
    long i = find(sd->meta_keys, sd->n_meta, key);
    return i >= 0 ? sd->meta_values[i] : NULL;
}

size_t cg_state_dict_meta_count(const cg_state_dict *sd) { return sd ? sd->n_meta : 0; }

const char *cg_state_dict_meta_key_at(const cg_state_dict *sd, size_t i) {
    return sd && i < sd->n_meta ? sd->meta_keys[i] : NULL;
}

const char *cg_state_dict_meta_value_at(const cg_state_dict *sd, size_t i) {
    return sd && i < sd->n_meta ? sd->meta_values[i] : NULL;
}

const char *cg_state_dict_source(const cg_state_dict *sd) { return sd && sd->source ? sd->source : ""; }

cg_status cg__state_dict_set_source(cg_state_dict *sd, const char *source) {
    char *d = dup_str(source);
    if (!d) return CG_FAIL(CG_E_OOM, "state_dict: out of memory");
    free(sd->source);
    sd->source = d;
    return CG_OK;
}

/* ---- checks ---- */

static const char *src_of(const cg_state_dict *sd) { return sd->source ? sd->source : "(in memory)"; }

cg_status cg_state_dict_check(const cg_state_dict *sd, const cg_tensor_spec *expected, size_t n) {
    CG_ARG_NOT_NULL(sd, "cg_state_dict_check");
    if (n && !expected) return CG_FAIL(CG_E_INVALID, "cg_state_dict_check: expected is NULL with n = %zu", n);
    char a[128], b[128];
    for (size_t i = 0; i < n; i++) {
        const cg_tensor_spec *e = &expected[i];
        if (!e->name) return CG_FAIL(CG_E_INVALID, "cg_state_dict_check: expected[%zu].name is NULL", i);
        if (e->ndim < 0 || e->ndim > CG_MAX_DIMS)
            return CG_FAIL(CG_E_INVALID, "cg_state_dict_check: expected[%zu].ndim = %d", i, e->ndim);
        cg_tensor *t = cg_state_dict_get(sd, e->name);
        if (!t)
            return CG_FAIL(CG_E_FORMAT, "state_dict: %s: missing tensor '%s' (expected %s %s)", src_of(sd), e->name,
                           cg_dtype_name(e->dtype), cg__shape_str(e->shape, e->ndim, a, sizeof a));
        if (t->dtype != e->dtype)
            return CG_FAIL(CG_E_DTYPE, "state_dict: %s: tensor '%s' is %s, expected %s", src_of(sd), e->name,
                           cg_dtype_name(t->dtype), cg_dtype_name(e->dtype));
        int same = t->ndim == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
        if (!same)
            return CG_FAIL(CG_E_SHAPE, "state_dict: %s: tensor '%s' has shape %s, expected %s", src_of(sd), e->name,
                           cg__shape_str(t->shape, t->ndim, a, sizeof a), cg__shape_str(e->shape, e->ndim, b, sizeof b));
    }
    for (size_t i = 0; i < sd->n; i++) {
        int known = 0;
        for (size_t j = 0; j < n && !known; j++) known = strcmp(expected[j].name, sd->names[i]) == 0;
        if (!known)
            return CG_FAIL(CG_E_FORMAT, "state_dict: %s: unexpected tensor '%s' (not among the %zu expected names)",
                           src_of(sd), sd->names[i], n);
    }
    return CG_OK;
}

static double half_to_double(uint16_t h) {
    int e = (h >> 10) & 0x1f;
    if (e == 0x1f) return (h & 0x3ff) ? NAN : INFINITY;
    return 0.0; /* finite: value not needed by the caller */
}

cg_status cg_state_dict_check_finite(const cg_state_dict *sd) {
    CG_ARG_NOT_NULL(sd, "cg_state_dict_check_finite");
    for (size_t i = 0; i < sd->n; i++) {
        cg_tensor *t = sd->tensors[i];
        cg_dtype dt = t->dtype;
        if (dt != CG_F32 && dt != CG_F64 && dt != CG_F16 && dt != CG_BF16) continue;
        size_t nb = cg_tensor_nbytes(t);
        int64_t n = cg_tensor_numel(t);
        void *h = malloc(nb ? nb : 1);
        if (!h) return CG_FAIL(CG_E_OOM, "state_dict: out of memory checking '%s'", sd->names[i]);
        cg_status s = cg_tensor_to_host(t, h, nb);
        if (s != CG_OK) {
            free(h);
            return s;
        }
        int64_t bad = -1;
        double v = 0;
        for (int64_t k = 0; k < n && bad < 0; k++) {
            switch (dt) {
            case CG_F32: v = ((const float *)h)[k]; break;
            case CG_F64: v = ((const double *)h)[k]; break;
            case CG_F16: v = half_to_double(((const uint16_t *)h)[k]); break;
            default: { /* bf16: the top half of an f32 */
                uint32_t w = (uint32_t)((const uint16_t *)h)[k] << 16;
                float f;
                memcpy(&f, &w, 4);
                v = f;
            }
            }
            if (!isfinite(v)) bad = k;
        }
        free(h);
        if (bad >= 0)
            return CG_FAIL(CG_E_NUMERIC, "state_dict: %s: tensor '%s': element %lld is %s", src_of(sd), sd->names[i],
                           (long long)bad, isnan(v) ? "NaN" : "infinite");
    }
    return CG_OK;
}
