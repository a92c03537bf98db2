/* Op dispatch: validate inputs, infer the output shape, run the backend forward kernel
 * and record a graph node when gradients are wanted. Public op wrappers and views. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

int cg__needs_grad(const cg_tensor *t) { return t && (t->requires_grad || t->node); }

/* Aux tensors an op's forward writes: shape by op; *ndim = -1 when this call needs none. */
static cg_status aux_shape(const cg_op_call *c, int k, int record, int64_t *shape, int *ndim) {
    const cg_tensor *x = c->in[0];
    switch (c->op) {
    case CG_OP_SOFTMAX_CE: /* the gradient, written in the same pass: only when a backward can follow */
        *ndim = record ? 2 : -1;
        shape[0] = x->shape[0];
        shape[1] = x->shape[1];
        return CG_OK;
    case CG_OP_LINEAR: /* the pre-activation, for GELU's backward (ReLU's reads the output) */
        *ndim = record && c->p->act == CG_LINEAR_GELU_TANH ? 2 : -1;
        shape[0] = x->shape[0];
        shape[1] = c->in[1]->shape[0];
        return CG_OK;
    case CG_OP_LAYERNORM:
        *ndim = 1;
        shape[0] = x->shape[x->ndim - 1] ? cg_tensor_numel(x) / x->shape[x->ndim - 1] : 0;
        return CG_OK;
    case CG_OP_BATCHNORM:
        *ndim = 1;
        shape[0] = x->shape[1];
        return CG_OK;
    default:
        return CG_FAIL(CG_E_INTERNAL, "%s: no aux shape for aux %d", cg_op_table[c->op].name, k);
    }
}

static cg_status node_new(cg_op op, const cg_op_params *p, const cg_tensor *const *in, int n_in, cg_tensor *out,
                          cg_tensor *const *aux, int n_aux) {
    cg_node *n = calloc(1, sizeof *n);
    if (!n) return CG_FAIL(CG_E_OOM, "out of host memory recording a graph node");
    cg_status st = cg__tensor_alias(out, &n->out);
    if (st != CG_OK) {
        free(n);
        return st;
    }
    n->op = op;
    n->p = *p;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) {
        n->in[i] = cg_tensor_retain((cg_tensor *)in[i]);
        n->in_version[i] = in[i] ? cg_tensor_version(in[i]) : 0;
    }
    n->n_aux = n_aux;
    for (int i = 0; i < n_aux; i++) n->aux[i] = cg_tensor_retain(aux[i]);
    n->out_version = cg_tensor_version(out);
    out->node = n;
    return CG_OK;
}

static cg_status check_inputs(cg_op op, const cg_tensor *const *in, int n_in) {
    const char *name = cg_op_table[op].name;
    const cg_tensor *x = in[0];
    if (!x) return CG_FAIL(CG_E_INVALID, "%s: input 0 is NULL", name);
    if (!cg__is_float(x->dtype))
        return CG_FAIL(CG_E_DTYPE, "%s: input dtype %s is not supported; ops compute in f32 or f64 (use "
                                   "cg_tensor_cast)", name, cg_dtype_name(x->dtype));
    for (int i = 1; i < n_in; i++) {
        if (!in[i]) continue;
        if (!cg__same_device(in[i]->st->dev, x->st->dev)) {
            char d0[16];
            snprintf(d0, sizeof d0, "%s", cg_device_str(x->st->dev));
            return CG_FAIL(CG_E_DEVICE, "%s: input 0 is on %s but input %d is on %s; move with cg_tensor_to", name, d0,
                           i, cg_device_str(in[i]->st->dev));
        }
        int labels = op == CG_OP_SOFTMAX_CE && i == 1;
        if (!labels && in[i]->dtype != x->dtype)
            return CG_FAIL(CG_E_DTYPE, "%s: input 0 is %s but input %d is %s; cast one with cg_tensor_cast", name,
                           cg_dtype_name(x->dtype), i, cg_dtype_name(in[i]->dtype));
    }
    return CG_OK;
}

cg_status cg__apply(cg_op op, const cg_op_params *p, const cg_tensor *const *in, int n_in, cg_tensor **out) {
    const cg_op_info *info = &cg_op_table[op];
    CG_TRY(check_inputs(op, in, n_in));
    cg_device dev = in[0]->st->dev;
    const cg_backend *be = cg__backend(dev);
    if (!be) return CG_E_DEVICE;
    if (!be->forward[op])
        return CG_FAIL(CG_E_UNSUPPORTED, "%s: not implemented on the %s backend", info->name, be->name);

    cg_status st = CG_OK;
    cg_op_call c = {.op = op, .p = p, .n_in = n_in, .n_aux = info->n_aux};
    cg_tensor *res = NULL;
    int record = 0;
    if (cg_grad_enabled())
        for (int i = 0; i < n_in; i++) record |= cg__needs_grad(in[i]);

    /* kernels get contiguous inputs (CONTIGUOUS itself takes any strides) */
    for (int i = 0; i < n_in; i++) {
        if (!in[i]) continue;
        if (op == CG_OP_CONTIGUOUS)
            c.in[i] = cg_tensor_retain((cg_tensor *)in[i]);
        else
            CG_CHECK_GOTO(cg__tensor_contiguous(in[i], &c.in[i]));
    }
    int64_t shape[CG_MAX_DIMS];
    int ndim;
    cg_dtype dt;
    CG_CHECK_GOTO(info->shape(&c, shape, &ndim, &dt));
    CG_CHECK_GOTO(cg__tensor_new(shape, ndim, dt, dev, &res));
    c.out = res;
    for (int k = 0; k < info->n_aux; k++) {
        int64_t as[CG_MAX_DIMS];
        int an = 0;
        CG_CHECK_GOTO(aux_shape(&c, k, record, as, &an));
        if (an >= 0) CG_CHECK_GOTO(cg__tensor_new(as, an, dt, dev, &c.aux[k]));
    }
    CG_CHECK_GOTO(be->forward[op](&c));
    if (op == CG_OP_BATCHNORM && p->training) {
        if (in[3]) cg__bump_version((cg_tensor *)in[3]);
        if (in[4]) cg__bump_version((cg_tensor *)in[4]);
    }
    if (record) CG_CHECK_GOTO(node_new(op, p, in, n_in, res, c.aux, c.n_aux));
    *out = res;
    res = NULL;
fail:
    for (int i = 0; i < n_in; i++) cg_tensor_release(c.in[i]);
    for (int k = 0; k < info->n_aux; k++) cg_tensor_release(c.aux[k]);
    cg_tensor_release(res);
    return st;
}

/* Public entry: run and hand the result to the caller (and the open scope). */
static cg_status run(cg_op op, const cg_op_params *p, const cg_tensor *const *in, int n_in, cg_tensor **out) {
    if (!out) return CG_FAIL(CG_E_INVALID, "%s: out is NULL", cg_op_table[op].name);
    *out = NULL;
    if (n_in < 1 || !in[0]) return CG_FAIL(CG_E_INVALID, "%s: input 0 is NULL", cg_op_table[op].name);
    CG_TRY(cg__apply(op, p, in, n_in, out));
    cg__autorelease(*out);
    return CG_OK;
}

static cg_status unary(cg_op op, const cg_tensor *x, cg_tensor **out) {
    cg_op_params p = {0};
    return run(op, &p, &x, 1, out);
}

static cg_status binary(cg_op op, const cg_tensor *a, const cg_tensor *b, cg_tensor **out) {
    if (!b) return CG_FAIL(CG_E_INVALID, "%s: input 1 is NULL", cg_op_table[op].name);
    cg_op_params p = {0};
    const cg_tensor *in[2] = {a, b};
    return run(op, &p, in, 2, out);
}

cg_status cg_matmul(const cg_tensor *a, const cg_tensor *b, int trans_a, int trans_b, cg_tensor **out) {
    if (!b) return CG_FAIL(CG_E_INVALID, "matmul: input 1 is NULL");
    cg_op_params p = {.trans_a = trans_a != 0, .trans_b = trans_b != 0};
    const cg_tensor *in[2] = {a, b};
    return run(CG_OP_MATMUL, &p, in, 2, out);
}

cg_status cg_linear(const cg_tensor *x, const cg_tensor *w, const cg_tensor *b, cg_linear_act act, cg_tensor **out) {
    if (!w) return CG_FAIL(CG_E_INVALID, "linear: weight is NULL");
    if (act != CG_LINEAR_NONE && act != CG_LINEAR_RELU && act != CG_LINEAR_GELU_TANH)
        return CG_FAIL(CG_E_INVALID, "linear: act must be CG_LINEAR_NONE, _RELU or _GELU_TANH, got %d", (int)act);
    cg_op_params p = {.act = act};
    const cg_tensor *in[3] = {x, w, b};
    return run(CG_OP_LINEAR, &p, in, 3, out);
}

cg_status cg_add(const cg_tensor *a, const cg_tensor *b, cg_tensor **out) { return binary(CG_OP_ADD, a, b, out); }
cg_status cg_sub(const cg_tensor *a, const cg_tensor *b, cg_tensor **out) { return binary(CG_OP_SUB, a, b, out); }
cg_status cg_mul(const cg_tensor *a, const cg_tensor *b, cg_tensor **out) { return binary(CG_OP_MUL, a, b, out); }
cg_status cg_div(const cg_tensor *a, const cg_tensor *b, cg_tensor **out) { return binary(CG_OP_DIV, a, b, out); }

cg_status cg_scale(const cg_tensor *x, double alpha, double beta, cg_tensor **out) {
    cg_op_params p = {.alpha = alpha, .beta = beta};
    return run(CG_OP_SCALE, &p, &x, 1, out);
}

static cg_status reduce(cg_op op, const cg_tensor *x, int axis, int keepdim, cg_tensor **out) {
    if (!x) return CG_FAIL(CG_E_INVALID, "%s: input 0 is NULL", cg_op_table[op].name);
    if (axis != CG_ALL_AXES) {
        if (axis < 0) axis += x->ndim;
        if (axis < 0 || axis >= x->ndim)
            return CG_FAIL(CG_E_SHAPE, "%s: axis out of range for a %d-d tensor (use CG_ALL_AXES to reduce all)",
                           cg_op_table[op].name, x->ndim);
    }
    cg_op_params p = {.axis = axis, .keepdim = keepdim != 0};
    return run(op, &p, &x, 1, out);
}

cg_status cg_sum(const cg_tensor *x, int axis, int keepdim, cg_tensor **out) {
    return reduce(CG_OP_SUM, x, axis, keepdim, out);
}
cg_status cg_mean(const cg_tensor *x, int axis, int keepdim, cg_tensor **out) {
    return reduce(CG_OP_MEAN, x, axis, keepdim, out);
}

cg_status cg_exp(const cg_tensor *x, cg_tensor **out) { return unary(CG_OP_EXP, x, out); }
cg_status cg_log(const cg_tensor *x, cg_tensor **out) { return unary(CG_OP_LOG, x, out); }
cg_status cg_sqrt(const cg_tensor *x, cg_tensor **out) { return unary(CG_OP_SQRT, x, out); }
cg_status cg_sigmoid(const cg_tensor *x, cg_tensor **out) { return unary(CG_OP_SIGMOID, x, out); }
cg_status cg_tanh(const cg_tensor *x, cg_tensor **out) { return unary(CG_OP_TANH, x, out); }
cg_status cg_relu(const cg_tensor *x, cg_tensor **out) { return unary(CG_OP_RELU, x, out); }

cg_status cg_leaky_relu(const cg_tensor *x, double negative_slope, cg_tensor **out) {
    cg_op_params p = {.alpha = negative_slope};
    return run(CG_OP_LEAKY_RELU, &p, &x, 1, out);
}

cg_status cg_gelu(const cg_tensor *x, cg_gelu_approx approx, cg_tensor **out) {
    if (approx != CG_GELU_ERF && approx != CG_GELU_TANH)
        return CG_FAIL(CG_E_INVALID, "gelu: approx must be CG_GELU_ERF or CG_GELU_TANH, got %d", (int)approx);
    cg_op_params p = {.approximate = approx};
    return run(CG_OP_GELU, &p, &x, 1, out);
}

static cg_status need_rows(const cg_tensor *x, const char *fn) {
    if (!x) return CG_FAIL(CG_E_INVALID, "%s: input is NULL", fn);
    if (x->ndim < 1) return CG_FAIL(CG_E_SHAPE, "%s: needs at least 1 dimension, got a 0-d tensor", fn);
    return CG_OK;
}

cg_status cg_softmax(const cg_tensor *x, cg_tensor **out) {
    CG_TRY(need_rows(x, "softmax"));
    return unary(CG_OP_SOFTMAX, x, out);
}

cg_status cg_log_softmax(const cg_tensor *x, cg_tensor **out) {
    CG_TRY(need_rows(x, "log_softmax"));
    return unary(CG_OP_LOG_SOFTMAX, x, out);
}

static cg_status check_vec(const cg_tensor *v, int64_t n, const char *fn, const char *what) {
    if (v && (v->ndim != 1 || v->shape[0] != n)) {
        char b[96];
        return CG_FAIL(CG_E_SHAPE, "%s: %s must have shape (%lld), got %s", fn, what, (long long)n,
                       cg__shape_str(v->shape, v->ndim, b, sizeof b));
    }
    return CG_OK;
}

cg_status cg_layernorm(const cg_tensor *x, const cg_tensor *gamma, const cg_tensor *beta, double eps,
                       cg_tensor **out) {
    CG_TRY(need_rows(x, "layernorm"));
    int64_t d = x->shape[x->ndim - 1];
    CG_TRY(check_vec(gamma, d, "layernorm", "gamma"));
    CG_TRY(check_vec(beta, d, "layernorm", "beta"));
    if (!(eps >= 0)) return CG_FAIL(CG_E_INVALID, "layernorm: eps must be >= 0, got %g", eps);
    cg_op_params p = {.eps = eps};
    const cg_tensor *in[3] = {x, gamma, beta};
    return run(CG_OP_LAYERNORM, &p, in, 3, out);
}

cg_status cg_batchnorm(const cg_tensor *x, const cg_tensor *gamma, const cg_tensor *beta, cg_tensor *running_mean,
                       cg_tensor *running_var, int training, double momentum, double eps, cg_tensor **out) {
    if (!x) return CG_FAIL(CG_E_INVALID, "batchnorm: input is NULL");
    char b[96];
    if (x->ndim != 2)
        return CG_FAIL(CG_E_SHAPE, "batchnorm: needs a 2-d (N, C) input, got %s",
                       cg__shape_str(x->shape, x->ndim, b, sizeof b));
    int64_t c = x->shape[1];
    CG_TRY(check_vec(gamma, c, "batchnorm", "gamma"));
    CG_TRY(check_vec(beta, c, "batchnorm", "beta"));
    CG_TRY(check_vec(running_mean, c, "batchnorm", "running_mean"));
    CG_TRY(check_vec(running_var, c, "batchnorm", "running_var"));
    if (!training && (!running_mean || !running_var))
        return CG_FAIL(CG_E_INVALID, "batchnorm: eval mode needs running_mean and running_var");
    if (training && x->shape[0] < 2)
        return CG_FAIL(CG_E_SHAPE, "batchnorm: training needs more than 1 row per channel, got %lld",
                       (long long)x->shape[0]);
    if ((running_mean && !cg_tensor_is_contiguous(running_mean)) || (running_var && !cg_tensor_is_contiguous(running_var)))
        return CG_FAIL(CG_E_INVALID, "batchnorm: running statistics must be contiguous (they are updated in place)");
    if ((running_mean && running_mean->requires_grad) || (running_var && running_var->requires_grad))
        return CG_FAIL(CG_E_INVALID, "batchnorm: running statistics must not require grad");
    if (!(eps >= 0) || !(momentum >= 0 && momentum <= 1))
        return CG_FAIL(CG_E_INVALID, "batchnorm: need eps >= 0 and momentum in [0, 1], got %g and %g", eps, momentum);
    cg_op_params p = {.eps = eps, .momentum = momentum, .training = training != 0};
    const cg_tensor *in[5] = {x, gamma, beta, running_mean, running_var};
    return run(CG_OP_BATCHNORM, &p, in, 5, out);
}

cg_status cg_dropout(const cg_tensor *x, double p, int training, cg_rng *rng, cg_tensor **out) {
    return cg__dropout(x, p, training, rng, NULL, out);
}

cg_status cg__dropout(const cg_tensor *x, double p, int training, cg_rng *rng, const uint64_t *offset_shift,
                      cg_tensor **out) {
    if (!x || !out) return CG_FAIL(CG_E_INVALID, "dropout: x and out must not be NULL");
    if (!(p >= 0 && p < 1)) return CG_FAIL(CG_E_INVALID, "dropout: p must be in [0, 1), got %g", p);
    if (!training || p == 0) {
        *out = cg__autorelease(cg_tensor_retain((cg_tensor *)x));
        return CG_OK;
    }
    if (!rng) return CG_FAIL(CG_E_INVALID, "dropout: training needs an rng (cg_rng_make(seed))");
    cg_op_params prm = {.p = p, .seed = rng->seed, .offset = rng->offset, .offset_shift = offset_shift};
    CG_TRY(run(CG_OP_DROPOUT, &prm, &x, 1, out));
    rng->offset += (uint64_t)(cg_tensor_numel(x) + 3) / 4;
    return CG_OK;
}

static cg_status check_reduction(cg_reduction r, const char *fn) {
    if (r != CG_REDUCE_MEAN && r != CG_REDUCE_SUM && r != CG_REDUCE_NONE)
        return CG_FAIL(CG_E_INVALID, "%s: unknown reduction %d", fn, (int)r);
    return CG_OK;
}

static cg_status pair_loss(cg_op op, const cg_tensor *a, const cg_tensor *b, cg_reduction red, cg_tensor **out) {
    const char *fn = cg_op_table[op].name;
    if (!a || !b) return CG_FAIL(CG_E_INVALID, "%s: inputs must not be NULL", fn);
    CG_TRY(check_reduction(red, fn));
    if (!cg__same_shape(a, b)) {
        char sa[96], sb[96];
        return CG_FAIL(CG_E_SHAPE, "%s: prediction %s and target %s must have the same shape", fn,
                       cg__shape_str(a->shape, a->ndim, sa, 96), cg__shape_str(b->shape, b->ndim, sb, 96));
    }
    cg_op_params p = {.reduction = red};
    const cg_tensor *in[2] = {a, b};
    return run(op, &p, in, 2, out);
}

cg_status cg_mse_loss(const cg_tensor *pred, const cg_tensor *target, cg_reduction red, cg_tensor **out) {
    return pair_loss(CG_OP_MSE, pred, target, red, out);
}

cg_status cg_bce_with_logits(const cg_tensor *logits, const cg_tensor *target, cg_reduction red, cg_tensor **out) {
    return pair_loss(CG_OP_BCE_LOGITS, logits, target, red, out);
}

cg_status cg_softmax_cross_entropy(const cg_tensor *logits, const cg_tensor *labels, cg_reduction red,
                                   double label_smoothing, cg_tensor **out) {
    const char *fn = "softmax_cross_entropy";
    if (!logits || !labels) return CG_FAIL(CG_E_INVALID, "%s: logits and labels must not be NULL", fn);
    CG_TRY(check_reduction(red, fn));
    char sa[96], sb[96];
    if (logits->ndim != 2 || labels->ndim != 1 || labels->shape[0] != logits->shape[0])
        return CG_FAIL(CG_E_SHAPE, "%s: needs logits (N, C) and labels (N), got %s and %s", fn,
                       cg__shape_str(logits->shape, logits->ndim, sa, 96), cg__shape_str(labels->shape, labels->ndim, sb, 96));
    if (logits->shape[0] > 0 && logits->shape[1] == 0)
        return CG_FAIL(CG_E_SHAPE, "%s: logits %s have no classes", fn, cg__shape_str(logits->shape, 2, sa, 96));
    if (labels->dtype != CG_I32 && labels->dtype != CG_I64)
        return CG_FAIL(CG_E_DTYPE, "%s: labels must be i32 or i64 class indices, got %s", fn,
                       cg_dtype_name(labels->dtype));
    if (!(label_smoothing >= 0 && label_smoothing <= 1))
        return CG_FAIL(CG_E_INVALID, "%s: label_smoothing must be in [0, 1], got %g", fn, label_smoothing);
    cg_op_params p = {.reduction = red, .label_smoothing = label_smoothing};
    const cg_tensor *in[2] = {logits, labels};
    return run(CG_OP_SOFTMAX_CE, &p, in, 2, out);
}

/* ---- views ---- */

/* Wrap a view of x as the output of a view op, recording a node when x needs grad. */
static cg_status view_out(cg_op op, cg_op_params *p, const cg_tensor *x, const int64_t *shape,
                          const int64_t *strides, int ndim, int64_t offset, cg_tensor **out) {
    cg_tensor *v;
    CG_TRY(cg__tensor_view(x, shape, strides, ndim, offset, &v));
    if (cg_grad_enabled() && cg__needs_grad(x)) {
        cg_status st = node_new(op, p, &x, 1, v, NULL, 0);
        if (st != CG_OK) {
            cg_tensor_release(v);
            return st;
        }
    }
    *out = cg__autorelease(v);
    return CG_OK;
}

cg_status cg_reshape(const cg_tensor *x, const int64_t *shape, int ndim, cg_tensor **out) {
    if (!x || !out || (ndim > 0 && !shape)) return CG_FAIL(CG_E_INVALID, "reshape: NULL argument");
    if (ndim < 0 || ndim > CG_MAX_DIMS) return CG_FAIL(CG_E_SHAPE, "reshape: ndim %d outside [0, %d]", ndim, CG_MAX_DIMS);
    int64_t s[CG_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1) {
            if (infer >= 0) return CG_FAIL(CG_E_SHAPE, "reshape: only one dimension can be -1");
            infer = i;
        } else if (s[i] < 0) {
            return CG_FAIL(CG_E_SHAPE, "reshape: dimension %d is %lld", i, (long long)s[i]);
        } else if (__builtin_mul_overflow(known, s[i], &known)) {
            return CG_FAIL(CG_E_SHAPE, "reshape: target shape is too large (dimension %d overflows)", i);
        }
    }
    int64_t n = cg_tensor_numel(x);
    if (infer >= 0) {
        if (known == 0 || n % known) return CG_FAIL(CG_E_SHAPE, "reshape: cannot infer -1 for %lld elements", (long long)n);
        s[infer] = n / known;
    }
    CG_TRY(cg__check_shape(s, ndim, x->dtype, "reshape"));
    char a[96], b[96];
    if (cg__numel(s, ndim) != n)
        return CG_FAIL(CG_E_SHAPE, "reshape: %s has %lld elements, target %s has %lld",
                       cg__shape_str(x->shape, x->ndim, a, 96), (long long)n, cg__shape_str(s, ndim, b, 96),
                       (long long)cg__numel(s, ndim));
    cg_op_params p = {.view_ndim = ndim};
    memcpy(p.view_shape, s, sizeof(int64_t) * (size_t)ndim);
    const cg_tensor *src = x;
    cg_tensor *tmp = NULL;
    if (!cg_tensor_is_contiguous(x)) { /* like torch.reshape: copy through the graph first */
        cg_op_params cp = {0};
        CG_TRY(cg__apply(CG_OP_CONTIGUOUS, &cp, &x, 1, &tmp));
        src = tmp;
    }
    int64_t strides[CG_MAX_DIMS];
    cg__contiguous_strides(s, ndim, strides);
    cg_status st = view_out(CG_OP_RESHAPE, &p, src, s, strides, ndim, src->offset, out);
    cg_tensor_release(tmp);
    return st;
}

cg_status cg_transpose(const cg_tensor *x, int dim0, int dim1, cg_tensor **out) {
    if (!x || !out) return CG_FAIL(CG_E_INVALID, "transpose: NULL argument");
    if (dim0 < 0) dim0 += x->ndim;
    if (dim1 < 0) dim1 += x->ndim;
    if (dim0 < 0 || dim0 >= x->ndim || dim1 < 0 || dim1 >= x->ndim)
        return CG_FAIL(CG_E_SHAPE, "transpose: dims out of range for a %d-d tensor", x->ndim);
    int64_t s[CG_MAX_DIMS], st[CG_MAX_DIMS];
    cg__swap_dims(x, dim0, dim1, s, st);
    cg_op_params p = {.dim0 = dim0, .dim1 = dim1, .view_ndim = x->ndim};
    memcpy(p.view_shape, s, sizeof s);
    return view_out(CG_OP_TRANSPOSE, &p, x, s, st, x->ndim, x->offset, out);
}

cg_status cg_slice_rows(const cg_tensor *x, int64_t start, int64_t end, cg_tensor **out) {
    if (!x || !out) return CG_FAIL(CG_E_INVALID, "slice_rows: NULL argument");
    if (x->ndim < 1) return CG_FAIL(CG_E_SHAPE, "slice_rows: needs at least 1 dimension");
    if (start < 0 || end < start || end > x->shape[0])
        return CG_FAIL(CG_E_SHAPE, "slice_rows: [%lld, %lld) is not inside [0, %lld)", (long long)start, (long long)end,
                       (long long)x->shape[0]);
    int64_t s[CG_MAX_DIMS];
    memcpy(s, x->shape, sizeof s);
    s[0] = end - start;
    cg_op_params p = {.view_ndim = x->ndim};
    memcpy(p.view_shape, s, sizeof s);
    p.dim0 = 0;
    p.axis = 0;
    p.offset = (uint64_t)start;
    return view_out(CG_OP_SLICE_ROWS, &p, x, s, x->strides, x->ndim, x->offset + start * x->strides[0], out);
}

cg_status cg_contiguous(const cg_tensor *x, cg_tensor **out) {
    if (!x || !out) return CG_FAIL(CG_E_INVALID, "contiguous: NULL argument");
    if (cg_tensor_is_contiguous(x)) {
        *out = cg__autorelease(cg_tensor_retain((cg_tensor *)x));
        return CG_OK;
    }
    cg_op_params p = {0};
    return run(CG_OP_CONTIGUOUS, &p, &x, 1, out);
}

/* ---- in-place ---- */

static cg_status check_inplace(const cg_tensor *y, const char *fn) {
    if (cg_grad_enabled() && y->node)
        return CG_FAIL(CG_E_STATE, "%s: tensor was produced by '%s' and is part of the graph; in-place updates would "
                                   "corrupt its gradient (compute a new tensor, or detach it)",
                       fn, cg_op_table[y->node->op].name);
    CG_TRY(cg__check_leaf_write(y, fn));
    if (!cg_tensor_is_contiguous(y)) return CG_FAIL(CG_E_INVALID, "%s: tensor must be contiguous", fn);
    if (!cg__is_float(y->dtype)) return CG_FAIL(CG_E_DTYPE, "%s: needs f32 or f64, got %s", fn, cg_dtype_name(y->dtype));
    return CG_OK;
}

cg_status cg_add_(cg_tensor *y, double alpha, const cg_tensor *x) {
    if (!y || !x) return CG_FAIL(CG_E_INVALID, "cg_add_: NULL argument");
    CG_TRY(check_inplace(y, "cg_add_"));
    if (!cg__same_shape(x, y) || x->dtype != y->dtype || !cg__same_device(x->st->dev, y->st->dev))
        return CG_FAIL(CG_E_SHAPE, "cg_add_: x must match y in shape, dtype and device");
    cg_tensor *xc;
    CG_TRY(cg__tensor_contiguous(x, &xc));
    cg_status st = cg__backend(y->st->dev)->axpy(y, alpha, xc);
    cg_tensor_release(xc);
    if (st == CG_OK) cg__bump_version(y);
    return st;
}

cg_status cg_scale_(cg_tensor *y, double alpha) {
    if (!y) return CG_FAIL(CG_E_INVALID, "cg_scale_: NULL argument");
    CG_TRY(check_inplace(y, "cg_scale_"));
    CG_TRY(cg__backend(y->st->dev)->scal(y, alpha));
    cg__bump_version(y);
    return CG_OK;
}

static cg_status check_f64_slot(const cg_tensor *dst, cg_device dev, const char *fn) {
    if (!dst || dst->dtype != CG_F64 || cg__numel(dst->shape, dst->ndim) != 1)
        return CG_FAIL(CG_E_INTERNAL, "%s: the destination must be one f64 element", fn);
    if (!cg__same_device(dst->st->dev, dev))
        return CG_FAIL(CG_E_DEVICE, "%s: the destination is on %s, the input on %s", fn, cg_device_str(dst->st->dev),
                       cg_device_str(dev));
    return CG_OK;
}

cg_status cg__reduce_to(cg_tensor *dst, const cg_tensor *x, double alpha, int square, int accumulate) {
    CG_TRY(check_f64_slot(dst, x->st->dev, "reduce"));
    if (!cg__is_float(x->dtype)) return CG_FAIL(CG_E_DTYPE, "reduce: needs f32 or f64, got %s", cg_dtype_name(x->dtype));
    cg_tensor *xc;
    CG_TRY(cg__tensor_contiguous(x, &xc));
    cg_status st = cg__backend(x->st->dev)->reduce_to(dst, xc, alpha, square, accumulate);
    cg_tensor_release(xc);
    if (st == CG_OK) cg__bump_version(dst);
    return st;
}

cg_status cg__copy_gated(cg_tensor *dst, const cg_tensor *src, const cg_tensor *gate) {
    CG_TRY(check_f64_slot((cg_tensor *)gate, dst->st->dev, "gated copy"));
    if (dst->dtype != src->dtype || cg_tensor_numel(dst) != cg_tensor_numel(src) ||
        !cg__same_device(dst->st->dev, src->st->dev) || !cg_tensor_is_contiguous(dst) || !cg_tensor_is_contiguous(src))
        return CG_FAIL(CG_E_INTERNAL, "gated copy: needs contiguous tensors of one dtype, size and device");
    cg_status st = cg__backend(dst->st->dev)->copy_gated(dst, src, gate);
    if (st == CG_OK) cg__bump_version(dst);
    return st;
}

cg_status cg__count_correct(cg_tensor *dst, const cg_tensor *pred, const cg_tensor *target, int accumulate) {
    CG_TRY(check_f64_slot(dst, pred->st->dev, "accuracy"));
    int64_t n = pred->ndim ? pred->shape[0] : 1;
    if (pred->ndim > 2) return CG_FAIL(CG_E_SHAPE, "accuracy: predictions must be (N) or (N, C)");
    if (pred->ndim == 2 && pred->shape[1] == 0)
        return CG_FAIL(CG_E_SHAPE, "accuracy: predictions (N, 0) have no classes; a model's output needs C >= 1");
    if (!cg__is_float(pred->dtype))
        return CG_FAIL(CG_E_DTYPE, "accuracy: predictions must be f32 or f64, got %s", cg_dtype_name(pred->dtype));
    if (cg__numel(target->shape, target->ndim) != n) {
        char a[96], b[96];
        return CG_FAIL(CG_E_SHAPE, "accuracy: %s predictions need one target per row, got %s",
                       cg__shape_str(pred->shape, pred->ndim, a, 96), cg__shape_str(target->shape, target->ndim, b, 96));
    }
    cg_tensor *pc = NULL, *tc = NULL;
    cg_status st = cg__tensor_contiguous(pred, &pc);
    if (st == CG_OK) /* targets elsewhere (labels kept on the host) travel to the predictions */
        st = cg__same_device(pred->st->dev, target->st->dev) ? cg__tensor_contiguous(target, &tc)
                                                             : cg__tensor_copy_to(target, target->dtype, pred->st->dev, &tc);
    if (st == CG_OK) st = cg__backend(pred->st->dev)->count_correct(dst, pc, tc, accumulate);
    cg_tensor_release(pc);
    cg_tensor_release(tc);
    if (st == CG_OK) cg__bump_version(dst);
    return st;
}

cg_status cg__f64_zeros(cg_device dev, int64_t n, cg_tensor **out) {
    cg_tensor *t;
    CG_TRY(cg__tensor_new(&n, 1, CG_F64, dev, &t));
    cg_status st = cg__backend(dev)->fill(t, 0.0);
    if (st != CG_OK) {
        cg_tensor_release(t);
        return st;
    }
    *out = t;
    return CG_OK;
}

cg_status cg__read_f64(const cg_tensor *t, double *out, int64_t n) {
    if (t->dtype != CG_F64 || n > cg__numel(t->shape, t->ndim))
        return CG_FAIL(CG_E_INTERNAL, "read: %lld f64 values asked of a %s tensor of %lld", (long long)n,
                       cg_dtype_name(t->dtype), (long long)cg__numel(t->shape, t->ndim));
    return cg__backend(t->st->dev)->memcpy(t->st->dev.index, out, cg__ptr(t), (size_t)n * sizeof *out, CG_COPY_D2H);
}

cg_status cg_sumsq(const cg_tensor *x, double *out) {
    if (!x || !out) return CG_FAIL(CG_E_INVALID, "cg_sumsq: NULL argument");
    if (!cg__is_float(x->dtype)) return CG_FAIL(CG_E_DTYPE, "cg_sumsq: needs f32 or f64, got %s", cg_dtype_name(x->dtype));
    cg_tensor *acc;
    CG_TRY(cg__f64_zeros(x->st->dev, 1, &acc));
    cg_status st = cg__reduce_to(acc, x, 1.0, 1, 0);
    if (st == CG_OK) st = cg__read_f64(acc, out, 1); /* waits */
    cg_tensor_release(acc);
    return st;
}
