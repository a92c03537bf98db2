/* cgrad: N-d tensors with strides over reference-counted storage on a device.
 *
 * Ownership: every call that hands back a cg_tensor* through an out-parameter gives the
 * caller one reference; release it with cg_tensor_release(). Inside a cg_scope (see
 * autograd.h) new tensors are also released when the scope ends unless cg_keep()'d. */
#ifndef CGRAD_TENSOR_H
#define CGRAD_TENSOR_H

#include "common.h"

CG_EXTERN_C_BEGIN

typedef struct cg_tensor cg_tensor;

/* Counter-based random stream (Philox4x32-10). A plain struct: copy it to fork a stream.
 * Each draw consumes counters from `offset`, so the same (seed, offset) gives the same
 * numbers on every backend. */
typedef struct cg_rng {
    uint64_t seed;
    uint64_t offset; /* in units of 4 x 32-bit Philox outputs */
} cg_rng;

CG_API cg_rng cg_rng_make(uint64_t seed);

/* ---- creation ---- */
CG_API cg_status cg_tensor_empty(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, cg_tensor **out);
CG_API cg_status cg_tensor_zeros(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, cg_tensor **out);
CG_API cg_status cg_tensor_ones(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, cg_tensor **out);
CG_API cg_status cg_tensor_full(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, double value,
                                cg_tensor **out);
/* 1-d tensor [start, start+step, ...] with n elements. */
CG_API cg_status cg_tensor_arange(double start, double step, int64_t n, cg_dtype dt, cg_device dev,
                                  cg_tensor **out);
/* Copies `data` (contiguous, row-major, of dtype dt) into a new tensor. */
CG_API cg_status cg_tensor_from_host(const void *data, const int64_t *shape, int ndim, cg_dtype dt,
                                     cg_device dev, cg_tensor **out);
/* Uniform in [lo, hi) / normal(mean, std), f32 or f64; advances rng->offset. */
CG_API cg_status cg_tensor_rand_uniform(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, double lo,
                                        double hi, cg_rng *rng, cg_tensor **out);
CG_API cg_status cg_tensor_rand_normal(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, double mean,
                                       double std, cg_rng *rng, cg_tensor **out);
/* Fill an existing tensor in place (bumps its version). */
CG_API cg_status cg_tensor_fill_uniform(cg_tensor *t, double lo, double hi, cg_rng *rng);
CG_API cg_status cg_tensor_fill_normal(cg_tensor *t, double mean, double std, cg_rng *rng);
CG_API cg_status cg_tensor_fill(cg_tensor *t, double value);

/* ---- reference counting ---- */
CG_API cg_tensor *cg_tensor_retain(cg_tensor *t);
CG_API void cg_tensor_release(cg_tensor *t); /* NULL is fine */

/* ---- properties ---- */
CG_API int cg_tensor_ndim(const cg_tensor *t);
CG_API int64_t cg_tensor_dim(const cg_tensor *t, int i); /* negative i counts from the end */
CG_API const int64_t *cg_tensor_shape(const cg_tensor *t);
CG_API const int64_t *cg_tensor_strides(const cg_tensor *t); /* in elements */
CG_API int64_t cg_tensor_numel(const cg_tensor *t);
CG_API size_t cg_tensor_nbytes(const cg_tensor *t);
CG_API cg_dtype cg_tensor_dtype(const cg_tensor *t);
CG_API cg_device cg_tensor_device(const cg_tensor *t);
CG_API int cg_tensor_is_contiguous(const cg_tensor *t);
/* Version counter of the storage: bumped by every in-place write. */
CG_API uint64_t cg_tensor_version(const cg_tensor *t);
/* Pointer to the first element for CPU tensors, NULL otherwise (borrowed). */
CG_API void *cg_tensor_data(cg_tensor *t);

/* ---- host transfer ---- */
/* Copies the tensor (any strides) into a contiguous host buffer of exactly nbytes. */
CG_API cg_status cg_tensor_to_host(const cg_tensor *t, void *dst, size_t nbytes);
/* Overwrites the tensor from a contiguous host buffer (in place: bumps the version). */
CG_API cg_status cg_tensor_copy_from_host(cg_tensor *t, const void *src, size_t nbytes);
/* Value of a one-element tensor as double. */
CG_API cg_status cg_tensor_item(const cg_tensor *t, double *value);

/* ---- movement and conversion (new storage, no autograd) ---- */
/* To any device: CPU <-> GPU through pinned staging, GPU <-> GPU device to device; neither
 * waits for the GPU except a copy to the host. */
CG_API cg_status cg_tensor_to(const cg_tensor *t, cg_device dev, cg_tensor **out);
CG_API cg_status cg_tensor_cast(const cg_tensor *t, cg_dtype dt, cg_tensor **out);
CG_API cg_status cg_tensor_clone(const cg_tensor *t, cg_tensor **out);
/* dst <- src elementwise (same shape; dtype and device may differ). In place. */
CG_API cg_status cg_tensor_copy_(cg_tensor *dst, const cg_tensor *src);

/* ---- autograd flags ---- */
CG_API cg_status cg_tensor_set_requires_grad(cg_tensor *t, int requires_grad);
CG_API int cg_tensor_requires_grad(const cg_tensor *t);
/* Accumulated gradient of a leaf, or NULL (borrowed: retain it to keep it). */
CG_API cg_tensor *cg_tensor_grad(const cg_tensor *t);
/* Use `g` (same shape/dtype/device) as the gradient buffer: backward adds into it.
 * Lets a model keep all gradients in one contiguous allocation. NULL detaches. */
CG_API cg_status cg_tensor_set_grad(cg_tensor *t, cg_tensor *g);
/* 1 when the tensor was produced by an op recorded in the graph. */
CG_API int cg_tensor_has_grad_fn(const cg_tensor *t);
/* Name of the op that produced the tensor ("relu"), or NULL for a leaf. */
CG_API const char *cg_tensor_grad_fn_name(const cg_tensor *t);
/* A new tensor sharing storage, cut from the graph (requires_grad 0). */
CG_API cg_status cg_tensor_detach(const cg_tensor *t, cg_tensor **out);

/* Prints shape, dtype, device and up to `max_elems` values to stdout (debugging aid). */
CG_API cg_status cg_tensor_print(const cg_tensor *t, const char *name, int max_elems);

CG_EXTERN_C_END
#endif
