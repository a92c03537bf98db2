/* Float64 references for the op-case table (see op_refs.h). */
#include "op_refs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "philox.h"

static int64_t shape_numel(const int64_t *s, int nd) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= s[i];
    return n;
}

static void out_init(cgt_ref *o, const int64_t *shape, int ndim) {
    o->ndim = ndim;
    for (int i = 0; i < ndim; i++) o->shape[i] = shape[i];
    int64_t n = shape_numel(shape, ndim);
    o->v = calloc((size_t)(n ? n : 1), sizeof(double));
}

void cgt_ref_compute(const cgt_inst *I, cgt_ref *o) {
    memset(o, 0, sizeof *o);
    I->c->ref(I, o);
}

void cgt_ref_free(cgt_ref *o) {
    free(o->v);
    o->v = NULL;
}

void cgt_transpose_nd(const double *src, const int64_t *shape, int ndim, int d0, int d1, double *dst,
                      int64_t *out_shape) {
    if (d0 < 0) d0 += ndim;
    if (d1 < 0) d1 += ndim;
    int64_t os[CG_MAX_DIMS] = {0}, st[CG_MAX_DIMS] = {0}, ost[CG_MAX_DIMS] = {0};
    for (int i = 0; i < ndim; i++) os[i] = shape[i];
    os[d0] = shape[d1];
    os[d1] = shape[d0];
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) st[i] = s, s *= shape[i];
    for (int i = 0; i < ndim; i++) ost[i] = st[i];
    ost[d0] = st[d1];
    ost[d1] = st[d0];
    int64_t n = shape_numel(shape, ndim);
    for (int64_t k = 0; k < n; k++) { /* k indexes the output in row-major order */
        int64_t rem = k, src_off = 0;
        for (int i = ndim - 1; i >= 0; i--) {
            int64_t idx = rem % os[i];
            rem /= os[i];
            src_off += idx * ost[i];
        }
        dst[k] = src[src_off];
    }
    if (out_shape)
        for (int i = 0; i < ndim; i++) out_shape[i] = os[i];
}

/* Input 0 as the op sees it: transposed back when the case stores it transposed (ip[2]). */
static double *logical_in0(const cgt_inst *I, int64_t *shape, int *ndim) {
    const cgt_arg *a = &I->in[0];
    int64_t n = cgt_arg_numel(a);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    *ndim = a->ndim;
    if (I->c->ip[2] && strcmp(I->c->op, "matmul") != 0) {
        cgt_transpose_nd(a->v, a->shape, a->ndim, 0, 1, v, shape);
    } else {
        memcpy(v, a->v, (size_t)n * sizeof *v);
        for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
    }
    return v;
}

void cgt_ref_matmul(const cgt_inst *I, cgt_ref *o) {
    const cgt_arg *a = &I->in[0], *b = &I->in[1];
    int ta = I->c->ip[0], tb = I->c->ip[1];
    int64_t M = ta ? a->shape[1] : a->shape[0], K = ta ? a->shape[0] : a->shape[1];
    int64_t N = tb ? b->shape[0] : b->shape[1];
    int64_t s[2] = {M, N};
    out_init(o, s, 2);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) {
                double x = ta ? a->v[k * M + i] : a->v[i * K + k];
                double y = tb ? b->v[j * K + k] : b->v[k * N + j];
                acc += x * y;
            }
            o->v[i * N + j] = acc;
        }
}

/* act(x w^T + b), act by ip[0] (cg_linear_act) */
void cgt_ref_linear(const cgt_inst *I, cgt_ref *o) {
    const cgt_arg *x = &I->in[0], *w = &I->in[1], *b = &I->in[2];
    int64_t N = x->shape[0], K = x->shape[1], M = w->shape[0];
    int64_t s[2] = {N, M};
    out_init(o, s, 2);
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < M; j++) {
            double z = b->present ? b->v[j] : 0.0;
            for (int64_t k = 0; k < K; k++) z += x->v[i * K + k] * w->v[j * K + k];
            if (I->c->ip[0] == CG_LINEAR_RELU) z = z > 0 ? z : 0;
            else if (I->c->ip[0] == CG_LINEAR_GELU_TANH) z = cgt_gelu_tanh(z);
            o->v[i * M + j] = z;
        }
}

/* Offset of broadcast operand (shape s, nd dims) for output multi-index idx (ndo dims). */
static int64_t bcast_off(const int64_t *idx, int ndo, const int64_t *s, int nd) {
    int64_t off = 0, stride = 1;
    for (int i = nd - 1; i >= 0; i--) {
        int io = ndo - nd + i;
        off += (s[i] == 1 ? 0 : idx[io]) * stride;
        stride *= s[i];
    }
    return off;
}

void cgt_ref_binary(const cgt_inst *I, cgt_ref *o) {
    int64_t sa[CG_MAX_DIMS];
    int na;
    double *av = logical_in0(I, sa, &na);
    const cgt_arg *b = &I->in[1];
    int nd = na > b->ndim ? na : b->ndim;
    int64_t so[CG_MAX_DIMS] = {0};
    for (int i = 0; i < nd; i++) {
        int ia = na - nd + i, ib = b->ndim - nd + i;
        int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        so[i] = da == 1 ? db : da;
    }
    out_init(o, so, nd);
    int64_t n = shape_numel(so, nd), idx[CG_MAX_DIMS];
    const char *op = I->c->op;
    for (int64_t k = 0; k < n; k++) {
        int64_t rem = k;
        for (int i = nd - 1; i >= 0; i--) idx[i] = rem % so[i], rem /= so[i];
        double x = av[bcast_off(idx, nd, sa, na)], y = b->v[bcast_off(idx, nd, b->shape, b->ndim)];
        o->v[k] = !strcmp(op, "add") ? x + y : !strcmp(op, "sub") ? x - y : !strcmp(op, "mul") ? x * y : x / y;
    }
    free(av);
}

double cgt_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
double cgt_gelu_erf(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
double cgt_gelu_tanh(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
}

void cgt_ref_unary(const cgt_inst *I, cgt_ref *o) {
    int64_t s[CG_MAX_DIMS];
    int nd;
    double *x = logical_in0(I, s, &nd);
    out_init(o, s, nd);
    const cgt_case *c = I->c;
    const char *op = c->op;
    for (int64_t k = 0; k < shape_numel(s, nd); k++) {
        double v = x[k], y;
        if (!strcmp(op, "scale")) y = c->dp[0] * v + c->dp[1];
        else if (!strcmp(op, "exp")) y = exp(v);
        else if (!strcmp(op, "log")) y = log(v);
        else if (!strcmp(op, "sqrt")) y = sqrt(v);
        else if (!strcmp(op, "sigmoid")) y = cgt_sigmoid(v);
        else if (!strcmp(op, "tanh")) y = tanh(v);
        else if (!strcmp(op, "relu")) y = v > 0 ? v : 0;
        else if (!strcmp(op, "leaky_relu")) y = v > 0 ? v : c->dp[0] * v;
        else if (!strcmp(op, "gelu")) y = c->ip[0] == CG_GELU_TANH ? cgt_gelu_tanh(v) : cgt_gelu_erf(v);
        else y = NAN;
        o->v[k] = y;
    }
    free(x);
}

void cgt_ref_reduce(const cgt_inst *I, cgt_ref *o) {
    const cgt_arg *a = &I->in[0];
    int axis = I->c->ip[0], keep = I->c->ip[1], mean = !strcmp(I->c->op, "mean");
    int64_t n = cgt_arg_numel(a);
    if (axis == CG_ALL_AXES) {
        int64_t s[CG_MAX_DIMS];
        for (int i = 0; i < a->ndim; i++) s[i] = 1;
        out_init(o, s, keep ? a->ndim : 0);
        double acc = 0;
        for (int64_t k = 0; k < n; k++) acc += a->v[k];
        o->v[0] = mean ? acc / (double)n : acc;
        return;
    }
    if (axis < 0) axis += a->ndim;
    int64_t outer = 1, inner = 1, len = a->shape[axis], s[CG_MAX_DIMS];
    for (int i = 0; i < axis; i++) outer *= a->shape[i];
    for (int i = axis + 1; i < a->ndim; i++) inner *= a->shape[i];
    int k = 0;
    for (int i = 0; i < a->ndim; i++)
        if (i != axis) s[k++] = a->shape[i];
        else if (keep) s[k++] = 1;
    out_init(o, s, k);
    for (int64_t p = 0; p < outer; p++)
        for (int64_t q = 0; q < inner; q++) {
            double acc = 0;
            for (int64_t j = 0; j < len; j++) acc += a->v[(p * len + j) * inner + q];
            o->v[p * inner + q] = mean ? acc / (double)len : acc;
        }
}

void cgt_ref_softmax(const cgt_inst *I, cgt_ref *o) {
    int64_t s[CG_MAX_DIMS];
    int nd;
    double *x = logical_in0(I, s, &nd);
    out_init(o, s, nd);
    int64_t d = s[nd - 1], rows = shape_numel(s, nd) / d;
    int logsm = !strcmp(I->c->op, "log_softmax");
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * d;
        double m = xr[0], z = 0;
        for (int64_t j = 1; j < d; j++) m = xr[j] > m ? xr[j] : m;
        for (int64_t j = 0; j < d; j++) z += exp(xr[j] - m);
        for (int64_t j = 0; j < d; j++) o->v[r * d + j] = logsm ? xr[j] - m - log(z) : exp(xr[j] - m) / z;
    }
    free(x);
}

void cgt_ref_layernorm(const cgt_inst *I, cgt_ref *o) {
    const cgt_arg *a = &I->in[0], *g = &I->in[1], *b = &I->in[2];
    out_init(o, a->shape, a->ndim);
    int64_t d = a->shape[a->ndim - 1], rows = cgt_arg_numel(a) / d;
    double eps = I->c->dp[0];
    for (int64_t r = 0; r < rows; r++) {
        const double *x = a->v + r * d;
        double mu = 0, var = 0;
        for (int64_t j = 0; j < d; j++) mu += x[j];
        mu /= (double)d;
        for (int64_t j = 0; j < d; j++) var += (x[j] - mu) * (x[j] - mu);
        var /= (double)d;
        for (int64_t j = 0; j < d; j++) {
            double y = (x[j] - mu) / sqrt(var + eps);
            if (g->present) y *= g->v[j];
            if (b->present) y += b->v[j];
            o->v[r * d + j] = y;
        }
    }
}

void cgt_ref_batchnorm(const cgt_inst *I, cgt_ref *o) {
    const cgt_arg *a = &I->in[0], *g = &I->in[1], *b = &I->in[2], *rm = &I->in[3], *rv = &I->in[4];
    out_init(o, a->shape, a->ndim);
    int64_t n = a->shape[0], c = a->shape[1];
    double eps = I->c->dp[0];
    int training = I->c->ip[2];
    for (int64_t j = 0; j < c; j++) {
        double mu = 0, var = 0;
        if (training) {
            for (int64_t i = 0; i < n; i++) mu += a->v[i * c + j];
            mu /= (double)n;
            for (int64_t i = 0; i < n; i++) var += (a->v[i * c + j] - mu) * (a->v[i * c + j] - mu);
            var /= (double)n; /* biased for normalisation */
        } else {
            mu = rm->v[j];
            var = rv->v[j];
        }
        for (int64_t i = 0; i < n; i++) {
            double y = (a->v[i * c + j] - mu) / sqrt(var + eps);
            if (g->present) y *= g->v[j];
            if (b->present) y += b->v[j];
            o->v[i * c + j] = y;
        }
    }
}

void cgt_ref_dropout(const cgt_inst *I, cgt_ref *o) {
    const cgt_arg *a = &I->in[0];
    out_init(o, a->shape, a->ndim);
    double p = I->c->dp[0];
    for (int64_t k = 0; k < cgt_arg_numel(a); k++) {
        if (!I->c->ip[0])
            o->v[k] = a->v[k];
        else
            o->v[k] = cg_dropout_keep(I->seed, I->offset, (uint64_t)k, (float)p) ? a->v[k] / (1.0 - p) : 0.0;
    }
}

static void reduce_loss(const double *l, int64_t n, const cgt_arg *shape_of, cg_reduction red, cgt_ref *o,
                        int per_row) {
    if (red == CG_REDUCE_NONE) {
        int64_t s[1] = {n};
        if (per_row) out_init(o, s, 1);
        else out_init(o, shape_of->shape, shape_of->ndim);
        memcpy(o->v, l, (size_t)n * sizeof *l);
        return;
    }
    out_init(o, NULL, 0);
    double acc = 0;
    for (int64_t k = 0; k < n; k++) acc += l[k];
    o->v[0] = red == CG_REDUCE_MEAN ? acc / (double)n : acc;
}

void cgt_ref_pair_loss(const cgt_inst *I, cgt_ref *o) {
    const cgt_arg *x = &I->in[0], *t = &I->in[1];
    int64_t n = cgt_arg_numel(x);
    double *l = malloc((size_t)n * sizeof *l);
    int bce = !strcmp(I->c->op, "bce_logits");
    for (int64_t k = 0; k < n; k++) {
        double a = x->v[k], y = t->v[k];
        /* BCE from its definition: -(y log s(a) + (1-y) log(1 - s(a))), in a stable form */
        l[k] = bce ? (a > 0 ? a : 0) - a * y + log1p(exp(-fabs(a))) : (a - y) * (a - y);
    }
    reduce_loss(l, n, x, (cg_reduction)I->c->ip[0], o, 0);
    free(l);
}

void cgt_ref_ce(const cgt_inst *I, cgt_ref *o) {
    const cgt_arg *x = &I->in[0], *lab = &I->in[1];
    int64_t n = x->shape[0], c = x->shape[1];
    double eps = I->c->dp[0];
    double *l = malloc((size_t)(n ? n : 1) * sizeof *l);
    for (int64_t i = 0; i < n; i++) {
        const double *z = x->v + i * c;
        double m = z[0], s = 0, sum_logp = 0;
        for (int64_t j = 1; j < c; j++) m = z[j] > m ? z[j] : m;
        for (int64_t j = 0; j < c; j++) s += exp(z[j] - m);
        double lse = m + log(s);
        for (int64_t j = 0; j < c; j++) sum_logp += z[j] - lse;
        int64_t y = (int64_t)lab->v[i];
        /* PyTorch label smoothing: target (1-eps) one-hot + eps/C uniform */
        l[i] = -(1.0 - eps) * (z[y] - lse) - eps / (double)c * sum_logp;
    }
    reduce_loss(l, n, x, (cg_reduction)I->c->ip[0], o, 1);
    free(l);
}

void cgt_ref_reshape(const cgt_inst *I, cgt_ref *o) {
    int64_t s[CG_MAX_DIMS];
    int nd;
    double *x = logical_in0(I, s, &nd);
    const cgt_shape *t = &I->c->s[1];
    int64_t n = shape_numel(s, nd), known = 1, ts[CG_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) known *= t->d[i] == -1 ? 1 : t->d[i];
    for (int i = 0; i < t->ndim; i++) ts[i] = t->d[i] == -1 ? n / known : t->d[i];
    out_init(o, ts, t->ndim);
    memcpy(o->v, x, (size_t)n * sizeof *x);
    free(x);
}

void cgt_ref_transpose(const cgt_inst *I, cgt_ref *o) {
    const cgt_arg *a = &I->in[0];
    out_init(o, a->shape, a->ndim);
    cgt_transpose_nd(a->v, a->shape, a->ndim, I->c->ip[0], I->c->ip[1], o->v, o->shape);
}

void cgt_ref_slice(const cgt_inst *I, cgt_ref *o) {
    const cgt_arg *a = &I->in[0];
    int64_t s[CG_MAX_DIMS], start = I->c->ip[0], end = I->c->ip[1];
    for (int i = 0; i < a->ndim; i++) s[i] = a->shape[i];
    s[0] = end - start;
    out_init(o, s, a->ndim);
    int64_t row = cgt_arg_numel(a) / (a->shape[0] ? a->shape[0] : 1);
    memcpy(o->v, a->v + start * row, (size_t)((end - start) * row) * sizeof(double));
}
