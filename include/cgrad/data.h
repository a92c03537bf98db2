/* cgrad: datasets held in memory, a batching loader with seeded per-epoch shuffling, and
 * feature standardisation.
 *
 * A dataset is a pair of tensors sharing their first dimension (x: (N, ...), y: (N, ...)
 * or none). The loader draws a permutation per epoch from Philox (seed, epoch), gathers
 * each batch on the host and hands it to the caller on the loader's device as new tensors,
 * so training code only ever sees caller-owned batches on the device it asked for. */
#ifndef CGRAD_DATA_H
#define CGRAD_DATA_H

#include "tensor.h"

CG_EXTERN_C_BEGIN

typedef struct cg_dataset cg_dataset;

/* Wraps x (N, ...) and optional y (N, ...); keeps contiguous host copies (tensors on a
 * GPU or with strides are copied once, CPU contiguous ones are shared: do not modify
 * them while the dataset lives). Fails when N differs or x is a 0-d tensor. */
CG_API cg_status cg_dataset_from_tensors(cg_tensor *x, cg_tensor *y, cg_dataset **out);
CG_API void cg_dataset_free(cg_dataset *ds); /* NULL is fine */
CG_API int64_t cg_dataset_len(const cg_dataset *ds);
/* The dataset's tensors (borrowed; y may be NULL). */
CG_API cg_tensor *cg_dataset_x(const cg_dataset *ds);
CG_API cg_tensor *cg_dataset_y(const cg_dataset *ds);

typedef struct cg_loader_opts {
    int64_t batch_size; /* > 0 */
    int shuffle;        /* 0: dataset order every epoch */
    uint64_t seed;      /* shuffle stream: epoch e uses the permutation drawn from (seed, e) */
    int drop_last;      /* 1: skip a last batch smaller than batch_size */
    cg_device device;   /* where batches are produced */
    int no_prefetch;    /* 1: gather and copy each batch inside cg_loader_next, synchronously.
                         * 0 (default): on a GPU the next batch is gathered into pinned host
                         * memory and uploaded on a copy stream while the current one computes;
                         * no effect on the CPU. Batches and their order are the same either way. */
} cg_loader_opts;

typedef struct cg_loader cg_loader;

/* The loader keeps a reference to nothing but ds: ds must outlive it. With prefetch on a
 * GPU it also holds two pinned staging buffers (2 x min(batch_size, N) samples of x and y)
 * and up to one uploaded batch not yet handed out; cg_loader_free waits for uploads in
 * flight and returns all of it. */
CG_API cg_status cg_loader_create(const cg_dataset *ds, const cg_loader_opts *opts, cg_loader **out);
CG_API void cg_loader_free(cg_loader *l); /* NULL is fine */

/* Next batch of the current epoch: *x (B, ...) and *y (B, ...) (NULL when the dataset has
 * no y) as new tensors the caller owns. At the end of the epoch returns CG_OK with *x and *y
 * set to NULL and moves to the next epoch (new permutation when shuffling).
 * With prefetch (see no_prefetch) the batch was uploaded during the previous call; the
 * device's compute stream is made to wait for that upload (the host does not), and the
 * upload of the following batch is issued before returning. A failed prefetch is not
 * reported by the call that issued it: the next call redoes that batch and returns the
 * error if it recurs. */
CG_API cg_status cg_loader_next(cg_loader *l, cg_tensor **x, cg_tensor **y);
/* Restart at the beginning of epoch `epoch` (its permutation is fixed by seed and epoch). */
CG_API cg_status cg_loader_set_epoch(cg_loader *l, uint64_t epoch);
CG_API uint64_t cg_loader_epoch(const cg_loader *l);
/* Batches per epoch (drop_last counted). */
CG_API int64_t cg_loader_num_batches(const cg_loader *l);
/* The permutation of epoch `epoch` for n items into perm[0..n): Fisher-Yates, i from n-1
 * down to 1 swaps perm[i] with perm[r % (i + 1)], where draw k = n-1-i takes
 * r = (w[2k+1] << 32) | w[2k] from the Philox stream (seed, offset epoch << 32) of
 * philox.h. Exposed for tests and for reproducing an order elsewhere. */
CG_API cg_status cg_permutation(uint64_t seed, uint64_t epoch, int64_t n, int64_t *perm);

/* Standardisation: per-feature statistics over dim 0 of x (N, ...), f32 or f64, any device.
 * mean and std get x's shape without dim 0 and x's dtype, on x's device; std is the
 * population standard deviation, with features of zero spread given std 1 (so applying
 * maps them to 0 rather than NaN). Fails with CG_E_NUMERIC on NaN/Inf in x. */
CG_API cg_status cg_standardize_fit(const cg_tensor *x, cg_tensor **mean, cg_tensor **std);
/* x <- (x - mean) / std in place, with mean/std from cg_standardize_fit. */
CG_API cg_status cg_standardize_apply(cg_tensor *x, const cg_tensor *mean, const cg_tensor *std);

CG_EXTERN_C_END
#endif
