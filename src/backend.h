/* The backend interface: one table of function pointers per device type.
 *
 * Kernels receive contiguous tensors on the backend's device, with shapes, dtypes and
 * options already validated by ops.c; they check only what depends on the data (a label
 * out of range). Forward kernels write (=) c->out and c->aux. Backward kernels write (=)
 * gin[i] for each non-NULL gin[i]; gin[i] has the shape of input i (broadcast inputs get
 * their gradient reduced), so the engine only has to add it into the accumulated gradient. */
#ifndef CG_BACKEND_H
#define CG_BACKEND_H

#include "internal.h"
#include "optim_math.h"

typedef cg_status (*cg_fwd_fn)(const cg_op_call *c);
typedef cg_status (*cg_bwd_fn)(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin);

typedef enum cg_copy_kind { CG_COPY_H2D, CG_COPY_D2H, CG_COPY_D2D } cg_copy_kind;
typedef enum cg_rand_dist { CG_RAND_UNIFORM, CG_RAND_NORMAL } cg_rand_dist;

typedef enum cg_optim_kind { CG_OPTIM_SGD, CG_OPTIM_ADAM, CG_OPTIM_ADAMW } cg_optim_kind;

/* One optimizer update over flat, contiguous, same-length f32/f64 buffers.
 * SGD (PyTorch semantics): g = grad + wd*param; buf = momentum*buf + (1-dampening)*g
 *   (buf = g on step 1); g = nesterov ? g + momentum*buf : buf; param -= lr*g.
 * Adam: g = grad + wd*param; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *   param -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps).
 * AdamW: param *= 1 - lr*wd first, then Adam without the wd term. */
typedef struct cg_optim_call {
    cg_optim_kind kind;
    cg_tensor *param, *grad;
    cg_tensor *m, *v; /* SGD uses m as the momentum buffer; NULL when momentum == 0 */
    double lr, momentum, dampening, weight_decay, beta1, beta2, eps;
    int nesterov;
    int64_t step; /* 1 on the first update */
    /* Device-side gating, so that a training step never waits for the host (both optional,
     * f64 scalars on the parameter's device, read by the kernel itself):
     * gate: when *gate is not finite the update is skipped, nothing is written (the
     *   training loop's sticky guard: it absorbs 0 * loss, so one NaN loss poisons it);
     * clip_sumsq: the squared global gradient norm s; a non-finite s skips the update too;
     *   when clip_max > 0 and sqrt(s) > clip_max, every gradient element is first scaled by
     *   clip_max / (sqrt(s) + 1e-6) and rounded to the parameter dtype, exactly as a
     *   separate in-place scaling pass (torch.nn.utils.clip_grad_norm_) would. */
    const cg_tensor *gate, *clip_sumsq;
    double clip_max;
    /* A CUDA graph being recorded (src/train/step_graph.c): device memory holding the
     * cg_optim_coef (optim_math.h) each replay writes before it runs; the kernel reads the
     * coefficients there instead of those of this call (NULL: none, always on the CPU). */
    const void *coef_dev;
} cg_optim_call;

/* The coefficients of a call's update (computed on the host: both backends, and what a CUDA
 * graph's replay writes to coef_dev). */
static inline cg_optim_coef cg_optim_call_coef(const cg_optim_call *c) {
    return cg_optim_coef_make((int)c->kind, c->lr, c->momentum, c->dampening, c->weight_decay, c->beta1, c->beta2,
                              c->eps, c->nesterov, c->step);
}

typedef struct cg_backend {
    const char *name;
    cg_device_type type;
    /* memory: nbytes may be 0 (return a non-NULL dummy or NULL, free must accept it) */
    cg_status (*alloc)(int dev, size_t nbytes, void **ptr);
    void (*free)(int dev, void *ptr);
    cg_status (*memcpy)(int dev, void *dst, const void *src, size_t nbytes, cg_copy_kind kind);
    /* optional (NULL: not supported): dst on device dst_dev <- src on src_dev, two devices of
     * this backend; no host wait, ordered as if both devices' work were one stream */
    cg_status (*memcpy_peer)(int dst_dev, void *dst, int src_dev, const void *src, size_t nbytes);
    /* dst <- src elementwise, any strides, converting dtype (all dtypes) */
    cg_status (*copy_strided)(cg_tensor *dst, const cg_tensor *src);
    cg_status (*fill)(cg_tensor *t, double value); /* contiguous t, any dtype */
    cg_status (*rand)(cg_tensor *t, cg_rand_dist dist, double a, double b, uint64_t seed, uint64_t offset);
    cg_status (*axpy)(cg_tensor *y, double alpha, const cg_tensor *x); /* y += alpha*x, contiguous */
    cg_status (*scal)(cg_tensor *y, double alpha);                     /* y *= alpha */
    /* dst (=, or += when accumulate) alpha * sum(x) (square: sum(x^2)), in double; dst is one
     * f64 element on x's device, contiguous x is f32/f64. No host wait. alpha multiplies even
     * when it is 0, so a non-finite sum makes dst NaN (the training loop's sticky guard). */
    cg_status (*reduce_to)(cg_tensor *dst, const cg_tensor *x, double alpha, int square, int accumulate);
    /* dst (=, or += when accumulate) the number of rows of pred that match target, as an f64
     * element on pred's device. pred (N, C), C > 1: the row's first maximum (a NaN in column 0
     * wins; other NaNs are skipped) equals target; pred (N) or (N, 1): (pred > 0) == (target
     * > 0.5). target: N elements of any dtype. No host wait. */
    cg_status (*count_correct)(cg_tensor *dst, const cg_tensor *pred, const cg_tensor *target, int accumulate);
    /* dst = src (contiguous, same dtype and size) when the f64 scalar *gate on their device is
     * finite; otherwise dst is left as it is. No host wait. (A training step's copy of what
     * it is about to change, kept from the last step before the sticky gate was poisoned.) */
    cg_status (*copy_gated)(cg_tensor *dst, const cg_tensor *src, const cg_tensor *gate);
    cg_status (*optim)(const cg_optim_call *c);
    cg_status (*sync)(int dev);
    /* ---- asynchronous host->device uploads (optional: all NULL on the CPU backend, where
     * the data loader copies synchronously). Used by the loader to upload batch k+1 while
     * batch k computes. Events are opaque, created by event_create and reusable: each
     * upload_async re-records the one it is given. ---- */
    cg_status (*pinned_alloc)(int dev, size_t nbytes, void **ptr); /* page-locked host memory; 0 bytes: NULL */
    void (*pinned_free)(int dev, void *ptr);                       /* NULL is fine; caller syncs first */
    cg_status (*event_create)(int dev, void **event);
    void (*event_free)(int dev, void *event); /* NULL is fine; the event must be complete */
    /* dst (device, from alloc) <- src (from pinned_alloc), nbytes, on a copy stream that
     * first waits for everything queued on the compute stream so far (dst may be a block
     * the stream-ordered allocator just recycled); then records `event`. Returns without
     * waiting. On failure no copy is left in flight. src must stay untouched until
     * event_sync(event); dst must not be read by compute work before wait_event(event). */
    cg_status (*upload_async)(int dev, void *dst, const void *src_pinned, size_t nbytes, void *event);
    cg_status (*wait_event)(int dev, void *event); /* compute stream waits for event; no host wait */
    cg_status (*event_sync)(int dev, void *event); /* host waits for event */
    /* ---- graphs (optional: all NULL on the CPU backend, where work runs as it is called).
     * graph_begin: the calling thread's later work on dev is recorded into a graph instead
     * of run, until graph_end, which fails (CG_E_UNSUPPORTED, with the reason) when something
     * in it cannot be recorded (a host wait); graph_free in every case. graph_launch queues
     * the recorded work on the device's stream, in order with all other work. Scalars that
     * change between launches go in device memory the recorded kernels read, written before
     * each launch with set_bytes (at most 256 bytes, by value: no host buffer to keep). ---- */
    cg_status (*graph_begin)(int dev, void **graph);
    cg_status (*graph_end)(void *graph);
    cg_status (*graph_launch)(void *graph);
    void (*graph_free)(void *graph);
    cg_status (*set_bytes)(int dev, void *dst, const void *src, size_t nbytes);
    const cg_fwd_fn *forward;  /* [CG_OP_COUNT], NULL where unsupported */
    const cg_bwd_fn *backward; /* [CG_OP_COUNT] */
} cg_backend;

/* Tests only: make loader l (before its first cg_loader_next) prefetch through be's upload
 * entries whatever its device, so the prefetch logic can be checked with an emulated
 * asynchronous backend on the CPU. src/data/loader.c */
cg_status cg__loader_use_backend(cg_loader *l, const cg_backend *be);
/* Tests only: how many epoch permutations loader l has drawn so far (each epoch's once). */
int64_t cg__loader_permutations(const cg_loader *l);

/* Backend for a device type, or NULL with an error recorded. */
const cg_backend *cg__backend(cg_device dev);

extern const cg_backend cg_cpu_backend;
#ifdef CG_HAVE_CUDA
extern const cg_backend cg_cuda_backend;
#endif

#endif
