/* In-memory datasets and the batching loader. Batches are gathered on the host from
 * contiguous copies of the dataset, then moved to the loader's device. (A CUDA backend
 * can later gather into pinned staging and copy asynchronously behind the same API.) */
#include <stdlib.h>
#include <string.h>

#include "../io/io_internal.h"
#include "../philox.h"
#include "cgrad/data.h"

struct cg_dataset {
    cg_tensor *x, *y; /* contiguous, on the CPU */
    int64_t n;
};

struct cg_loader {
    const cg_dataset *ds;
    cg_loader_opts o;
    int64_t *perm; /* NULL when not shuffling */
    uint64_t epoch;
    int64_t pos;
};

/* A contiguous CPU tensor holding t's values: t itself (retained) when it already is one. */
static cg_status host_contig(cg_tensor *t, cg_tensor **out) {
    if (t->st->dev.type == CG_DEVICE_CPU && cg_tensor_is_contiguous(t)) {
        *out = cg_tensor_retain(t);
        return CG_OK;
    }
    cg_tensor *c;
    CG_TRY(cg__tensor_new(t->shape, t->ndim, t->dtype, CG_CPU, &c));
    cg_status s = cg_tensor_copy_(c, t);
    if (s != CG_OK) {
        cg_tensor_release(c);
        return s;
    }
    *out = c;
    return CG_OK;
}

cg_status cg_dataset_from_tensors(cg_tensor *x, cg_tensor *y, cg_dataset **out) {
    CG_ARG_NOT_NULL(x, "cg_dataset_from_tensors");
    CG_ARG_NOT_NULL(out, "cg_dataset_from_tensors");
    if (x->ndim < 1) return CG_FAIL(CG_E_SHAPE, "cg_dataset_from_tensors: x is 0-d; need (N, ...)");
    if (y && y->ndim < 1) return CG_FAIL(CG_E_SHAPE, "cg_dataset_from_tensors: y is 0-d; need (N, ...)");
    if (y && y->shape[0] != x->shape[0])
        return CG_FAIL(CG_E_SHAPE, "cg_dataset_from_tensors: x has %lld samples but y has %lld",
                       (long long)x->shape[0], (long long)y->shape[0]);
    cg_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return CG_FAIL(CG_E_OOM, "cg_dataset_from_tensors: out of memory");
    cg_status s = host_contig(x, &ds->x);
    if (s == CG_OK && y) s = host_contig(y, &ds->y);
    if (s != CG_OK) {
        cg_dataset_free(ds);
        return s;
    }
    ds->n = x->shape[0];
    *out = ds;
    return CG_OK;
}

void cg_dataset_free(cg_dataset *ds) {
    if (!ds) return;
    cg_tensor_release(ds->x);
    cg_tensor_release(ds->y);
    free(ds);
}

int64_t cg_dataset_len(const cg_dataset *ds) { return ds ? ds->n : 0; }
cg_tensor *cg_dataset_x(const cg_dataset *ds) { return ds ? ds->x : NULL; }
cg_tensor *cg_dataset_y(const cg_dataset *ds) { return ds ? ds->y : NULL; }

cg_status cg_permutation(uint64_t seed, uint64_t epoch, int64_t n, int64_t *perm) {
    if (n < 0) return CG_FAIL(CG_E_INVALID, "cg_permutation: n = %lld is negative", (long long)n);
    if (n && !perm) return CG_FAIL(CG_E_INVALID, "cg_permutation: perm is NULL");
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    uint64_t offset = epoch << 32;
    for (int64_t i = n - 1; i >= 1; i--) {
        uint64_t k = (uint64_t)(n - 1 - i);
        uint64_t lo = cg_philox_word(seed, offset, 2 * k), hi = cg_philox_word(seed, offset, 2 * k + 1);
        int64_t j = (int64_t)(((hi << 32) | lo) % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    return CG_OK;
}

static cg_status start_epoch(cg_loader *l) {
    l->pos = 0;
    if (l->perm) CG_TRY(cg_permutation(l->o.seed, l->epoch, l->ds->n, l->perm));
    return CG_OK;
}

cg_status cg_loader_create(const cg_dataset *ds, const cg_loader_opts *opts, cg_loader **out) {
    CG_ARG_NOT_NULL(ds, "cg_loader_create");
    CG_ARG_NOT_NULL(opts, "cg_loader_create");
    CG_ARG_NOT_NULL(out, "cg_loader_create");
    if (opts->batch_size <= 0)
        return CG_FAIL(CG_E_INVALID, "cg_loader_create: batch_size is %lld, must be > 0", (long long)opts->batch_size);
    if (opts->device.type != CG_DEVICE_CPU && opts->device.type != CG_DEVICE_CUDA)
        return CG_FAIL(CG_E_DEVICE, "cg_loader_create: unknown device type %d", (int)opts->device.type);
    cg_loader *l = calloc(1, sizeof *l);
    if (!l) return CG_FAIL(CG_E_OOM, "cg_loader_create: out of memory");
    l->ds = ds;
    l->o = *opts;
    if (opts->shuffle) {
        l->perm = malloc((size_t)(ds->n ? ds->n : 1) * sizeof *l->perm);
        if (!l->perm) {
            free(l);
            return CG_FAIL(CG_E_OOM, "cg_loader_create: out of memory for a %lld-entry permutation",
                           (long long)ds->n);
        }
    }
    cg_status s = start_epoch(l);
    if (s != CG_OK) {
        cg_loader_free(l);
        return s;
    }
    *out = l;
    return CG_OK;
}

void cg_loader_free(cg_loader *l) {
    if (!l) return;
    free(l->perm);
    free(l);
}

cg_status cg_loader_set_epoch(cg_loader *l, uint64_t epoch) {
    CG_ARG_NOT_NULL(l, "cg_loader_set_epoch");
    l->epoch = epoch;
    return start_epoch(l);
}

uint64_t cg_loader_epoch(const cg_loader *l) { return l ? l->epoch : 0; }

int64_t cg_loader_num_batches(const cg_loader *l) {
    if (!l) return 0;
    int64_t b = l->o.batch_size, n = l->ds->n;
    return l->o.drop_last ? n / b : (n + b - 1) / b;
}

/* Rows idx[0..b) of src (contiguous CPU, (N, ...)) into a new (b, ...) tensor on dev. */
static cg_status gather(const cg_tensor *src, const int64_t *perm, int64_t start, int64_t b, cg_device dev,
                        cg_tensor **out) {
    int64_t shape[CG_MAX_DIMS];
    memcpy(shape, src->shape, sizeof shape);
    shape[0] = b;
    cg_tensor *t;
    CG_TRY(cg__tensor_new(shape, src->ndim, src->dtype, CG_CPU, &t));
    size_t row = src->shape[0] ? cg_tensor_nbytes(src) / (size_t)src->shape[0] : 0;
    const char *s = cg__ptr(src);
    char *d = cg_tensor_data(t);
    for (int64_t i = 0; i < b; i++) {
        int64_t r = perm ? perm[start + i] : start + i;
        memcpy(d + (size_t)i * row, s + (size_t)r * row, row);
    }
    cg_status st = cg__move_fresh(&t, dev);
    if (st != CG_OK) return st;
    *out = t;
    return CG_OK;
}

cg_status cg_loader_next(cg_loader *l, cg_tensor **x, cg_tensor **y) {
    CG_ARG_NOT_NULL(l, "cg_loader_next");
    CG_ARG_NOT_NULL(x, "cg_loader_next");
    int64_t n = l->ds->n, left = n - l->pos;
    int64_t b = left < l->o.batch_size ? left : l->o.batch_size;
    if (b == 0 || (l->o.drop_last && b < l->o.batch_size)) {
        *x = NULL;
        if (y) *y = NULL;
        l->epoch++;
        return start_epoch(l);
    }
    cg_tensor *bx = NULL, *by = NULL;
    CG_TRY(gather(l->ds->x, l->perm, l->pos, b, l->o.device, &bx));
    if (l->ds->y) {
        cg_status s = gather(l->ds->y, l->perm, l->pos, b, l->o.device, &by);
        if (s != CG_OK) {
            cg_tensor_release(bx);
            return s;
        }
    }
    l->pos += b;
    *x = cg__hand_out(bx);
    if (y) *y = by ? cg__hand_out(by) : NULL;
    else cg_tensor_release(by);
    return CG_OK;
}
