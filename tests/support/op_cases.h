/* The op-case table: for every op in src/ops.def, cases that build random inputs (odd
 * shapes, broadcasting, transposes, axis/keepdim, options) as host doubles, apply the op
 * through the public API, and compute a float64 reference with plain loops.
 *
 * Inputs live on the host so the same instance can be built in any dtype on any device:
 * test_ops compares against the reference, test_gradcheck perturbs the host values, and
 * a GPU suite can run one instance on the CPU and on CUDA and compare. */
#ifndef CGT_OP_CASES_H
#define CGT_OP_CASES_H

#include "cgt.h"

#define CGT_MAX_IN 5

enum cgt_arg_kind {
    CGT_ARG_FLOAT = 0, /* built in the instance's float dtype */
    CGT_ARG_I64,       /* class labels */
    CGT_ARG_I32,
};

/* Case flags. */
enum {
    CGT_NO_NODE = 1u << 0, /* the output is not recorded as this op (e.g. dropout in eval mode) */
};

typedef struct cgt_shape {
    int ndim;
    int64_t d[4];
} cgt_shape;

typedef struct cgt_arg {
    int present; /* 0: the op gets NULL here (optional gamma/beta, running stats) */
    int kind;
    int diff;    /* differentiable: gets requires_grad and a gradient check */
    int ndim;
    int64_t shape[CG_MAX_DIMS];
    double *v;   /* numel values, malloc'd */
} cgt_arg;

typedef struct cgt_case cgt_case;

/* One instance of a case with concrete random values. */
typedef struct cgt_inst {
    const cgt_case *c;
    int n_in;
    cgt_arg in[CGT_MAX_IN];
    uint64_t seed, offset; /* dropout stream: fixed per instance so every run draws one mask */
} cgt_inst;

typedef struct cgt_ref {
    int ndim;
    int64_t shape[CG_MAX_DIMS];
    double *v; /* malloc'd */
} cgt_ref;

struct cgt_case {
    const char *op;   /* cg_op_name() of the op under test */
    const char *name; /* what the case covers */
    void (*make)(const cgt_case *c, cgt_rand *r, cgt_inst *I);
    cg_status (*apply)(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out);
    void (*ref)(const cgt_inst *I, cgt_ref *o);
    cgt_shape s[3]; /* input shapes */
    int ip[4];      /* integer options (axis, keepdim, transposes, reduction, ...) */
    double dp[4];   /* real options (alpha, eps, p, label smoothing, ...) */
    double tol_mul; /* widens the value tolerance (0 = 1) */
    unsigned flags;
};

extern const cgt_case cgt_cases[];
extern const int cgt_n_cases;

/* Random instance of case c with values representable in dt. */
void cgt_inst_make(const cgt_case *c, cgt_rand *r, cg_dtype dt, cgt_inst *I);
void cgt_inst_free(cgt_inst *I);
int64_t cgt_arg_numel(const cgt_arg *a);
/* Builds the inputs (absent ones NULL) in dt on dev; diff inputs get requires_grad when grad. */
void cgt_inst_tensors(const cgt_inst *I, cg_dtype dt, cg_device dev, int grad, cg_tensor **t);
void cgt_tensors_release(cg_tensor **t, int n);
/* Builds the inputs and applies the op; returns its status (inputs released unless in_out). */
cg_status cgt_inst_run(const cgt_inst *I, cg_dtype dt, cg_device dev, int grad, cg_tensor **in_out,
                       cg_tensor **out);
void cgt_ref_compute(const cgt_inst *I, cgt_ref *o);
void cgt_ref_free(cgt_ref *o);
/* Index of the first case for an op name, or -1. */
int cgt_case_find(const char *op);

#endif
