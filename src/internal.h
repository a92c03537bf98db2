/* cgrad internals: tensor and storage layout, the op table, error helpers.
 * Not installed; backends and tests include it. */
#ifndef CG_INTERNAL_H
#define CG_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

#include "cgrad.h"

#define CG_MAX_IN 5
#define CG_MAX_AUX 2

/* ---- errors ---- */
cg_status cg__set_error(cg_status s, const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Record a message and return the status: `return CG_FAIL(CG_E_SHAPE, "...", ...);` */
#define CG_FAIL(status, ...) cg__set_error((status), __FILE__, __LINE__, __VA_ARGS__)
/* Put back a message saved from cg_last_error() (after a failure that was handled). */
void cg__restore_error(const char *msg);
/* Propagate a failing status (its message is already recorded). */
#define CG_TRY(expr)                                                                                          \
    do {                                                                                                      \
        cg_status cg__s = (expr);                                                                             \
        if (cg__s != CG_OK) return cg__s;                                                                     \
    } while (0)
/* Jump to `fail` with st set: needs `cg_status st` and a `fail:` label for cleanup. */
#define CG_CHECK_GOTO(expr)                                                                                   \
    do {                                                                                                      \
        st = (expr);                                                                                          \
        if (st != CG_OK) goto fail;                                                                           \
    } while (0)
#define CG_ARG_NOT_NULL(p, fn)                                                                                \
    do {                                                                                                      \
        if (!(p)) return CG_FAIL(CG_E_INVALID, "%s: argument '%s' is NULL", (fn), #p);                       \
    } while (0)

/* ---- storage and tensors ---- */
typedef struct cg_storage {
    atomic_int refcount;
    cg_device dev;
    void *data;
    size_t nbytes;
    atomic_uint_fast64_t version; /* bumped by in-place writes through any view */
} cg_storage;

struct cg_node;

struct cg_tensor {
    atomic_int refcount;
    cg_storage *st;
    int64_t offset; /* in elements */
    cg_dtype dtype;
    int ndim;
    int64_t shape[CG_MAX_DIMS];
    int64_t strides[CG_MAX_DIMS]; /* in elements */
    int requires_grad;            /* set by the user on leaves */
    cg_tensor *grad;              /* accumulated gradient of a leaf (owned) */
    struct cg_node *node;         /* grad_fn: the op that produced this tensor (owned) */
};

/* CG_OK when shape is a valid geometry for dt: ndim in range, no negative dims, and no
 * stride or byte size overflows int64. fn names the caller in the message. */
cg_status cg__check_shape(const int64_t *shape, int ndim, cg_dtype dt, const char *fn);
/* Shape and strides of t with dims d0 and d1 swapped. */
void cg__swap_dims(const cg_tensor *t, int d0, int d1, int64_t *shape, int64_t *strides);
/* New contiguous tensor, not registered with any scope (internal temporaries). */
cg_status cg__tensor_new(const int64_t *shape, int ndim, cg_dtype dt, cg_device dev, cg_tensor **out);
cg_status cg__tensor_new_like(const cg_tensor *t, cg_tensor **out);
/* New tensor header over the same storage (retains it), with the given geometry. */
cg_status cg__tensor_view(const cg_tensor *t, const int64_t *shape, const int64_t *strides, int ndim,
                          int64_t offset, cg_tensor **out);
/* Alias of t's storage and geometry without graph links (for saving in nodes). */
cg_status cg__tensor_alias(const cg_tensor *t, cg_tensor **out);
/* A new contiguous tensor (caller-owned, no scope) holding t's values in dtype dt on dev. */
cg_status cg__tensor_copy_to(const cg_tensor *t, cg_dtype dt, cg_device dev, cg_tensor **out);
/* Contiguous version of t on the same device (retained t itself when already contiguous). */
cg_status cg__tensor_contiguous(const cg_tensor *t, cg_tensor **out);
void cg__bump_version(cg_tensor *t);
/* CG_E_STATE when t is a leaf that requires grad and grad mode is on: in-place writes to
 * parameters belong under no_grad. */
cg_status cg__check_leaf_write(const cg_tensor *t, const char *fn);
int64_t cg__numel(const int64_t *shape, int ndim);
void cg__contiguous_strides(const int64_t *shape, int ndim, int64_t *strides);
int cg__same_shape(const cg_tensor *a, const cg_tensor *b);
/* "(64, 784)" into buf; returns buf. */
const char *cg__shape_str(const int64_t *shape, int ndim, char *buf, size_t n);
/* Register a tensor handed to the caller with the innermost open scope, if any. */
cg_tensor *cg__autorelease(cg_tensor *t);
/* Typed element pointer helpers for CPU code. */
static inline void *cg__ptr(const cg_tensor *t) {
    return (char *)t->st->data + (size_t)t->offset * cg_dtype_size(t->dtype);
}
static inline int cg__is_float(cg_dtype dt) { return dt == CG_F32 || dt == CG_F64; }
static inline int cg__same_device(cg_device a, cg_device b) { return a.type == b.type && a.index == b.index; }

/* ---- the op table ---- */
#define SAVE_IN(i) (1u << (i))
#define SAVE_OUT (1u << 7)

typedef enum cg_op {
#define CG_OP(ID, name, n_in, n_aux, saves, shape, bw) CG_OP_##ID,
#include "ops.def"
#undef CG_OP
    CG_OP_COUNT
} cg_op;

/* Scalar parameters of an op; each op reads the fields it documents. */
typedef struct cg_op_params {
    int trans_a, trans_b;      /* matmul */
    double alpha, beta;        /* scale: alpha*x+beta; leaky_relu: alpha = slope */
    int axis, keepdim;         /* sum, mean (axis already normalised, or CG_ALL_AXES) */
    int approximate;           /* gelu: cg_gelu_approx */
    int act;                   /* linear: cg_linear_act applied after x W^T + b */
    double eps;                /* layernorm, batchnorm */
    double momentum;           /* batchnorm running-stat update */
    int training;              /* batchnorm: batch statistics (1) or running ones (0) */
    double p;                  /* dropout probability */
    uint64_t seed, offset;     /* dropout Philox stream */
    const uint64_t *offset_shift; /* dropout in a CUDA graph being recorded: device word the kernel adds
                                   * to offset (each replay's advance of the stream); else NULL */
    cg_reduction reduction;    /* losses */
    double label_smoothing;    /* softmax_ce */
    int64_t view_shape[CG_MAX_DIMS]; /* reshape: target shape; slice_rows: [start, end] */
    int view_ndim;
    int dim0, dim1;            /* transpose */
} cg_op_params;

/* One op application: the tensors a backend kernel reads and writes. Inputs are
 * contiguous except for view ops; optional inputs may be NULL. */
typedef struct cg_op_call {
    cg_op op;
    const cg_op_params *p;
    cg_tensor *in[CG_MAX_IN];
    int n_in;
    cg_tensor *out;
    cg_tensor *aux[CG_MAX_AUX];
    int n_aux;
} cg_op_call;

/* A recorded application in the dynamic graph; owned by its output tensor. */
typedef struct cg_node {
    cg_op op;
    cg_op_params p;
    cg_tensor *in[CG_MAX_IN]; /* strong refs: keep the graph (and saved inputs) alive */
    uint64_t in_version[CG_MAX_IN];
    int n_in;
    cg_tensor *aux[CG_MAX_AUX];
    int n_aux;
    cg_tensor *out;           /* alias of the output's storage (no node), for rules reading it */
    uint64_t out_version;
    int released;             /* saved tensors dropped after backward */
    int handed_on;            /* bw_softmax_ce gave its saved gradient away (released too) */
    /* scratch used by one cg_backward() */
    cg_tensor *gacc;
    int mark;
    int gacc_ones; /* gacc is cg_backward's seed (all ones, known on the host), and this
                    * backward frees the saved tensors after it (no retain_graph) */
} cg_node;

typedef cg_status (*cg_shape_fn)(const cg_op_call *c, int64_t *shape, int *ndim, cg_dtype *dt);
typedef cg_status (*cg_backward_rule)(cg_node *n, const cg_tensor *gout, cg_tensor **gin);

typedef struct cg_op_info {
    const char *name;
    int n_in, n_aux;
    unsigned saves;
    cg_shape_fn shape;
    cg_backward_rule backward;
} cg_op_info;

extern const cg_op_info cg_op_table[CG_OP_COUNT];

/* Run an op: check, infer shape, dispatch forward, record the node. ops.c */
/* Device-side scalar bookkeeping (backend reduce_to / count_correct, see backend.h): dst is
 * one f64 element on the input's device; nothing waits for the device. */
cg_status cg__reduce_to(cg_tensor *dst, const cg_tensor *x, double alpha, int square, int accumulate);
cg_status cg__count_correct(cg_tensor *dst, const cg_tensor *pred, const cg_tensor *target, int accumulate);
/* backend copy_gated: dst = src when the f64 scalar gate is finite; contiguous, one dtype/size */
cg_status cg__copy_gated(cg_tensor *dst, const cg_tensor *src, const cg_tensor *gate);
cg_status cg__f64_zeros(cg_device dev, int64_t n, cg_tensor **out); /* n f64 zeros on dev */
cg_status cg__read_f64(const cg_tensor *t, double *out, int64_t n); /* first n of contiguous f64; waits */

cg_status cg__apply(cg_op op, const cg_op_params *p, const cg_tensor *const *in, int n_in, cg_tensor **out);

/* cg_dropout with cg_op_params.offset_shift (NULL: cg_dropout itself) */
cg_status cg__dropout(const cg_tensor *x, double p, int training, cg_rng *rng, const uint64_t *offset_shift,
                      cg_tensor **out);

/* Inputs whose gradient the engine wants: gin[i] != NULL on entry to a backward rule
 * means "allocate and write it"; rules set gin[i] to a new tensor. */
int cg__needs_grad(const cg_tensor *t);

#endif
