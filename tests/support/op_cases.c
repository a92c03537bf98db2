/* The op-case table (see op_cases.h): input makers, public-API appliers and the rows.
 * References live in op_refs.c. */
#include "op_cases.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "op_refs.h"

/* ---- instances ---- */

int64_t cgt_arg_numel(const cgt_arg *a) {
    int64_t n = 1;
    for (int i = 0; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

static cgt_arg *arg_init(cgt_inst *I, int i, const cgt_shape *s, int kind, int diff) {
    cgt_arg *a = &I->in[i];
    a->present = 1;
    a->kind = kind;
    a->diff = diff;
    a->ndim = s->ndim;
    for (int k = 0; k < s->ndim; k++) a->shape[k] = s->d[k];
    int64_t n = cgt_arg_numel(a);
    a->v = calloc((size_t)(n ? n : 1), sizeof(double));
    if (I->n_in < i + 1) I->n_in = i + 1;
    return a;
}

static void fill_normal(cgt_arg *a, cgt_rand *r, double mean, double std) {
    for (int64_t k = 0; k < cgt_arg_numel(a); k++) a->v[k] = mean + std * cgt_normal(r);
}

static void fill_uniform(cgt_arg *a, cgt_rand *r, double lo, double hi) {
    for (int64_t k = 0; k < cgt_arg_numel(a); k++) a->v[k] = cgt_uniform(r, lo, hi);
}

/* Keep values at least `gap` away from 0 (kinks of relu/leaky_relu). */
static void push_from_zero(cgt_arg *a, double gap) {
    for (int64_t k = 0; k < cgt_arg_numel(a); k++)
        if (fabs(a->v[k]) < gap) a->v[k] = a->v[k] < 0 ? a->v[k] - gap : a->v[k] + gap;
}

void cgt_inst_make(const cgt_case *c, cgt_rand *r, cg_dtype dt, cgt_inst *I) {
    memset(I, 0, sizeof *I);
    I->c = c;
    I->seed = cgt_next(r);
    I->offset = cgt_next(r) & 0xFFFFF;
    c->make(c, r, I);
    for (int i = 0; i < I->n_in; i++)
        if (I->in[i].present && I->in[i].kind == CGT_ARG_FLOAT) cgt_round_array(I->in[i].v, cgt_arg_numel(&I->in[i]), dt);
}

void cgt_inst_free(cgt_inst *I) {
    for (int i = 0; i < CGT_MAX_IN; i++) free(I->in[i].v);
    memset(I, 0, sizeof *I);
}

void cgt_inst_tensors(const cgt_inst *I, cg_dtype dt, cg_device dev, int grad, cg_tensor **t) {
    for (int i = 0; i < CGT_MAX_IN; i++) t[i] = NULL;
    for (int i = 0; i < I->n_in; i++) {
        const cgt_arg *a = &I->in[i];
        if (!a->present) continue;
        cg_dtype adt = a->kind == CGT_ARG_I64 ? CG_I64 : a->kind == CGT_ARG_I32 ? CG_I32 : dt;
        t[i] = cgt_tensor(a->v, a->shape, a->ndim, adt, dev);
        if (grad && a->diff) CGT_OK(cg_tensor_set_requires_grad(t[i], 1));
    }
}

void cgt_tensors_release(cg_tensor **t, int n) {
    for (int i = 0; i < n; i++) {
        cg_tensor_release(t[i]);
        t[i] = NULL;
    }
}

cg_status cgt_inst_run(const cgt_inst *I, cg_dtype dt, cg_device dev, int grad, cg_tensor **in_out,
                       cg_tensor **out) {
    cg_tensor *t[CGT_MAX_IN];
    cgt_inst_tensors(I, dt, dev, grad, t);
    cg_status st = I->c->apply(I, t, out);
    if (in_out)
        for (int i = 0; i < CGT_MAX_IN; i++) in_out[i] = t[i];
    else
        cgt_tensors_release(t, CGT_MAX_IN);
    return st;
}

int cgt_case_find(const char *op) {
    for (int i = 0; i < cgt_n_cases; i++)
        if (strcmp(cgt_cases[i].op, op) == 0) return i;
    return -1;
}

static int is(const cgt_case *c, const char *op) { return strcmp(c->op, op) == 0; }

/* ---- makers ---- */

static void mk_two(const cgt_case *c, cgt_rand *r, cgt_inst *I) {
    fill_normal(arg_init(I, 0, &c->s[0], CGT_ARG_FLOAT, 1), r, 0, 1);
    cgt_arg *b = arg_init(I, 1, &c->s[1], CGT_ARG_FLOAT, 1);
    if (is(c, "div")) { /* denominators well away from 0 */
        fill_uniform(b, r, 0.5, 2.0);
        for (int64_t k = 0; k < cgt_arg_numel(b); k++)
            if (cgt_next(r) & 1) b->v[k] = -b->v[k];
    } else {
        fill_normal(b, r, 0, 1);
    }
}

static void mk_one(const cgt_case *c, cgt_rand *r, cgt_inst *I) {
    cgt_arg *a = arg_init(I, 0, &c->s[0], CGT_ARG_FLOAT, 1);
    if (is(c, "log") || is(c, "sqrt"))
        fill_uniform(a, r, 0.1, 3.0);
    else if (is(c, "exp"))
        fill_uniform(a, r, -2.0, 2.0);
    else if (is(c, "softmax") || is(c, "log_softmax"))
        fill_normal(a, r, 0.3, 2.0);
    else
        fill_normal(a, r, 0, 1.5);
    if (is(c, "relu") || is(c, "leaky_relu")) push_from_zero(a, 0.01);
}

/* linear: x (N, K), w (M, K) from s[0], s[1]; ip[1] = with bias (M) */
static void mk_linear(const cgt_case *c, cgt_rand *r, cgt_inst *I) {
    fill_normal(arg_init(I, 0, &c->s[0], CGT_ARG_FLOAT, 1), r, 0, 1);
    fill_normal(arg_init(I, 1, &c->s[1], CGT_ARG_FLOAT, 1), r, 0, 0.5);
    cgt_shape bs = {1, {c->s[1].d[0]}};
    I->n_in = 3;
    if (c->ip[1]) fill_normal(arg_init(I, 2, &bs, CGT_ARG_FLOAT, 1), r, 0, 0.5);
}

/* layernorm: ip[0] bit 0 = gamma, bit 1 = beta */
static void mk_layernorm(const cgt_case *c, cgt_rand *r, cgt_inst *I) {
    fill_normal(arg_init(I, 0, &c->s[0], CGT_ARG_FLOAT, 1), r, 0.5, 2.0);
    cgt_shape v = {1, {c->s[0].d[c->s[0].ndim - 1]}};
    I->n_in = 3;
    if (c->ip[0] & 1) fill_normal(arg_init(I, 1, &v, CGT_ARG_FLOAT, 1), r, 1.0, 0.5);
    if (c->ip[0] & 2) fill_normal(arg_init(I, 2, &v, CGT_ARG_FLOAT, 1), r, 0.0, 0.5);
}

/* batchnorm: ip[0] bit 0 = gamma, bit 1 = beta; ip[1] = running stats; ip[2] = training */
static void mk_batchnorm(const cgt_case *c, cgt_rand *r, cgt_inst *I) {
    fill_normal(arg_init(I, 0, &c->s[0], CGT_ARG_FLOAT, 1), r, 0.5, 2.0);
    cgt_shape v = {1, {c->s[0].d[1]}};
    I->n_in = 5;
    if (c->ip[0] & 1) fill_normal(arg_init(I, 1, &v, CGT_ARG_FLOAT, 1), r, 1.0, 0.5);
    if (c->ip[0] & 2) fill_normal(arg_init(I, 2, &v, CGT_ARG_FLOAT, 1), r, 0.0, 0.5);
    if (c->ip[1]) {
        fill_normal(arg_init(I, 3, &v, CGT_ARG_FLOAT, 0), r, 0.0, 0.5);
        fill_uniform(arg_init(I, 4, &v, CGT_ARG_FLOAT, 0), r, 0.5, 2.0);
    }
}

static void mk_pair_loss(const cgt_case *c, cgt_rand *r, cgt_inst *I) {
    fill_normal(arg_init(I, 0, &c->s[0], CGT_ARG_FLOAT, 1), r, 0, 1.5);
    cgt_arg *t = arg_init(I, 1, &c->s[0], CGT_ARG_FLOAT, 1);
    if (is(c, "bce_logits"))
        fill_uniform(t, r, 0.0, 1.0);
    else
        fill_normal(t, r, 0, 1);
}

/* softmax_ce: ip[1] = 1 for i32 labels */
static void mk_ce(const cgt_case *c, cgt_rand *r, cgt_inst *I) {
    fill_normal(arg_init(I, 0, &c->s[0], CGT_ARG_FLOAT, 1), r, 0, 2.0);
    cgt_shape ls = {1, {c->s[0].d[0]}};
    cgt_arg *l = arg_init(I, 1, &ls, c->ip[1] ? CGT_ARG_I32 : CGT_ARG_I64, 0);
    for (int64_t k = 0; k < ls.d[0]; k++) l->v[k] = (double)cgt_randint(r, 0, c->s[0].d[1]);
}

/* ---- appliers (public API only) ---- */

static cg_status ap_linear(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    return cg_linear(in[0], in[1], in[2], (cg_linear_act)I->c->ip[0], out);
}

static cg_status ap_matmul(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    const cgt_case *c = I->c;
    if (!c->ip[2]) return cg_matmul(in[0], in[1], c->ip[0], c->ip[1], out);
    /* the same product through transposed views instead of flags */
    cg_tensor *a = in[0], *b = in[1], *ta = NULL, *tb = NULL;
    cg_status st = CG_OK;
    if (c->ip[0]) st = cg_transpose(in[0], 0, 1, &ta), a = ta;
    if (st == CG_OK && c->ip[1]) st = cg_transpose(in[1], 0, 1, &tb), b = tb;
    if (st == CG_OK) st = cg_matmul(a, b, 0, 0, out);
    cg_tensor_release(ta);
    cg_tensor_release(tb);
    return st;
}

/* ip[2]: input 0 is stored transposed and viewed back with cg_transpose (non-contiguous) */
static cg_status maybe_t(const cgt_inst *I, cg_tensor *x, cg_tensor **v) {
    if (!I->c->ip[2]) {
        *v = cg_tensor_retain(x);
        return CG_OK;
    }
    return cg_transpose(x, 0, 1, v);
}

static cg_status ap_binary(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    const cgt_case *c = I->c;
    cg_tensor *a;
    cg_status st = maybe_t(I, in[0], &a);
    if (st != CG_OK) return st;
    if (is(c, "add")) st = cg_add(a, in[1], out);
    else if (is(c, "sub")) st = cg_sub(a, in[1], out);
    else if (is(c, "mul")) st = cg_mul(a, in[1], out);
    else st = cg_div(a, in[1], out);
    cg_tensor_release(a);
    return st;
}

static cg_status ap_unary(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    const cgt_case *c = I->c;
    cg_tensor *x;
    cg_status st = maybe_t(I, in[0], &x);
    if (st != CG_OK) return st;
    if (is(c, "scale")) st = cg_scale(x, c->dp[0], c->dp[1], out);
    else if (is(c, "sum")) st = cg_sum(x, c->ip[0], c->ip[1], out);
    else if (is(c, "mean")) st = cg_mean(x, c->ip[0], c->ip[1], out);
    else if (is(c, "exp")) st = cg_exp(x, out);
    else if (is(c, "log")) st = cg_log(x, out);
    else if (is(c, "sqrt")) st = cg_sqrt(x, out);
    else if (is(c, "sigmoid")) st = cg_sigmoid(x, out);
    else if (is(c, "tanh")) st = cg_tanh(x, out);
    else if (is(c, "relu")) st = cg_relu(x, out);
    else if (is(c, "leaky_relu")) st = cg_leaky_relu(x, c->dp[0], out);
    else if (is(c, "gelu")) st = cg_gelu(x, (cg_gelu_approx)c->ip[0], out);
    else if (is(c, "softmax")) st = cg_softmax(x, out);
    else if (is(c, "log_softmax")) st = cg_log_softmax(x, out);
    else st = CG_E_INTERNAL;
    cg_tensor_release(x);
    return st;
}

static cg_status ap_layernorm(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    return cg_layernorm(in[0], in[1], in[2], I->c->dp[0], out);
}

static cg_status ap_batchnorm(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    const cgt_case *c = I->c;
    return cg_batchnorm(in[0], in[1], in[2], in[3], in[4], c->ip[2], c->dp[1], c->dp[0], out);
}

/* dp[0] = p, ip[0] = training; the same (seed, offset) on every run fixes the mask */
static cg_status ap_dropout(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    cg_rng rng = {I->seed, I->offset};
    return cg_dropout(in[0], I->c->dp[0], I->c->ip[0], &rng, out);
}

static cg_status ap_pair_loss(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    if (is(I->c, "mse")) return cg_mse_loss(in[0], in[1], (cg_reduction)I->c->ip[0], out);
    return cg_bce_with_logits(in[0], in[1], (cg_reduction)I->c->ip[0], out);
}

static cg_status ap_ce(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    return cg_softmax_cross_entropy(in[0], in[1], (cg_reduction)I->c->ip[0], I->c->dp[0], out);
}

/* reshape to s[1]; ip[2]: reshape a transposed (non-contiguous) view of the input */
static cg_status ap_reshape(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    cg_tensor *x;
    cg_status st = maybe_t(I, in[0], &x);
    if (st != CG_OK) return st;
    st = cg_reshape(x, I->c->s[1].d, I->c->s[1].ndim, out);
    cg_tensor_release(x);
    return st;
}

static cg_status ap_transpose(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    return cg_transpose(in[0], I->c->ip[0], I->c->ip[1], out);
}

static cg_status ap_slice(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    return cg_slice_rows(in[0], I->c->ip[0], I->c->ip[1], out);
}

/* contiguous of transpose(ip[0], ip[1]) so the CONTIGUOUS op really copies */
static cg_status ap_contiguous(const cgt_inst *I, cg_tensor *const *in, cg_tensor **out) {
    cg_tensor *t;
    cg_status st = cg_transpose(in[0], I->c->ip[0], I->c->ip[1], &t);
    if (st != CG_OK) return st;
    st = cg_contiguous(t, out);
    cg_tensor_release(t);
    return st;
}

/* ---- the table ---- */

#define S1(a) {1, {a}}
#define S2(a, b) {2, {a, b}}
#define S3(a, b, c) {3, {a, b, c}}
#define S0 {0, {0}}

#define MATMUL(nm, sa, sb, ta, tb, views)                                                                     \
    {"matmul", nm, mk_two, ap_matmul, cgt_ref_matmul, {sa, sb}, {ta, tb, views}, {0}, 10, 0}

#define LINEAR(nm, sx, sw, act, bias)                                                                         \
    {"linear", nm, mk_linear, ap_linear, cgt_ref_linear, {sx, sw}, {act, bias}, {0}, 10, 0}

#define BINARY(op)                                                                                            \
    {op, "same shape (3,7)", mk_two, ap_binary, cgt_ref_binary, {S2(3, 7), S2(3, 7)}, {0}, {0}, 0, 0},         \
    {op, "bias (5) over (7,5)", mk_two, ap_binary, cgt_ref_binary, {S2(7, 5), S1(5)}, {0}, {0}, 0, 0},         \
    {op, "column (7,1) over (7,5)", mk_two, ap_binary, cgt_ref_binary, {S2(7, 5), S2(7, 1)}, {0}, {0}, 0, 0},  \
    {op, "left (5) over (7,5)", mk_two, ap_binary, cgt_ref_binary, {S1(5), S2(7, 5)}, {0}, {0}, 0, 0},         \
    {op, "(2,1,5) with (3,1)", mk_two, ap_binary, cgt_ref_binary, {S3(2, 1, 5), S2(3, 1)}, {0}, {0}, 0, 0},    \
    {op, "0-d right operand", mk_two, ap_binary, cgt_ref_binary, {S2(3, 4), S0}, {0}, {0}, 0, 0},              \
    {op, "transposed (5,7)^T + (5)", mk_two, ap_binary, cgt_ref_binary, {S2(5, 7), S1(5)}, {0, 0, 1}, {0}, 0, 0}

#define UNARY(op, nm, s, ip0, dp0, dp1)                                                                       \
    {op, nm, mk_one, ap_unary, cgt_ref_unary, {s}, {ip0}, {dp0, dp1}, 0, 0}
#define REDUCE(op, nm, s, axis, keep)                                                                         \
    {op, nm, mk_one, ap_unary, cgt_ref_reduce, {s}, {axis, keep}, {0}, 0, 0}
#define ROWS(op, nm, s, t)                                                                                    \
    {op, nm, mk_one, ap_unary, cgt_ref_softmax, {s}, {0, 0, t}, {0}, 0, 0}
#define LN(nm, s, gb) {"layernorm", nm, mk_layernorm, ap_layernorm, cgt_ref_layernorm, {s}, {gb}, {1e-5}, 0, 0}
#define BN(nm, s, gb, run, train)                                                                             \
    {"batchnorm", nm, mk_batchnorm, ap_batchnorm, cgt_ref_batchnorm, {s}, {gb, run, train}, {1e-5, 0.1}, 0, 0}
#define PAIR(op, nm, red) {op, nm, mk_pair_loss, ap_pair_loss, cgt_ref_pair_loss, {S2(7, 5)}, {red}, {0}, 0, 0}
#define CE(nm, s, red, i32, eps) {"softmax_ce", nm, mk_ce, ap_ce, cgt_ref_ce, {s}, {red, i32}, {eps}, 0, 0}

const cgt_case cgt_cases[] = {
    LINEAR("(7,5) W(3,5) + b", S2(7, 5), S2(3, 5), CG_LINEAR_NONE, 1),
    LINEAR("(7,5) W(3,5), no bias", S2(7, 5), S2(3, 5), CG_LINEAR_NONE, 0),
    LINEAR("relu((9,127) W(4,127) + b)", S2(9, 127), S2(4, 127), CG_LINEAR_RELU, 1),
    LINEAR("relu((1,3) W(5,3)), no bias", S2(1, 3), S2(5, 3), CG_LINEAR_RELU, 0),
    LINEAR("gelu_tanh((7,6) W(3,6) + b)", S2(7, 6), S2(3, 6), CG_LINEAR_GELU_TANH, 1),
    MATMUL("(7,127) x (127,3)", S2(7, 127), S2(127, 3), 0, 0, 0),
    MATMUL("(127,7)^T x (127,3)", S2(127, 7), S2(127, 3), 1, 0, 0),
    MATMUL("(7,127) x (3,127)^T", S2(7, 127), S2(3, 127), 0, 1, 0),
    MATMUL("(127,7)^T x (3,127)^T", S2(127, 7), S2(3, 127), 1, 1, 0),
    MATMUL("(1,1) x (1,1)", S2(1, 1), S2(1, 1), 0, 0, 0),
    MATMUL("(1,3) x (3,1)", S2(1, 3), S2(3, 1), 0, 0, 0),
    MATMUL("transposed views (13,7)^T x (3,13)^T", S2(13, 7), S2(3, 13), 1, 1, 1),
    BINARY("add"),
    BINARY("sub"),
    BINARY("mul"),
    BINARY("div"),
    UNARY("scale", "1.7 x - 0.3 on (7,13)", S2(7, 13), 0, 1.7, -0.3),
    UNARY("scale", "-2 x + 0.5 on a 0-d tensor", S0, 0, -2.0, 0.5),
    REDUCE("sum", "(7,13) axis 0", S2(7, 13), 0, 0),
    REDUCE("sum", "(7,13) axis 1 keepdim", S2(7, 13), 1, 1),
    REDUCE("sum", "(3,5,7) axis -2", S3(3, 5, 7), -2, 0),
    REDUCE("sum", "(7,13) all axes", S2(7, 13), CG_ALL_AXES, 0),
    REDUCE("sum", "(3,5,7) all axes keepdim", S3(3, 5, 7), CG_ALL_AXES, 1),
    REDUCE("sum", "(127) axis 0", S1(127), 0, 0),
    REDUCE("mean", "(7,13) axis 0 keepdim", S2(7, 13), 0, 1),
    REDUCE("mean", "(7,13) axis -1", S2(7, 13), -1, 0),
    REDUCE("mean", "(3,5,7) axis 1 keepdim", S3(3, 5, 7), 1, 1),
    REDUCE("mean", "(7,13) all axes", S2(7, 13), CG_ALL_AXES, 0),
    REDUCE("mean", "(1) all axes keepdim", S1(1), CG_ALL_AXES, 1),
    UNARY("exp", "(7,13)", S2(7, 13), 0, 0, 0),
    UNARY("log", "(7,13)", S2(7, 13), 0, 0, 0),
    UNARY("sqrt", "(7,13)", S2(7, 13), 0, 0, 0),
    UNARY("sqrt", "(127)", S1(127), 0, 0, 0),
    UNARY("sigmoid", "(7,13)", S2(7, 13), 0, 0, 0),
    UNARY("tanh", "(7,13)", S2(7, 13), 0, 0, 0),
    UNARY("relu", "(3,127)", S2(3, 127), 0, 0, 0),
    {"relu", "transposed (13,7)^T", mk_one, ap_unary, cgt_ref_unary, {S2(13, 7)}, {0, 0, 1}, {0}, 0, 0},
    UNARY("leaky_relu", "slope 0.01 (7,13)", S2(7, 13), 0, 0.01, 0),
    UNARY("leaky_relu", "slope 0.2 (3,5,7)", S3(3, 5, 7), 0, 0.2, 0),
    UNARY("gelu", "erf (7,13)", S2(7, 13), CG_GELU_ERF, 0, 0),
    UNARY("gelu", "tanh approximation (7,13)", S2(7, 13), CG_GELU_TANH, 0, 0),
    ROWS("softmax", "(7,13)", S2(7, 13), 0),
    ROWS("softmax", "(1,1)", S2(1, 1), 0),
    ROWS("softmax", "(2,3,5)", S3(2, 3, 5), 0),
    ROWS("softmax", "(127)", S1(127), 0),
    ROWS("softmax", "transposed (13,7)^T", S2(13, 7), 1),
    ROWS("log_softmax", "(7,13)", S2(7, 13), 0),
    ROWS("log_softmax", "(2,3,5)", S3(2, 3, 5), 0),
    ROWS("log_softmax", "(127)", S1(127), 0),
    ROWS("log_softmax", "transposed (13,7)^T", S2(13, 7), 1),
    LN("(7,13) gamma beta", S2(7, 13), 3),
    LN("(7,13) no gamma no beta", S2(7, 13), 0),
    LN("(7,13) gamma only", S2(7, 13), 1),
    LN("(2,3,5) beta only", S3(2, 3, 5), 2),
    LN("(3,127) gamma beta", S2(3, 127), 3),
    BN("train (7,5) gamma beta running stats", S2(7, 5), 3, 1, 1),
    BN("train (7,5) no gamma beta, no running stats", S2(7, 5), 0, 0, 1),
    /* two rows: the batch variance can be tiny, and 1/sqrt(var) amplifies f32 rounding */
    {"batchnorm", "train (2,3) gamma only", mk_batchnorm, ap_batchnorm, cgt_ref_batchnorm, {S2(2, 3)}, {1, 0, 1},
     {1e-5, 0.1}, 20, 0},
    BN("eval (7,5) gamma beta", S2(7, 5), 3, 1, 0),
    BN("eval (3,4) no gamma beta", S2(3, 4), 0, 1, 0),
    {"dropout", "p 0.3 (7,13)", mk_one, ap_dropout, cgt_ref_dropout, {S2(7, 13)}, {1}, {0.3}, 0, 0},
    {"dropout", "p 0.5 (127)", mk_one, ap_dropout, cgt_ref_dropout, {S1(127)}, {1}, {0.5}, 0, 0},
    {"dropout", "eval is the identity", mk_one, ap_dropout, cgt_ref_dropout, {S2(3, 5)}, {0}, {0.5}, 0,
     CGT_NO_NODE},
    PAIR("mse", "mean", CG_REDUCE_MEAN),
    PAIR("mse", "sum", CG_REDUCE_SUM),
    PAIR("mse", "none", CG_REDUCE_NONE),
    PAIR("bce_logits", "mean", CG_REDUCE_MEAN),
    PAIR("bce_logits", "sum", CG_REDUCE_SUM),
    PAIR("bce_logits", "none", CG_REDUCE_NONE),
    CE("(7,5) i64 mean", S2(7, 5), CG_REDUCE_MEAN, 0, 0.0),
    CE("(7,5) i64 sum", S2(7, 5), CG_REDUCE_SUM, 0, 0.0),
    CE("(7,5) i64 none", S2(7, 5), CG_REDUCE_NONE, 0, 0.0),
    CE("(7,5) i32 mean", S2(7, 5), CG_REDUCE_MEAN, 1, 0.0),
    CE("(7,5) smoothing 0.1 mean", S2(7, 5), CG_REDUCE_MEAN, 0, 0.1),
    CE("(3,13) smoothing 0.25 none", S2(3, 13), CG_REDUCE_NONE, 0, 0.25),
    CE("(7,13) smoothing 0.1 sum i32", S2(7, 13), CG_REDUCE_SUM, 1, 0.1),
    CE("(2,1) one class", S2(2, 1), CG_REDUCE_MEAN, 0, 0.0),
    {"reshape", "(3,4,5) -> (12,5)", mk_one, ap_reshape, cgt_ref_reshape, {S3(3, 4, 5), S2(12, 5)}, {0}, {0}, 0, 0},
    {"reshape", "(3,4,5) -> (-1)", mk_one, ap_reshape, cgt_ref_reshape, {S3(3, 4, 5), S1(-1)}, {0}, {0}, 0, 0},
    {"reshape", "(7,13) -> (13,-1)", mk_one, ap_reshape, cgt_ref_reshape, {S2(7, 13), S2(13, -1)}, {0}, {0}, 0, 0},
    {"reshape", "transposed (7,13)^T -> (91)", mk_one, ap_reshape, cgt_ref_reshape, {S2(7, 13), S1(91)}, {0, 0, 1},
     {0}, 0, 0},
    {"transpose", "(7,5) dims 0,1", mk_one, ap_transpose, cgt_ref_transpose, {S2(7, 5)}, {0, 1}, {0}, 0, 0},
    {"transpose", "(2,3,4) dims 0,2", mk_one, ap_transpose, cgt_ref_transpose, {S3(2, 3, 4)}, {0, 2}, {0}, 0, 0},
    {"transpose", "(2,3,4) dims -1,-2", mk_one, ap_transpose, cgt_ref_transpose, {S3(2, 3, 4)}, {-1, -2}, {0}, 0, 0},
    {"slice_rows", "(7,5) rows [2,6)", mk_one, ap_slice, cgt_ref_slice, {S2(7, 5)}, {2, 6}, {0}, 0, 0},
    {"slice_rows", "(7,5) rows [0,7)", mk_one, ap_slice, cgt_ref_slice, {S2(7, 5)}, {0, 7}, {0}, 0, 0},
    {"slice_rows", "(3,4,5) rows [1,2)", mk_one, ap_slice, cgt_ref_slice, {S3(3, 4, 5)}, {1, 2}, {0}, 0, 0},
    {"slice_rows", "(7,5) empty [3,3)", mk_one, ap_slice, cgt_ref_slice, {S2(7, 5)}, {3, 3}, {0}, 0, 0},
    {"contiguous", "of (7,5)^T", mk_one, ap_contiguous, cgt_ref_transpose, {S2(7, 5)}, {0, 1}, {0}, 0, 0},
    {"contiguous", "of (2,3,4) dims 0,2", mk_one, ap_contiguous, cgt_ref_transpose, {S3(2, 3, 4)}, {0, 2}, {0}, 0, 0},
};

const int cgt_n_cases = (int)(sizeof cgt_cases / sizeof cgt_cases[0]);
