/* In-memory datasets and the batching loader. Batches are gathered on the host from
 * contiguous copies of the dataset, then moved to the loader's device. When shuffling, an
 * epoch's permutation (fixed by seed and epoch) is drawn once, by its first batch.
 *
 * Prefetch (devices whose backend has the upload entries, i.e. CUDA; off with
 * opts.no_prefetch): two slots, each with pinned staging for x and y and one event.
 * cg_loader_next hands out batch k, whose upload was issued by the previous call (the
 * compute stream is made to wait on its event first: no host wait), then gathers batch
 * k+1 into the other slot's pinned buffers (after waiting for that slot's previous upload)
 * and issues its upload into fresh device tensors. A prefetched batch is tagged with the
 * (epoch, position) it belongs to and only handed out when the loader is at that place, so
 * the batches and their order are exactly those of the synchronous path; otherwise it is
 * dropped and the batch gathered on demand. A failed prefetch is dropped too (the next
 * call redoes the batch and reports the error if it recurs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "../io/io_internal.h"
#include "../philox.h"
#include "cgrad/data.h"

struct cg_dataset {
    cg_tensor *x, *y; /* contiguous, on the CPU */
    int64_t n;
};

typedef struct pf_slot {
    void *hx, *hy;      /* pinned staging, room for min(batch_size, N) rows each */
    void *ev;           /* recorded by this slot's last uploads (x then y, one copy stream) */
    int recorded;       /* ev covers uploads the host has not waited for */
    cg_tensor *dx, *dy; /* uploaded (or in flight), not handed out yet; NULL: none */
    uint64_t epoch;     /* the batch dx holds: (epoch, pos) */
    int64_t pos;
} pf_slot;

struct cg_loader {
    const cg_dataset *ds;
    cg_loader_opts o;
    int64_t *perm;       /* NULL when not shuffling */
    uint64_t perm_epoch; /* the epoch perm holds, when perm_ok */
    int perm_ok;
    int64_t n_perms; /* permutations drawn so far (tests) */
    uint64_t epoch;
    int64_t pos;
    /* prefetch */
    int pf;                /* 0 undecided, 1 on, -1 off (synchronous path) */
    const cg_backend *be;  /* the device's backend when pf == 1 */
    pf_slot slot[2];
    int turn;              /* slot the next upload goes into */
    int pending;           /* slot holding the prefetched batch, -1 none */
    size_t row_x, row_y;   /* bytes per sample */
};

/* A contiguous CPU tensor holding t's values: t itself (retained) when it already is one. */
static cg_status host_contig(cg_tensor *t, cg_tensor **out) {
    if (t->st->dev.type == CG_DEVICE_CPU && cg_tensor_is_contiguous(t)) {
        *out = cg_tensor_retain(t);
        return CG_OK;
    }
    return cg__tensor_copy_to(t, t->dtype, CG_CPU, out);
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

/* Draws the current epoch's permutation unless perm already holds it. Drawn on first use,
 * not when an epoch starts: fit's set_epoch(e) follows create (epoch 0) and the end of
 * epoch e-1 (which moves to e), and each used to draw it again. */
static cg_status need_perm(cg_loader *l) {
    if (!l->perm || (l->perm_ok && l->perm_epoch == l->epoch)) return CG_OK;
    l->perm_ok = 0;
    CG_TRY(cg_permutation(l->o.seed, l->epoch, l->ds->n, l->perm));
    l->perm_epoch = l->epoch;
    l->perm_ok = 1;
    l->n_perms++;
    return CG_OK;
}

/* Tests only: declared where used (tests/test_loader.c). */
int64_t cg__loader_permutations(const cg_loader *l) { return l ? l->n_perms : 0; }

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
    l->pending = -1;
    if (opts->shuffle) {
        l->perm = malloc((size_t)(ds->n ? ds->n : 1) * sizeof *l->perm);
        if (!l->perm) {
            free(l);
            return CG_FAIL(CG_E_OOM, "cg_loader_create: out of memory for a %lld-entry permutation",
                           (long long)ds->n);
        }
    }
    *out = l; /* epoch 0, position 0; its permutation is drawn by the first cg_loader_next */
    return CG_OK;
}

static void pf_release(cg_loader *l) {
    int dev = l->o.device.index;
    for (int i = 0; i < 2; i++) {
        pf_slot *s = &l->slot[i];
        /* host-wait the uploads: pinned memory and device blocks are then free to go */
        if (s->recorded) (void)l->be->event_sync(dev, s->ev);
        cg_tensor_release(s->dx);
        cg_tensor_release(s->dy);
        l->be->pinned_free(dev, s->hx);
        l->be->pinned_free(dev, s->hy);
        l->be->event_free(dev, s->ev);
        memset(s, 0, sizeof *s);
    }
    l->pending = -1;
}

void cg_loader_free(cg_loader *l) {
    if (!l) return;
    if (l->pf == 1) pf_release(l);
    free(l->perm);
    free(l);
}

/* Drops slot s's batch: the compute stream waits for its upload first, so the device
 * blocks go back to the stream-ordered allocator only once the copy cannot touch them. */
static void pf_drop(cg_loader *l, pf_slot *s) {
    if (!s->dx && !s->dy) return;
    int dev = l->o.device.index;
    if (s->recorded && l->be->wait_event(dev, s->ev) != CG_OK && l->be->event_sync(dev, s->ev) == CG_OK)
        s->recorded = 0;
    cg_tensor_release(s->dx);
    cg_tensor_release(s->dy);
    s->dx = s->dy = NULL;
    if (l->pending == (int)(s - l->slot)) l->pending = -1;
}

cg_status cg_loader_set_epoch(cg_loader *l, uint64_t epoch) {
    CG_ARG_NOT_NULL(l, "cg_loader_set_epoch");
    l->epoch = epoch;
    l->pos = 0;
    /* a batch prefetched for (epoch, 0) stays valid: the permutation is fixed by (seed, epoch) */
    if (l->pending >= 0 && (l->slot[l->pending].epoch != l->epoch || l->slot[l->pending].pos != 0))
        pf_drop(l, &l->slot[l->pending]);
    return CG_OK;
}

uint64_t cg_loader_epoch(const cg_loader *l) { return l ? l->epoch : 0; }

int64_t cg_loader_num_batches(const cg_loader *l) {
    if (!l) return 0;
    int64_t b = l->o.batch_size, n = l->ds->n;
    return l->o.drop_last ? n / b : (n + b - 1) / b;
}

/* Rows perm[start..start+b) (or start.. without perm) of src (contiguous CPU, (N, ...))
 * into dst, row bytes each. */
static void gather_rows(const cg_tensor *src, const int64_t *perm, int64_t start, int64_t b, size_t row, void *dst) {
    if (row == 0) return;
    const char *s = cg__ptr(src);
    char *d = dst;
    for (int64_t i = 0; i < b; i++) {
        int64_t r = perm ? perm[start + i] : start + i;
        memcpy(d + (size_t)i * row, s + (size_t)r * row, row);
    }
}

static size_t row_bytes(const cg_tensor *src) {
    return src->shape[0] ? cg_tensor_nbytes(src) / (size_t)src->shape[0] : 0;
}

/* Rows of src into a new (b, ...) tensor on dev (synchronous path). */
static cg_status gather(const cg_tensor *src, const int64_t *perm, int64_t start, int64_t b, cg_device dev,
                        cg_tensor **out) {
    int64_t shape[CG_MAX_DIMS];
    memcpy(shape, src->shape, sizeof shape);
    shape[0] = b;
    cg_tensor *t;
    CG_TRY(cg__tensor_new(shape, src->ndim, src->dtype, CG_CPU, &t));
    gather_rows(src, perm, start, b, row_bytes(src), cg_tensor_data(t));
    cg_status st = cg__move_fresh(&t, dev);
    if (st != CG_OK) return st;
    *out = t;
    return CG_OK;
}

static void pf_setup(cg_loader *l, const cg_backend *be);

/* Decides once whether this loader prefetches, and sets up the slots if so. Fails only
 * when the device itself is unusable; missing pinned memory means the synchronous path. */
static cg_status pf_init(cg_loader *l) {
    if (l->pf) return CG_OK;
    l->pf = -1;
    if (l->o.device.type == CG_DEVICE_CPU || l->o.no_prefetch || l->ds->n == 0) return CG_OK;
    const cg_backend *be = cg__backend(l->o.device);
    if (!be) {
        l->pf = 0; /* undecided: ask again next time */
        return CG_E_DEVICE; /* cg__backend recorded why */
    }
    pf_setup(l, be);
    return CG_OK;
}

/* Slots for backend be; leaves l->pf at -1 when be lacks the entries or memory is short. */
static void pf_setup(cg_loader *l, const cg_backend *be) {
    l->pf = -1;
    if (!be->upload_async || !be->pinned_alloc || !be->pinned_free || !be->event_create || !be->event_free ||
        !be->wait_event || !be->event_sync)
        return;
    l->be = be;
    l->row_x = row_bytes(l->ds->x);
    l->row_y = l->ds->y ? row_bytes(l->ds->y) : 0;
    size_t rows = (size_t)(l->o.batch_size < l->ds->n ? l->o.batch_size : l->ds->n);
    int dev = l->o.device.index;
    cg_status st = CG_OK;
    for (int i = 0; i < 2 && st == CG_OK; i++) {
        pf_slot *s = &l->slot[i];
        st = be->event_create(dev, &s->ev);
        if (st == CG_OK) st = be->pinned_alloc(dev, rows * l->row_x, &s->hx);
        if (st == CG_OK) st = be->pinned_alloc(dev, rows * l->row_y, &s->hy);
    }
    l->pf = 1;
    if (st != CG_OK) { /* e.g. the pinned-memory limit: fall back to synchronous copies */
        pf_release(l);
        l->pf = -1;
        l->be = NULL;
    }
}

cg_status cg__loader_use_backend(cg_loader *l, const cg_backend *be) {
    CG_ARG_NOT_NULL(l, "cg__loader_use_backend");
    CG_ARG_NOT_NULL(be, "cg__loader_use_backend");
    if (l->pf) return CG_FAIL(CG_E_INVALID, "cg__loader_use_backend: call it before the first cg_loader_next");
    if (l->ds->n == 0) return CG_OK;
    pf_setup(l, be);
    if (l->pf != 1) return CG_FAIL(CG_E_INVALID, "cg__loader_use_backend: backend lacks upload entries or memory");
    return CG_OK;
}

/* Gathers the batch at (epoch, pos) of b rows into slot `turn` and issues its upload. */
static cg_status pf_issue(cg_loader *l, int64_t b) {
    int dev = l->o.device.index;
    pf_slot *s = &l->slot[l->turn];
    CG_TRY(need_perm(l));
    pf_drop(l, s);
    if (s->recorded) { /* the pinned buffers may still be read by the slot's last upload */
        CG_TRY(l->be->event_sync(dev, s->ev));
        s->recorded = 0;
    }
    const cg_tensor *src[2] = {l->ds->x, l->ds->y};
    void *host[2] = {s->hx, s->hy};
    size_t row[2] = {l->row_x, l->row_y};
    cg_tensor *dst[2] = {NULL, NULL};
    cg_status st = CG_OK;
    for (int k = 0; k < 2 && st == CG_OK && src[k]; k++) {
        int64_t shape[CG_MAX_DIMS];
        memcpy(shape, src[k]->shape, sizeof shape);
        shape[0] = b;
        gather_rows(src[k], l->perm, l->pos, b, row[k], host[k]);
        st = cg__tensor_new(shape, src[k]->ndim, src[k]->dtype, l->o.device, &dst[k]);
        if (st == CG_OK) st = l->be->upload_async(dev, cg__ptr(dst[k]), host[k], (size_t)b * row[k], s->ev);
        if (st == CG_OK) s->recorded = 1;
    }
    s->dx = dst[0];
    s->dy = dst[1];
    if (st != CG_OK) {
        pf_drop(l, s); /* an x upload may be in flight: the drop orders the blocks after it */
        return st;
    }
    s->epoch = l->epoch;
    s->pos = l->pos;
    l->pending = l->turn;
    l->turn ^= 1;
    return CG_OK;
}

/* Rows in the batch at the current position, 0 at the end of the epoch. */
static int64_t batch_rows(const cg_loader *l) {
    int64_t left = l->ds->n - l->pos;
    int64_t b = left < l->o.batch_size ? left : l->o.batch_size;
    return (b == 0 || (l->o.drop_last && b < l->o.batch_size)) ? 0 : b;
}

/* Issues the upload of the batch at the current position, if there is one. Errors are
 * dropped here: the next cg_loader_next redoes the batch and reports them. */
static void pf_ahead(cg_loader *l) {
    int64_t b = batch_rows(l);
    if (b <= 0) return;
    char saved[1024]; /* a dropped failure must not replace the message of the caller's last one */
    snprintf(saved, sizeof saved, "%s", cg_last_error());
    if (pf_issue(l, b) != CG_OK) cg__restore_error(saved);
}

cg_status cg_loader_next(cg_loader *l, cg_tensor **x, cg_tensor **y) {
    CG_ARG_NOT_NULL(l, "cg_loader_next");
    CG_ARG_NOT_NULL(x, "cg_loader_next");
    CG_TRY(pf_init(l));
    int64_t b = batch_rows(l);
    if (b == 0) {
        *x = NULL;
        if (y) *y = NULL;
        l->epoch++;
        l->pos = 0;
        if (l->pf == 1) pf_ahead(l); /* the next epoch's first batch */
        return CG_OK;
    }
    CG_TRY(need_perm(l));
    cg_tensor *bx = NULL, *by = NULL;
    if (l->pf == 1) {
        if (l->pending >= 0 && (l->slot[l->pending].epoch != l->epoch || l->slot[l->pending].pos != l->pos))
            pf_drop(l, &l->slot[l->pending]);
        if (l->pending < 0) CG_TRY(pf_issue(l, b)); /* nothing prefetched: upload it now */
        pf_slot *s = &l->slot[l->pending];
        cg_status st = l->be->wait_event(l->o.device.index, s->ev); /* compute stream waits for the copy */
        if (st != CG_OK) {
            pf_drop(l, s);
            return st;
        }
        bx = s->dx;
        by = s->dy;
        s->dx = s->dy = NULL;
        l->pending = -1;
        l->pos += b;
        pf_ahead(l); /* batch k+1 transfers while batch k computes */
    } else {
        CG_TRY(gather(l->ds->x, l->perm, l->pos, b, l->o.device, &bx));
        if (l->ds->y) {
            cg_status s = gather(l->ds->y, l->perm, l->pos, b, l->o.device, &by);
            if (s != CG_OK) {
                cg_tensor_release(bx);
                return s;
            }
        }
        l->pos += b;
    }
    *x = cg__autorelease(bx);
    if (y) *y = by ? cg__autorelease(by) : NULL;
    else cg_tensor_release(by);
    return CG_OK;
}
