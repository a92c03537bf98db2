/* Tensors: creation, reference counting, geometry, host transfer and conversion. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

void cg__node_free(cg_node *n); /* autograd.c */

/* ---- geometry helpers ---- */

int64_t cg__numel(const int64_t *shape, int ndim) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

void cg__contiguous_strides(const int64_t *shape, int ndim, int64_t *strides) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

void cg__swap_dims(const cg_tensor *t, int d0, int d1, int64_t *shape, int64_t *strides) {
    memcpy(shape, t->shape, sizeof t->shape);
    memcpy(strides, t->strides, sizeof t->strides);
    shape[d0] = t->shape[d1];
    shape[d1] = t->shape[d0];
    strides[d0] = t->strides[d1];
    strides[d1] = t->strides[d0];
}

int cg__same_shape(const cg_tensor *a, const cg_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

const char *cg__shape_str(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

cg_status cg__check_shape(const int64_t *shape, int ndim, cg_dtype dt, const char *fn) {
    if (ndim < 0 || ndim > CG_MAX_DIMS)
        return CG_FAIL(CG_E_SHAPE, "%s: ndim %d is outside [0, %d]", fn, ndim, CG_MAX_DIMS);
    if (ndim > 0 && !shape) return CG_FAIL(CG_E_INVALID, "%s: shape is NULL with ndim %d", fn, ndim);
    if (cg_dtype_size(dt) == 0) return CG_FAIL(CG_E_DTYPE, "%s: invalid dtype %d", fn, (int)dt);
    /* every stride (a product of dims, zeros counted as 1) and the byte size must fit */
    int64_t span = (int64_t)cg_dtype_size(dt);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return CG_FAIL(CG_E_SHAPE, "%s: dimension %d is negative (%lld)", fn, i, (long long)shape[i]);
        if (__builtin_mul_overflow(span, shape[i] > 0 ? shape[i] : 1, &span))
            return CG_FAIL(CG_E_SHAPE, "%s: shape is too large (dimension %d makes the size overflow)", fn, i);
    }
    return CG_OK;
}

/* ---- storage ---- */

static cg_status storage_new(cg_device dev, size_t nbytes, cg_storage **out) {
    const cg_backend *be = cg__backend(dev);
    if (!be) return CG_E_DEVICE;
    cg_storage *st = calloc(1, sizeof *st);
    if (!st) return CG_FAIL(CG_E_OOM, "out of host memory allocating a storage header");
    cg_status s = be->alloc(dev.index, nbytes, &st->data);
    if (s != CG_OK) {
        free(st);
        return s;
    }
    atomic_init(&st->refcount, 1);
    atomic_init(&st->version, 0);
    st->dev = dev;
    st->nbytes = nbytes;
    *out = st;
    return CG_OK;
}

static void storage_release(cg_storage *st) {
    if (!st || atomic_fetch_sub(&st->refcount, 1) != 1) return;
    const cg_backend *be = cg__backend(st->dev);
    if (be) be->free(st->dev.index, st->data);
    free(st);
}

void cg__bump_version(cg_tensor *t) { atomic_fetch_add(&t->st->version, 1); }

/* ---- tensor headers ---- */

static cg_tensor *header_new(cg_storage *st, cg_dtype dt, const int64_t *shape, const int64_t *strides, int ndim,
                             int64_t offset) {
    cg_tensor *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    atomic_init(&t->refcount, 1);
    t->st = st;
    t->dtype = dt;
    t->ndim = ndim;
    t->offset = offset;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->strides[i] = strides[i];
    }
    return t;
}

cg_status cg__tensor_new(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, cg_tensor **out) {
    CG_TRY(cg__check_shape(shape, ndim, dt, "tensor"));
    int64_t strides[CG_MAX_DIMS];
    cg__contiguous_strides(shape, ndim, strides);
    cg_storage *st = NULL;
    CG_TRY(storage_new(dev, (size_t)cg__numel(shape, ndim) * cg_dtype_size(dt), &st));
    cg_tensor *t = header_new(st, dt, shape, strides, ndim, 0);
    if (!t) {
        storage_release(st);
        return CG_FAIL(CG_E_OOM, "out of host memory allocating a tensor header");
    }
    *out = t;
    return CG_OK;
}

cg_status cg__tensor_new_like(const cg_tensor *t, cg_tensor **out) {
    return cg__tensor_new(t->shape, t->ndim, t->dtype, t->st->dev, out);
}

cg_status cg__tensor_view(const cg_tensor *t, const int64_t *shape, const int64_t *strides, int ndim, int64_t offset,
                          cg_tensor **out) {
    cg_tensor *v = header_new(t->st, t->dtype, shape, strides, ndim, offset);
    if (!v) return CG_FAIL(CG_E_OOM, "out of host memory allocating a view header");
    atomic_fetch_add(&t->st->refcount, 1);
    *out = v;
    return CG_OK;
}

cg_status cg__tensor_alias(const cg_tensor *t, cg_tensor **out) {
    return cg__tensor_view(t, t->shape, t->strides, t->ndim, t->offset, out);
}

cg_status cg__tensor_contiguous(const cg_tensor *t, cg_tensor **out) {
    if (cg_tensor_is_contiguous(t)) {
        *out = cg_tensor_retain((cg_tensor *)t);
        return CG_OK;
    }
    cg_tensor *c;
    CG_TRY(cg__tensor_new_like(t, &c));
    cg_status s = cg__backend(t->st->dev)->copy_strided(c, t);
    if (s != CG_OK) {
        cg_tensor_release(c);
        return s;
    }
    *out = c;
    return CG_OK;
}

cg_tensor *cg_tensor_retain(cg_tensor *t) {
    if (t) atomic_fetch_add(&t->refcount, 1);
    return t;
}

static void tensor_free(cg_tensor *t) {
    cg_tensor_release(t->grad);
    if (t->node) cg__node_free(t->node);
    storage_release(t->st);
    free(t);
}

/* Freeing a tensor frees its node, which releases the node's inputs, and so on down the
 * graph: done recursively, a long chain that was never backwarded (a loss summed over
 * many steps with grad on) overflows the stack. Tensors that die while one release is
 * under way are queued and freed by the outermost call instead. */
static _Thread_local cg_tensor **tl_dead;
static _Thread_local size_t tl_ndead, tl_capdead;
static _Thread_local int tl_releasing;

void cg_tensor_release(cg_tensor *t) {
    if (!t || atomic_fetch_sub(&t->refcount, 1) != 1) return;
    if (tl_releasing) {
        if (tl_ndead == tl_capdead) {
            size_t cap = tl_capdead ? 2 * tl_capdead : 64;
            cg_tensor **v = realloc(tl_dead, cap * sizeof *v);
            if (!v) { /* cannot queue: free it right here (recursion, as before) */
                tensor_free(t);
                return;
            }
            tl_dead = v;
            tl_capdead = cap;
        }
        tl_dead[tl_ndead++] = t;
        return;
    }
    tl_releasing = 1;
    tensor_free(t);
    while (tl_ndead) tensor_free(tl_dead[--tl_ndead]);
    free(tl_dead);
    tl_dead = NULL;
    tl_capdead = 0;
    tl_releasing = 0;
}

/* ---- public creation ---- */

cg_status cg_tensor_empty(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, cg_tensor **out) {
    CG_ARG_NOT_NULL(out, "cg_tensor_empty");
    CG_TRY(cg__tensor_new(shape, ndim, dt, dev, out));
    cg__autorelease(*out);
    return CG_OK;
}

cg_status cg_tensor_full(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, double value, cg_tensor **out) {
    CG_ARG_NOT_NULL(out, "cg_tensor_full");
    cg_tensor *t;
    CG_TRY(cg__tensor_new(shape, ndim, dt, dev, &t));
    cg_status s = cg__backend(dev)->fill(t, value);
    if (s != CG_OK) {
        cg_tensor_release(t);
        return s;
    }
    *out = cg__autorelease(t);
    return CG_OK;
}

cg_status cg_tensor_zeros(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, cg_tensor **out) {
    return cg_tensor_full(shape, ndim, dt, dev, 0.0, out);
}

cg_status cg_tensor_ones(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, cg_tensor **out) {
    return cg_tensor_full(shape, ndim, dt, dev, 1.0, out);
}

cg_status cg_tensor_arange(double start, double step, int64_t n, cg_dtype dt, cg_device dev, cg_tensor **out) {
    CG_ARG_NOT_NULL(out, "cg_tensor_arange");
    if (n < 0) return CG_FAIL(CG_E_SHAPE, "cg_tensor_arange: n must be >= 0, got %lld", (long long)n);
    cg_tensor *h, *t;
    CG_TRY(cg__tensor_new(&n, 1, CG_F64, CG_CPU, &h));
    double *d = cg__ptr(h);
    for (int64_t i = 0; i < n; i++) d[i] = start + step * (double)i;
    cg_status s = cg__tensor_new(&n, 1, dt, dev, &t);
    if (s == CG_OK) {
        s = cg_tensor_copy_(t, h);
        if (s != CG_OK) cg_tensor_release(t);
    }
    cg_tensor_release(h);
    if (s != CG_OK) return s;
    *out = cg__autorelease(t);
    return CG_OK;
}

cg_status cg_tensor_from_host(const void *data, const int64_t *shape, int ndim, cg_dtype dt, cg_device dev,
                              cg_tensor **out) {
    CG_ARG_NOT_NULL(out, "cg_tensor_from_host");
    cg_tensor *t;
    CG_TRY(cg__tensor_new(shape, ndim, dt, dev, &t));
    size_t nb = cg_tensor_nbytes(t);
    if (nb && !data) {
        cg_tensor_release(t);
        return CG_FAIL(CG_E_INVALID, "cg_tensor_from_host: data is NULL");
    }
    cg_status s = cg__backend(dev)->memcpy(dev.index, cg__ptr(t), data, nb, CG_COPY_H2D);
    if (s != CG_OK) {
        cg_tensor_release(t);
        return s;
    }
    *out = cg__autorelease(t);
    return CG_OK;
}

cg_rng cg_rng_make(uint64_t seed) { return (cg_rng){seed, 0}; }

static cg_status fill_random(cg_tensor *t, cg_rand_dist dist, double a, double b, cg_rng *rng, const char *fn) {
    CG_ARG_NOT_NULL(t, fn);
    CG_ARG_NOT_NULL(rng, fn);
    if (!cg__is_float(t->dtype))
        return CG_FAIL(CG_E_DTYPE, "%s: random fill needs f32 or f64, tensor is %s", fn, cg_dtype_name(t->dtype));
    if (!cg_tensor_is_contiguous(t)) return CG_FAIL(CG_E_INVALID, "%s: tensor must be contiguous", fn);
    if (dist == CG_RAND_NORMAL && !(b >= 0)) return CG_FAIL(CG_E_INVALID, "%s: std must be >= 0, got %g", fn, b);
    if (dist == CG_RAND_UNIFORM && !(a <= b)) return CG_FAIL(CG_E_INVALID, "%s: need lo <= hi, got [%g, %g)", fn, a, b);
    CG_TRY(cg__backend(t->st->dev)->rand(t, dist, a, b, rng->seed, rng->offset));
    rng->offset += (uint64_t)(cg_tensor_numel(t) + 3) / 4;
    cg__bump_version(t);
    return CG_OK;
}

cg_status cg_tensor_fill_uniform(cg_tensor *t, double lo, double hi, cg_rng *rng) {
    return fill_random(t, CG_RAND_UNIFORM, lo, hi, rng, "cg_tensor_fill_uniform");
}

cg_status cg_tensor_fill_normal(cg_tensor *t, double mean, double std, cg_rng *rng) {
    return fill_random(t, CG_RAND_NORMAL, mean, std, rng, "cg_tensor_fill_normal");
}

static cg_status new_random(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, cg_rand_dist dist, double a,
                            double b, cg_rng *rng, cg_tensor **out, const char *fn) {
    CG_ARG_NOT_NULL(out, fn);
    cg_tensor *t;
    CG_TRY(cg__tensor_new(shape, ndim, dt, dev, &t));
    cg_status s = fill_random(t, dist, a, b, rng, fn);
    if (s != CG_OK) {
        cg_tensor_release(t);
        return s;
    }
    *out = cg__autorelease(t);
    return CG_OK;
}

cg_status cg_tensor_rand_uniform(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, double lo, double hi,
                                 cg_rng *rng, cg_tensor **out) {
    return new_random(shape, ndim, dt, dev, CG_RAND_UNIFORM, lo, hi, rng, out, "cg_tensor_rand_uniform");
}

cg_status cg_tensor_rand_normal(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, double mean, double std,
                                cg_rng *rng, cg_tensor **out) {
    return new_random(shape, ndim, dt, dev, CG_RAND_NORMAL, mean, std, rng, out, "cg_tensor_rand_normal");
}

cg_status cg__check_leaf_write(const cg_tensor *t, const char *fn) {
    if (t->requires_grad && !t->node && cg_grad_enabled())
        return CG_FAIL(CG_E_STATE, "%s: in-place write to a leaf that requires grad while grad mode is on; wrap the "
                                   "update in cg_no_grad_begin()/cg_no_grad_end()", fn);
    return CG_OK;
}

cg_status cg_tensor_fill(cg_tensor *t, double value) {
    CG_ARG_NOT_NULL(t, "cg_tensor_fill");
    CG_TRY(cg__check_leaf_write(t, "cg_tensor_fill"));
    if (cg_tensor_is_contiguous(t)) {
        CG_TRY(cg__backend(t->st->dev)->fill(t, value));
    } else {
        cg_tensor *c;
        CG_TRY(cg__tensor_new_like(t, &c));
        cg_status s = cg__backend(t->st->dev)->fill(c, value);
        if (s == CG_OK) s = cg__backend(t->st->dev)->copy_strided(t, c);
        cg_tensor_release(c);
        CG_TRY(s);
    }
    cg__bump_version(t);
    return CG_OK;
}

/* ---- properties ---- */

int cg_tensor_ndim(const cg_tensor *t) { return t ? t->ndim : 0; }

int64_t cg_tensor_dim(const cg_tensor *t, int i) {
    if (!t) return 0;
    if (i < 0) i += t->ndim;
    return (i >= 0 && i < t->ndim) ? t->shape[i] : 0;
}

const int64_t *cg_tensor_shape(const cg_tensor *t) { return t ? t->shape : NULL; }
const int64_t *cg_tensor_strides(const cg_tensor *t) { return t ? t->strides : NULL; }
int64_t cg_tensor_numel(const cg_tensor *t) { return t ? cg__numel(t->shape, t->ndim) : 0; }
size_t cg_tensor_nbytes(const cg_tensor *t) { return t ? (size_t)cg_tensor_numel(t) * cg_dtype_size(t->dtype) : 0; }
cg_dtype cg_tensor_dtype(const cg_tensor *t) { return t ? t->dtype : CG_F32; }
cg_device cg_tensor_device(const cg_tensor *t) { return t ? t->st->dev : CG_CPU; }
uint64_t cg_tensor_version(const cg_tensor *t) { return t ? atomic_load(&t->st->version) : 0; }

int cg_tensor_is_contiguous(const cg_tensor *t) {
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != expect) return 0;
        expect *= t->shape[i];
    }
    return 1;
}

void *cg_tensor_data(cg_tensor *t) {
    if (!t || t->st->dev.type != CG_DEVICE_CPU) return NULL;
    return cg__ptr(t);
}

/* ---- host transfer ---- */

cg_status cg_tensor_to_host(const cg_tensor *t, void *dst, size_t nbytes) {
    CG_ARG_NOT_NULL(t, "cg_tensor_to_host");
    if (nbytes != cg_tensor_nbytes(t))
        return CG_FAIL(CG_E_INVALID, "cg_tensor_to_host: buffer is %zu bytes, tensor needs %zu", nbytes,
                       cg_tensor_nbytes(t));
    if (nbytes && !dst) return CG_FAIL(CG_E_INVALID, "cg_tensor_to_host: dst is NULL");
    cg_tensor *c;
    CG_TRY(cg__tensor_contiguous(t, &c));
    const cg_backend *be = cg__backend(t->st->dev);
    cg_status s = be->memcpy(t->st->dev.index, dst, cg__ptr(c), nbytes, CG_COPY_D2H);
    cg_tensor_release(c);
    return s;
}

cg_status cg_tensor_copy_from_host(cg_tensor *t, const void *src, size_t nbytes) {
    CG_ARG_NOT_NULL(t, "cg_tensor_copy_from_host");
    if (nbytes != cg_tensor_nbytes(t))
        return CG_FAIL(CG_E_INVALID, "cg_tensor_copy_from_host: buffer is %zu bytes, tensor needs %zu", nbytes,
                       cg_tensor_nbytes(t));
    if (nbytes && !src) return CG_FAIL(CG_E_INVALID, "cg_tensor_copy_from_host: src is NULL");
    CG_TRY(cg__check_leaf_write(t, "cg_tensor_copy_from_host"));
    cg_tensor *h;
    CG_TRY(cg__tensor_new(t->shape, t->ndim, t->dtype, CG_CPU, &h));
    memcpy(cg__ptr(h), src, nbytes);
    cg_status s = cg_tensor_copy_(t, h);
    cg_tensor_release(h);
    return s;
}

cg_status cg_tensor_item(const cg_tensor *t, double *value) {
    CG_ARG_NOT_NULL(t, "cg_tensor_item");
    CG_ARG_NOT_NULL(value, "cg_tensor_item");
    if (cg_tensor_numel(t) != 1) {
        char b[96];
        return CG_FAIL(CG_E_SHAPE, "cg_tensor_item: tensor of shape %s has %lld elements, need exactly 1",
                       cg__shape_str(t->shape, t->ndim, b, sizeof b), (long long)cg_tensor_numel(t));
    }
    cg_tensor *c;
    CG_TRY(cg__tensor_new(t->shape, t->ndim, CG_F64, CG_CPU, &c));
    cg_status s = cg_tensor_copy_(c, t);
    if (s == CG_OK) *value = *(const double *)cg__ptr(c);
    cg_tensor_release(c);
    return s;
}

/* ---- movement and conversion ---- */

cg_status cg_tensor_copy_(cg_tensor *dst, const cg_tensor *src) {
    CG_ARG_NOT_NULL(dst, "cg_tensor_copy_");
    CG_ARG_NOT_NULL(src, "cg_tensor_copy_");
    if (!cg__same_shape(dst, src)) {
        char a[96], b[96];
        return CG_FAIL(CG_E_SHAPE, "cg_tensor_copy_: destination %s and source %s differ in shape",
                       cg__shape_str(dst->shape, dst->ndim, a, sizeof a), cg__shape_str(src->shape, src->ndim, b, sizeof b));
    }
    CG_TRY(cg__check_leaf_write(dst, "cg_tensor_copy_"));
    cg_device dd = dst->st->dev, sd = src->st->dev;
    cg_status s = CG_OK;
    if (cg__same_device(dd, sd)) {
        s = cg__backend(dd)->copy_strided(dst, src);
    } else {
        /* across devices: make src contiguous in dst's dtype on its own device, then move bytes */
        cg_tensor *tmp = NULL, *staged = NULL;
        s = cg__tensor_new(src->shape, src->ndim, dst->dtype, sd, &tmp);
        if (s == CG_OK) s = cg__backend(sd)->copy_strided(tmp, src);
        if (s == CG_OK && !cg_tensor_is_contiguous(dst)) s = cg__tensor_new_like(dst, &staged);
        cg_tensor *target = staged ? staged : dst;
        if (s == CG_OK) {
            size_t nb = cg_tensor_nbytes(tmp);
            if (sd.type == CG_DEVICE_CPU)
                s = cg__backend(dd)->memcpy(dd.index, cg__ptr(target), cg__ptr(tmp), nb, CG_COPY_H2D);
            else if (dd.type == CG_DEVICE_CPU)
                s = cg__backend(sd)->memcpy(sd.index, cg__ptr(target), cg__ptr(tmp), nb, CG_COPY_D2H);
            else if (dd.type == sd.type && cg__backend(dd)->memcpy_peer) /* two GPUs: no host round trip */
                s = cg__backend(dd)->memcpy_peer(dd.index, cg__ptr(target), sd.index, cg__ptr(tmp), nb);
            else
                s = CG_FAIL(CG_E_UNSUPPORTED, "cg_tensor_copy_: no copy from device type %d to %d; go through "
                                              "the host", (int)sd.type, (int)dd.type);
        }
        if (s == CG_OK && staged) s = cg__backend(dd)->copy_strided(dst, staged);
        cg_tensor_release(tmp);
        cg_tensor_release(staged);
    }
    if (s == CG_OK) cg__bump_version(dst);
    return s;
}

cg_status cg__tensor_copy_to(const cg_tensor *t, cg_dtype dt, cg_device dev, cg_tensor **out) {
    cg_tensor *r;
    CG_TRY(cg__tensor_new(t->shape, t->ndim, dt, dev, &r));
    cg_status s = cg_tensor_copy_(r, t);
    if (s != CG_OK) {
        cg_tensor_release(r);
        return s;
    }
    *out = r;
    return CG_OK;
}

static cg_status convert(const cg_tensor *t, cg_dtype dt, cg_device dev, cg_tensor **out, const char *fn) {
    CG_ARG_NOT_NULL(t, fn);
    CG_ARG_NOT_NULL(out, fn);
    CG_TRY(cg__tensor_copy_to(t, dt, dev, out));
    cg__autorelease(*out);
    return CG_OK;
}

cg_status cg_tensor_to(const cg_tensor *t, cg_device dev, cg_tensor **out) {
    CG_ARG_NOT_NULL(t, "cg_tensor_to");
    return convert(t, t->dtype, dev, out, "cg_tensor_to");
}

cg_status cg_tensor_cast(const cg_tensor *t, cg_dtype dt, cg_tensor **out) {
    CG_ARG_NOT_NULL(t, "cg_tensor_cast");
    return convert(t, dt, t->st->dev, out, "cg_tensor_cast");
}

cg_status cg_tensor_clone(const cg_tensor *t, cg_tensor **out) {
    CG_ARG_NOT_NULL(t, "cg_tensor_clone");
    return convert(t, t->dtype, t->st->dev, out, "cg_tensor_clone");
}

/* ---- autograd flags ---- */

cg_status cg_tensor_set_requires_grad(cg_tensor *t, int requires_grad) {
    CG_ARG_NOT_NULL(t, "cg_tensor_set_requires_grad");
    if (t->node)
        return CG_FAIL(CG_E_STATE, "cg_tensor_set_requires_grad: tensor was produced by '%s' and is part of the "
                                   "graph; only leaves can change requires_grad (use cg_tensor_detach first)",
                       cg_op_table[t->node->op].name);
    if (requires_grad && !cg__is_float(t->dtype))
        return CG_FAIL(CG_E_DTYPE, "cg_tensor_set_requires_grad: only f32/f64 tensors can require grad, this one is %s",
                       cg_dtype_name(t->dtype));
    t->requires_grad = requires_grad != 0;
    return CG_OK;
}

int cg_tensor_requires_grad(const cg_tensor *t) { return t && (t->requires_grad || t->node); }
cg_tensor *cg_tensor_grad(const cg_tensor *t) { return t ? t->grad : NULL; }
int cg_tensor_has_grad_fn(const cg_tensor *t) { return t && t->node; }
const char *cg_tensor_grad_fn_name(const cg_tensor *t) { return t && t->node ? cg_op_table[t->node->op].name : NULL; }

cg_status cg_tensor_set_grad(cg_tensor *t, cg_tensor *g) {
    CG_ARG_NOT_NULL(t, "cg_tensor_set_grad");
    if (g && (!cg__same_shape(t, g) || g->dtype != t->dtype || !cg__same_device(g->st->dev, t->st->dev)))
        return CG_FAIL(CG_E_SHAPE, "cg_tensor_set_grad: gradient buffer must match the tensor's shape, dtype and device");
    if (g && !cg_tensor_is_contiguous(g))
        return CG_FAIL(CG_E_INVALID, "cg_tensor_set_grad: gradient buffer must be contiguous (gradients are "
                                     "accumulated and updated as dense buffers); pass cg_contiguous(g) or a fresh tensor");
    cg_tensor_retain(g);
    cg_tensor_release(t->grad);
    t->grad = g;
    return CG_OK;
}

cg_status cg_tensor_detach(const cg_tensor *t, cg_tensor **out) {
    CG_ARG_NOT_NULL(t, "cg_tensor_detach");
    CG_ARG_NOT_NULL(out, "cg_tensor_detach");
    CG_TRY(cg__tensor_alias(t, out));
    cg__autorelease(*out);
    return CG_OK;
}

cg_status cg_tensor_print(const cg_tensor *t, const char *name, int max_elems) {
    CG_ARG_NOT_NULL(t, "cg_tensor_print");
    char b[96];
    int64_t n = cg_tensor_numel(t);
    printf("%s: shape %s %s %s", name ? name : "tensor", cg__shape_str(t->shape, t->ndim, b, sizeof b),
           cg_dtype_name(t->dtype), cg_device_str(t->st->dev));
    if (t->node) printf(" grad_fn=%s", cg_op_table[t->node->op].name);
    printf("\n  [");
    int64_t k = n < max_elems ? n : max_elems;
    if (k > 0) {
        double *v = malloc((size_t)n * sizeof *v);
        cg_tensor *c = NULL;
        cg_status s = v ? cg__tensor_new(t->shape, t->ndim, CG_F64, CG_CPU, &c) : CG_E_OOM;
        if (s == CG_OK) s = cg_tensor_copy_(c, t);
        if (s == CG_OK) memcpy(v, cg__ptr(c), (size_t)n * sizeof *v);
        cg_tensor_release(c);
        if (s != CG_OK) {
            free(v);
            return s == CG_E_OOM && !v ? CG_FAIL(CG_E_OOM, "cg_tensor_print: out of host memory") : s;
        }
        for (int64_t i = 0; i < k; i++) printf(i ? ", %.6g" : "%.6g", v[i]);
        free(v);
    }
    printf("%s]\n", k < n ? ", ..." : "");
    return CG_OK;
}
