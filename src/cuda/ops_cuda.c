/* CUDA forward and backward kernels for every non-view op of ops.def: argument checks,
 * geometry, scratch from the caching allocator, then the launchers of kernels/ (or
 * cuBLASLt / cuDNN). Same semantics as the CPU reference (src/cpu); forward writes (=)
 * out and aux, backward writes (=) each non-NULL gin[i] at input i's shape. */
#include <stdio.h>
#include <string.h>

#include "cuda_internal.h"
#include "ops_cuda.h"

static const char *opname(const cg_op_call *c) { return cg_op_table[c->op].name; }
static int64_t numel(const cg_tensor *t) { return cg__numel(t->shape, t->ndim); }
static int64_t last_dim(const cg_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static void *ptr(const cg_tensor *t) { return t ? cg__ptr(t) : NULL; }

static cg_status need_float(const cg_op_call *c, cg_dtype dt) {
    if (dt != CG_F32 && dt != CG_F64)
        return CG_FAIL(CG_E_DTYPE, "%s: dtype %s not supported on cuda; cast to f32 or f64 with cg_tensor_cast",
                       opname(c), cg_dtype_name(dt));
    return CG_OK;
}

/* The row kernels run one block (or warp group) per row on grid.x: at most 2^31 - 1 rows. */
static cg_status rows_fit(const cg_op_call *c, int64_t rows) {
    if (rows > 0x7fffffff)
        return CG_FAIL(CG_E_UNSUPPORTED, "%s: %lld rows exceed the CUDA row kernels' limit of 2^31 - 1; split the batch "
                                         "into smaller ones or run this op on the CPU",
                       opname(c), (long long)rows);
    return CG_OK;
}

#define CTX(t)                                                                                                \
    cg_cuda_ctx *ctx = NULL; \
    CG_TRY(cg_cuda_ctx_get(cg_cuda_dev_of(t), &ctx))

/* ---------------------------------------------------------------- matmul */

static cg_status mm_dims(const cg_op_call *c, int64_t *M, int64_t *N, int64_t *K) {
    const cg_tensor *a = c->in[0], *b = c->in[1];
    int ta = c->p->trans_a, tb = c->p->trans_b;
    if (a->ndim != 2 || b->ndim != 2)
        return CG_FAIL(CG_E_SHAPE, "matmul: inputs must be 2-d, got %d-d and %d-d", a->ndim, b->ndim);
    *M = ta ? a->shape[1] : a->shape[0];
    *K = ta ? a->shape[0] : a->shape[1];
    *N = tb ? b->shape[0] : b->shape[1];
    int64_t kb = tb ? b->shape[1] : b->shape[0];
    if (kb != *K) return CG_FAIL(CG_E_SHAPE, "matmul: inner dims %lld != %lld", (long long)*K, (long long)kb);
    return CG_OK;
}

static cg_status matmul_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    int64_t M = 0, N = 0, K = 0;
    CG_TRY(mm_dims(c, &M, &N, &K));
    CTX(c->out);
    return cg_cuda_gemm(ctx, c->out->dtype, c->p->trans_a, c->p->trans_b, M, N, K, ptr(c->in[0]), ptr(c->in[1]),
                        ptr(c->out));
}

/* dA' = G B'^T, dB' = A'^T G, laid out back into A's / B's storage (as matmul_cpu.c) */
static cg_status matmul_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_TRY(need_float(c, gout->dtype));
    int64_t M = 0, N = 0, K = 0;
    CG_TRY(mm_dims(c, &M, &N, &K));
    CTX(gout);
    cg_dtype dt = gout->dtype;
    int ta = c->p->trans_a, tb = c->p->trans_b;
    const void *A = ptr(c->in[0]), *B = ptr(c->in[1]), *G = ptr(gout);
    if (gin[0]) {
        if (!ta) CG_TRY(cg_cuda_gemm(ctx, dt, 0, !tb, M, K, N, G, B, ptr(gin[0])));
        else CG_TRY(cg_cuda_gemm(ctx, dt, tb, 1, K, M, N, B, G, ptr(gin[0])));
    }
    if (gin[1]) {
        if (!tb) CG_TRY(cg_cuda_gemm(ctx, dt, !ta, 0, K, N, M, A, G, ptr(gin[1])));
        else CG_TRY(cg_cuda_gemm(ctx, dt, 1, ta, N, K, M, G, A, ptr(gin[1])));
    }
    return CG_OK;
}

/* ---------------------------------------------------------------- linear */

/* out = act(x W^T + b). f32 with a bias: one cuBLASLt call with the bias or GELU epilogue
 * (GELU also writes the pre-activation z to aux). ReLU takes the bias epilogue and then our
 * ReLU kernel: cuBLASLt's ReLU epilogue is max(x, 0), which turns NaN into 0, while cgrad's
 * ReLU (CPU and GPU) lets NaN through so a diverging loss is seen. Otherwise, or when
 * cuBLASLt has no epilogue algorithm for the case: gemm, bias broadcast add, activation. */
static cg_status linear_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    const cg_tensor *x = c->in[0], *w = c->in[1], *b = c->in[2];
    int64_t N = x->shape[0], K = x->shape[1], M = w->shape[0];
    cg_dtype dt = c->out->dtype;
    int act = c->p->act;
    void *z = c->aux[0] ? ptr(c->aux[0]) : NULL;
    CTX(c->out);
    if (b && dt == CG_F32 && K > 0 && N > 0 && M > 0) { /* (an empty b has no pointer to give Lt) */
        cg_cuda_epilogue epi = act == CG_LINEAR_GELU_TANH ? CG_EPI_GELU_BIAS : CG_EPI_BIAS;
        void *pre = NULL; /* ReLU: x W^T + b to scratch, then the ReLU kernel into out */
        cg_status st = act == CG_LINEAR_RELU ? cg_cuda_scratch(ctx->dev, (size_t)(N * M) * sizeof(float), &pre) : CG_OK;
        char saved[1024]; /* a refused epilogue is handled here: keep the caller's last message */
        snprintf(saved, sizeof saved, "%s", cg_last_error());
        if (st == CG_OK) /* GELU without z (no backward follows) takes no aux */
            st = cg_cuda_gemm_ex(ctx, dt, 0, 1, N, M, K, ptr(x), ptr(w), pre ? pre : ptr(c->out), epi, ptr(b),
                                 act == CG_LINEAR_GELU_TANH ? z : NULL);
        if (st == CG_OK && pre)
            st = CG_CUDA_CALL(cg_cuda_unary((int)dt, CG_CUDA_RELU, N * M, 0.0, pre, ptr(c->out), ctx->stream));
        cg_cuda_free(ctx->dev, pre);
        if (st != CG_E_UNSUPPORTED) return st;
        cg__restore_error(saved);
    }
    /* unfused: product, + bias, activation, each kernel with distinct input and output
       buffers (they are __restrict__): the pre-activation goes to out when there is no
       activation, to z when it is kept, else to scratch */
    size_t bytes = (size_t)(N * M) * cg_dtype_size(dt);
    void *pre = act == CG_LINEAR_NONE ? ptr(c->out) : (act == CG_LINEAR_GELU_TANH && z) ? z : NULL;
    void *pre_tmp = NULL, *mm_tmp = NULL;
    cg_status st = CG_OK;
    if (!pre) st = cg_cuda_scratch(ctx->dev, bytes, &pre_tmp), pre = pre_tmp;
    void *mm = pre;
    if (st == CG_OK && b) st = cg_cuda_scratch(ctx->dev, bytes, &mm_tmp), mm = mm_tmp;
    if (st == CG_OK) st = cg_cuda_gemm(ctx, dt, 0, 1, N, M, K, ptr(x), ptr(w), mm);
    if (st == CG_OK && b) {
        int64_t ys[2] = {N, M}, bs[1] = {M};
        cg_cuda_bcast g;
        cg_bcast_init(&g, ys, 2, ys, 2, bs, 1);
        st = CG_CUDA_CALL(cg_cuda_binary((int)dt, CG_CUDA_ADD, &g, mm, ptr(b), pre, ctx->stream));
    }
    if (st == CG_OK && act != CG_LINEAR_NONE) {
        int fn = act == CG_LINEAR_RELU ? CG_CUDA_RELU : CG_CUDA_GELU_TANH;
        st = CG_CUDA_CALL(cg_cuda_unary((int)dt, fn, N * M, 0.0, pre, ptr(c->out), ctx->stream));
    }
    cg_cuda_free(ctx->dev, mm_tmp); /* stream order makes freeing right after the launches safe */
    cg_cuda_free(ctx->dev, pre_tmp);
    return st;
}

/* gz = gy * act'(.) (ReLU from the output, GELU from z): one elementwise pass reading gy
 * and the saved tensor once, writing gz once (cg_cuda_unary_bwd). Then dx = gz W and
 * dW = gz^T x. db = the column sums of gz: for f32 with dW also wanted, out of the dW gemm
 * (cuBLASLt's BGRADB epilogue reduces gz over the batch, which is that gemm's k) when the
 * matmul precision is FP32 (under TF32/BF16, Lt might sum the rounded operand, and db is a
 * plain sum that should not lose bits); else, or when Lt refuses the epilogue, the
 * fixed-order column reduction. The dReLU/dGELU epilogues do not apply here (docs/cuda.md,
 * "Linear backward"). */
static cg_status linear_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_TRY(need_float(c, gout->dtype));
    const cg_tensor *x = c->in[0], *w = c->in[1];
    int64_t N = x->shape[0], K = x->shape[1], M = w->shape[0];
    cg_dtype dt = gout->dtype;
    int act = c->p->act;
    if (act == CG_LINEAR_GELU_TANH && !c->aux[0])
        return CG_FAIL(CG_E_INTERNAL, "linear backward: the pre-activation was not saved");
    CTX(gout);
    size_t es = cg_dtype_size(dt);
    const void *gz = ptr(gout);
    void *tmp = NULL, *ws = NULL;
    cg_status st = CG_OK;
    if (act != CG_LINEAR_NONE) {
        st = cg_cuda_scratch(ctx->dev, (size_t)(N * M) * es, &tmp);
        if (st == CG_OK) {
            int fn = act == CG_LINEAR_RELU ? CG_CUDA_RELU : CG_CUDA_GELU_TANH;
            /* relu'(z) = [z > 0] = [y > 0]: the output stands in for z */
            const void *saved = act == CG_LINEAR_RELU ? ptr(c->out) : ptr(c->aux[0]);
            st = CG_CUDA_CALL(cg_cuda_unary_bwd((int)dt, fn, N * M, 0.0, ptr(gout), saved, tmp, ctx->stream));
        }
        gz = tmp;
    }
    if (st == CG_OK && gin[0]) st = cg_cuda_gemm(ctx, dt, 0, 0, N, K, M, gz, ptr(w), ptr(gin[0]));
    int db_done = 0;
    int fuse_db = gin[1] && gin[2] && dt == CG_F32 && N > 0 && K > 0 && M > 0 &&
                  cg_cuda_get_matmul_precision() == CG_MATMUL_FP32;
    if (st == CG_OK && fuse_db) {
        char saved_err[1024]; /* a refused epilogue is handled here: keep the caller's last message */
        snprintf(saved_err, sizeof saved_err, "%s", cg_last_error());
        st = cg_cuda_gemm_ex(ctx, dt, 1, 0, M, K, N, gz, ptr(x), ptr(gin[1]), CG_EPI_BGRAD, ptr(gin[2]), NULL);
        if (st == CG_OK) db_done = 1;
        if (st == CG_E_UNSUPPORTED) { /* nothing was launched: the plain gemm and the column sums below */
            cg__restore_error(saved_err);
            st = cg_cuda_gemm(ctx, dt, 1, 0, M, K, N, gz, ptr(x), ptr(gin[1]));
        }
    } else if (st == CG_OK && gin[1]) {
        st = cg_cuda_gemm(ctx, dt, 1, 0, M, K, N, gz, ptr(x), ptr(gin[1]));
    }
    if (st == CG_OK && gin[2] && !db_done) {
        size_t wsb = cg_cuda_reduce_workspace((int)dt, 1, N, M);
        if (wsb) st = cg_cuda_scratch(ctx->dev, wsb, &ws);
        if (st == CG_OK)
            st = CG_CUDA_CALL(cg_cuda_reduce_sum((int)dt, 1, N, M, 1.0, gz, ptr(gin[2]), ws, ctx->stream));
    }
    cg_cuda_free(ctx->dev, ws);
    cg_cuda_free(ctx->dev, tmp); /* stream order makes freeing right after the launches safe */
    return st;
}

/* ---------------------------------------------------------------- broadcast binary */

static int binop(cg_op op) {
    return op == CG_OP_ADD ? CG_CUDA_ADD : op == CG_OP_SUB ? CG_CUDA_SUB : op == CG_OP_MUL ? CG_CUDA_MUL : CG_CUDA_DIV;
}

static cg_status binary_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    CTX(c->out);
    cg_cuda_bcast g;
    cg_bcast_init(&g, c->out->shape, c->out->ndim, c->in[0]->shape, c->in[0]->ndim, c->in[1]->shape, c->in[1]->ndim);
    return CG_CUDA_CALL(cg_cuda_binary((int)c->out->dtype, binop(c->op), &g, ptr(c->in[0]), ptr(c->in[1]), ptr(c->out),
                                  ctx->stream));
}

/* dst (input-shaped) = sum of `full` (output-shaped) over the axes where the input is
 * broadcast; one deterministic reduction pass per run of broadcast axes. */
static cg_status reduce_to_input(cg_cuda_ctx *ctx, cg_dtype dt, const void *full, const int64_t *oshape, int ond,
                                 const cg_tensor *in, void *dst) {
    int64_t seg[CG_MAX_DIMS];
    int red[CG_MAX_DIMS], ns = 0, nred = 0, off = ond - in->ndim;
    for (int d = 0; d < ond; d++) {
        if (oshape[d] == 1) continue;
        int r = (d < off ? 1 : in->shape[d - off]) == 1;
        if (ns && red[ns - 1] == r) {
            seg[ns - 1] *= oshape[d];
        } else {
            seg[ns] = oshape[d];
            red[ns] = r;
            nred += r;
            ns++;
        }
    }
    size_t es = cg_dtype_size(dt);
    const void *cur = full;
    void *tmp = NULL;
    cg_status st = CG_OK;
    if (nred == 0) return CG_CUDA_CALL(cudaMemcpyAsync(dst, full, (size_t)numel(in) * es, cudaMemcpyDeviceToDevice, ctx->stream));
    while (nred > 0 && st == CG_OK) {
        int k = ns - 1;
        while (!red[k]) k--;
        int64_t outer = 1, inner = 1, n = seg[k];
        for (int i = 0; i < k; i++) outer *= seg[i];
        for (int i = k + 1; i < ns; i++) inner *= seg[i];
        void *target = dst, *ws = NULL;
        if (nred > 1) st = cg_cuda_scratch(ctx->dev, (size_t)(outer * inner) * es, &target);
        size_t wsb = cg_cuda_reduce_workspace((int)dt, outer, n, inner);
        if (st == CG_OK && wsb) st = cg_cuda_scratch(ctx->dev, wsb, &ws);
        if (st == CG_OK) st = CG_CUDA_CALL(cg_cuda_reduce_sum((int)dt, outer, n, inner, 1.0, cur, target, ws, ctx->stream));
        cg_cuda_free(ctx->dev, ws);
        cg_cuda_free(ctx->dev, tmp); /* stream order makes the early free safe */
        tmp = target == dst ? NULL : target;
        cur = target;
        /* drop segment k and merge its neighbours when both are kept axes */
        for (int i = k; i < ns - 1; i++) {
            seg[i] = seg[i + 1];
            red[i] = red[i + 1];
        }
        ns--;
        nred--;
        if (k > 0 && k < ns && red[k - 1] == red[k]) {
            seg[k - 1] *= seg[k];
            for (int i = k; i < ns - 1; i++) {
                seg[i] = seg[i + 1];
                red[i] = red[i + 1];
            }
            ns--;
        }
    }
    cg_cuda_free(ctx->dev, tmp);
    return st;
}

static cg_status binary_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_TRY(need_float(c, gout->dtype));
    CTX(gout);
    cg_dtype dt = gout->dtype;
    int op = binop(c->op);
    int reads = op == CG_CUDA_MUL || op == CG_CUDA_DIV;
    if (reads && (!c->in[0] || !c->in[1]))
        return CG_FAIL(CG_E_INTERNAL, "%s backward: saved inputs missing", opname(c));
    const cg_tensor *sa = gin[0] ? gin[0] : c->in[0] ? c->in[0] : gout;
    const cg_tensor *sb = gin[1] ? gin[1] : c->in[1] ? c->in[1] : gout;
    cg_cuda_bcast g;
    cg_bcast_init(&g, gout->shape, gout->ndim, sa->shape, sa->ndim, sb->shape, sb->ndim);
    int64_t n = g.n;
    size_t es = cg_dtype_size(dt);
    void *full[2] = {NULL, NULL};
    cg_status st = CG_OK;
    for (int i = 0; i < 2; i++) {
        if (!gin[i]) continue;
        if (n == 0) { /* nothing flows back: the gradient is zero */
            st = CG_CUDA_CALL(cg_cuda_fill((int)dt, numel(gin[i]), 0.0, ptr(gin[i]), ctx->stream));
            if (st != CG_OK) return st;
            continue;
        }
        if (numel(gin[i]) == n) full[i] = ptr(gin[i]);
        else CG_CHECK_GOTO(cg_cuda_scratch(ctx->dev, (size_t)n * es, &full[i]));
    }
    if (n == 0) return CG_OK;
    CG_CHECK_GOTO(CG_CUDA_CALL(cg_cuda_binary_bwd((int)dt, op, &g, ptr(gout), ptr(c->in[0]), ptr(c->in[1]), full[0], full[1],
                                             ctx->stream)));
    for (int i = 0; i < 2; i++)
        if (gin[i] && full[i] != ptr(gin[i]))
            CG_CHECK_GOTO(reduce_to_input(ctx, dt, full[i], gout->shape, gout->ndim, gin[i], ptr(gin[i])));
fail:
    for (int i = 0; i < 2; i++)
        if (gin[i] && full[i] && full[i] != ptr(gin[i])) cg_cuda_free(ctx->dev, full[i]);
    return st;
}

/* ---------------------------------------------------------------- scale, unary */

static cg_status scale_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    CTX(c->out);
    return CG_CUDA_CALL(cg_cuda_scale((int)c->out->dtype, numel(c->out), c->p->alpha, c->p->beta, 1, ptr(c->in[0]),
                                 ptr(c->out), ctx->stream));
}

static cg_status scale_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    CG_TRY(need_float(c, gout->dtype));
    CTX(gout);
    return CG_CUDA_CALL(cg_cuda_scale((int)gout->dtype, numel(gout), c->p->alpha, 0.0, 0, ptr(gout), ptr(gin[0]),
                                      ctx->stream));
}

static int unary_fn(const cg_op_call *c) {
    switch (c->op) {
    case CG_OP_EXP: return CG_CUDA_EXP;
    case CG_OP_LOG: return CG_CUDA_LOG;
    case CG_OP_SQRT: return CG_CUDA_SQRT;
    case CG_OP_SIGMOID: return CG_CUDA_SIGMOID;
    case CG_OP_TANH: return CG_CUDA_TANH;
    case CG_OP_RELU: return CG_CUDA_RELU;
    case CG_OP_LEAKY_RELU: return CG_CUDA_LEAKY_RELU;
    case CG_OP_GELU: return c->p->approximate == CG_GELU_TANH ? CG_CUDA_GELU_TANH : CG_CUDA_GELU_ERF;
    default: return -1;
    }
}

static cg_status unary_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    int fn = unary_fn(c);
    if (fn < 0) return CG_FAIL(CG_E_INTERNAL, "cuda unary kernel called for op %s", opname(c));
    CTX(c->out);
    return CG_CUDA_CALL(cg_cuda_unary((int)c->out->dtype, fn, numel(c->out), c->p->alpha, ptr(c->in[0]), ptr(c->out),
                                 ctx->stream));
}

static cg_status unary_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    CG_TRY(need_float(c, gout->dtype));
    int fn = unary_fn(c);
    if (fn < 0) return CG_FAIL(CG_E_INTERNAL, "cuda unary kernel called for op %s", opname(c));
    int uses_out = c->op == CG_OP_EXP || c->op == CG_OP_SQRT || c->op == CG_OP_SIGMOID || c->op == CG_OP_TANH;
    const cg_tensor *saved = uses_out ? c->out : c->in[0];
    if (!saved) return CG_FAIL(CG_E_INTERNAL, "%s backward: saved tensor missing", opname(c));
    CTX(gout);
    return CG_CUDA_CALL(cg_cuda_unary_bwd((int)gout->dtype, fn, numel(gout), c->p->alpha, ptr(gout), ptr(saved), ptr(gin[0]),
                                     ctx->stream));
}

/* ---------------------------------------------------------------- sum, mean */

static cg_status split_axis(const cg_op_call *c, const cg_tensor *x, int64_t *outer, int64_t *n, int64_t *inner) {
    int axis = c->p->axis;
    if (axis == CG_ALL_AXES || x->ndim == 0) {
        *outer = 1;
        *n = numel(x);
        *inner = 1;
        return CG_OK;
    }
    if (axis < 0 || axis >= x->ndim)
        return CG_FAIL(CG_E_INVALID, "%s: axis %d out of range for a %d-d tensor", opname(c), axis, x->ndim);
    *outer = cg__numel(x->shape, axis);
    *n = x->shape[axis];
    *inner = cg__numel(x->shape + axis + 1, x->ndim - axis - 1);
    return CG_OK;
}

static cg_status reduce_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    int64_t outer = 0, n = 0, inner = 0;
    CG_TRY(split_axis(c, c->in[0], &outer, &n, &inner));
    CG_TRY(rows_fit(c, outer)); /* the sums' row plans put the outer index on grid.x */
    CTX(c->out);
    double scale = c->op == CG_OP_MEAN ? 1.0 / (double)n : 1.0; /* n = 0: inf, and 0 * inf = NaN as on the CPU */
    void *ws = NULL;
    size_t wsb = cg_cuda_reduce_workspace((int)c->out->dtype, outer, n, inner);
    if (wsb) CG_TRY(cg_cuda_scratch(ctx->dev, wsb, &ws));
    cg_status st = CG_CUDA_CALL(
        cg_cuda_reduce_sum((int)c->out->dtype, outer, n, inner, scale, ptr(c->in[0]), ptr(c->out), ws, ctx->stream));
    cg_cuda_free(ctx->dev, ws);
    return st;
}

static cg_status reduce_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    CG_TRY(need_float(c, gout->dtype));
    int64_t outer = 0, n = 0, inner = 0;
    CG_TRY(split_axis(c, gin[0], &outer, &n, &inner));
    CTX(gout);
    double scale = c->op == CG_OP_MEAN ? 1.0 / (double)n : 1.0;
    return CG_CUDA_CALL(cg_cuda_reduce_bwd((int)gout->dtype, outer, n, inner, scale, ptr(gout), ptr(gin[0]), ctx->stream));
}

/* ---------------------------------------------------------------- softmax */

static cg_status softmax_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    const cg_tensor *x = c->in[0];
    int64_t d = last_dim(x), rows = d ? numel(x) / d : 0;
    int logsm = c->op == CG_OP_LOG_SOFTMAX;
    CG_TRY(rows_fit(c, rows));
    CTX(c->out);
    if (cg_cuda_impl_now() == CG_IMPL_CUDNN) {
        cg_status st = cg_cudnn_softmax(ctx, x->dtype, logsm, rows, d, ptr(x), ptr(c->out));
        if (st != CG_E_UNSUPPORTED) return st;
    }
    return CG_CUDA_CALL(cg_cuda_softmax((int)x->dtype, logsm, rows, d, ptr(x), ptr(c->out), ctx->stream));
}

static cg_status softmax_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    CG_TRY(need_float(c, gout->dtype));
    if (!c->out) return CG_FAIL(CG_E_INTERNAL, "%s backward: saved output missing", opname(c));
    int64_t d = last_dim(gout), rows = d ? numel(gout) / d : 0;
    int logsm = c->op == CG_OP_LOG_SOFTMAX;
    CG_TRY(rows_fit(c, rows));
    CTX(gout);
    if (cg_cuda_impl_now() == CG_IMPL_CUDNN) {
        cg_status st = cg_cudnn_softmax_bwd(ctx, gout->dtype, logsm, rows, d, ptr(c->out), ptr(gout), ptr(gin[0]));
        if (st != CG_E_UNSUPPORTED) return st;
    }
    return CG_CUDA_CALL(
        cg_cuda_softmax_bwd((int)gout->dtype, logsm, rows, d, ptr(c->out), ptr(gout), ptr(gin[0]), ctx->stream));
}

/* ---------------------------------------------------------------- layernorm, batchnorm */

static cg_status layernorm_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    const cg_tensor *x = c->in[0];
    int64_t d = last_dim(x), rows = d ? numel(x) / d : 0;
    CG_TRY(rows_fit(c, rows));
    CTX(c->out);
    return CG_CUDA_CALL(cg_cuda_layernorm((int)x->dtype, rows, d, c->p->eps, ptr(x), ptr(c->in[1]), ptr(c->in[2]),
                                     ptr(c->out), ptr(c->aux[0]), ptr(c->aux[1]), ctx->stream));
}

static cg_status layernorm_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_TRY(need_float(c, gout->dtype));
    const cg_tensor *x = c->in[0];
    if (!x) return CG_FAIL(CG_E_INTERNAL, "layernorm backward: saved input missing");
    if (!c->aux[0] || !c->aux[1]) return CG_FAIL(CG_E_INTERNAL, "layernorm backward: mean/rstd buffers missing");
    int64_t d = last_dim(x), rows = d ? numel(x) / d : 0;
    CTX(gout);
    void *ws = NULL;
    if (gin[1] || gin[2]) CG_TRY(cg_cuda_scratch(ctx->dev, cg_cuda_layernorm_bwd_workspace((int)gout->dtype, rows, d), &ws));
    cg_status st = CG_CUDA_CALL(cg_cuda_layernorm_bwd((int)gout->dtype, rows, d, ptr(x), ptr(gout), ptr(c->in[1]),
                                                 ptr(c->aux[0]), ptr(c->aux[1]), ptr(gin[0]), ptr(gin[1]), ptr(gin[2]),
                                                 ws, ctx->stream));
    cg_cuda_free(ctx->dev, ws);
    return st;
}

static cg_status batchnorm_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    const cg_tensor *x = c->in[0];
    int64_t N = x->shape[0], C = x->shape[1];
    CTX(c->out);
    if (cg_cuda_impl_now() == CG_IMPL_CUDNN) {
        cg_status st = cg_cudnn_batchnorm(ctx, c);
        if (st != CG_E_UNSUPPORTED) return st;
    }
    size_t es = cg_dtype_size(x->dtype);
    void *ws = NULL;
    size_t wsb = cg_cuda_batchnorm_workspace((int)x->dtype, N, C);
    CG_TRY(cg_cuda_scratch(ctx->dev, wsb, &ws));
    /* mean/rstd go to aux, or to the tail of the workspace when no aux was asked for */
    char *tail = (char *)ws + wsb - (size_t)(2 * C) * es;
    void *mean = c->aux[0] ? ptr(c->aux[0]) : tail, *rstd = c->aux[1] ? ptr(c->aux[1]) : tail + (size_t)C * es;
    cg_status st = CG_CUDA_CALL(cg_cuda_batchnorm((int)x->dtype, c->p->training, N, C, c->p->eps, c->p->momentum, ptr(x),
                                             ptr(c->in[1]), ptr(c->in[2]), ptr(c->in[3]), ptr(c->in[4]), ptr(c->out),
                                             mean, rstd, ws, ctx->stream));
    cg_cuda_free(ctx->dev, ws);
    return st;
}

static cg_status batchnorm_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_TRY(need_float(c, gout->dtype));
    const cg_tensor *x = c->in[0];
    if (!x) return CG_FAIL(CG_E_INTERNAL, "batchnorm backward: saved input missing");
    if (!c->aux[0] || !c->aux[1]) return CG_FAIL(CG_E_INTERNAL, "batchnorm backward: mean/rstd buffers missing");
    int64_t N = x->shape[0], C = x->shape[1];
    CTX(gout);
    if (cg_cuda_impl_now() == CG_IMPL_CUDNN) {
        cg_status st = cg_cudnn_batchnorm_bwd(ctx, c, gout, gin);
        if (st != CG_E_UNSUPPORTED) return st;
    }
    void *ws = NULL;
    CG_TRY(cg_cuda_scratch(ctx->dev, cg_cuda_batchnorm_workspace((int)x->dtype, N, C), &ws));
    cg_status st = CG_CUDA_CALL(cg_cuda_batchnorm_bwd((int)x->dtype, c->p->training, N, C, ptr(x), ptr(gout), ptr(c->in[1]),
                                                 ptr(c->aux[0]), ptr(c->aux[1]), ptr(gin[0]), ptr(gin[1]), ptr(gin[2]),
                                                 ws, ctx->stream));
    cg_cuda_free(ctx->dev, ws);
    return st;
}

/* ---------------------------------------------------------------- dropout */

static cg_status dropout_apply(const cg_op_call *c, const cg_tensor *src, cg_tensor *dst) {
    CG_TRY(need_float(c, dst->dtype));
    if (c->p->p < 0.0 || c->p->p > 1.0) return CG_FAIL(CG_E_INVALID, "dropout: p = %g is outside [0, 1]", c->p->p);
    CTX(dst);
    return CG_CUDA_CALL(cg_cuda_dropout((int)dst->dtype, numel(dst), c->p->p, c->p->seed, c->p->offset,
                                        c->p->offset_shift, ptr(src), ptr(dst), ctx->stream));
}

static cg_status dropout_fwd(const cg_op_call *c) { return dropout_apply(c, c->in[0], c->out); }

static cg_status dropout_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    return dropout_apply(c, gout, gin[0]);
}

/* ---------------------------------------------------------------- losses */

/* out (0-d) = scale * sum of n terms */
static cg_status sum_terms(cg_cuda_ctx *ctx, cg_dtype dt, int64_t n, double scale, const void *terms, void *out) {
    void *ws = NULL;
    size_t wsb = cg_cuda_reduce_workspace((int)dt, 1, n, 1);
    if (wsb) CG_TRY(cg_cuda_scratch(ctx->dev, wsb, &ws));
    cg_status st = CG_CUDA_CALL(cg_cuda_reduce_sum((int)dt, 1, n, 1, scale, terms, out, ws, ctx->stream));
    cg_cuda_free(ctx->dev, ws);
    return st;
}

/* what the CPU divides a loss's sum and its gradient by (loss_cpu.inc), and its inverse */
static double loss_div(cg_reduction r, int64_t n) { return r == CG_REDUCE_MEAN ? (double)n : 1.0; }
static double red_scale(cg_reduction r, int64_t n) { return 1.0 / loss_div(r, n); }

static cg_status pair_loss_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    cg_dtype dt = c->out->dtype;
    int64_t n = numel(c->in[0]);
    CTX(c->out);
    int mse = c->op == CG_OP_MSE;
    if (c->p->reduction == CG_REDUCE_NONE)
        return CG_CUDA_CALL(mse ? cg_cuda_mse_terms((int)dt, n, ptr(c->in[0]), ptr(c->in[1]), ptr(c->out), ctx->stream)
                           : cg_cuda_bce_terms((int)dt, n, ptr(c->in[0]), ptr(c->in[1]), ptr(c->out), ctx->stream));
    void *ws = NULL;
    CG_TRY(cg_cuda_scratch(ctx->dev, cg_cuda_pair_loss_workspace(n), &ws));
    cg_status st = CG_CUDA_CALL(cg_cuda_pair_loss_sum((int)dt, !mse, n, ptr(c->in[0]), ptr(c->in[1]),
                                                      loss_div(c->p->reduction, n), ptr(c->out), ws, ctx->stream));
    cg_cuda_free(ctx->dev, ws);
    return st;
}

static cg_status pair_loss_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0] && !gin[1]) return CG_OK;
    CG_TRY(need_float(c, gout->dtype));
    if (!c->in[0] || !c->in[1]) return CG_FAIL(CG_E_INTERNAL, "%s backward: saved inputs missing", opname(c));
    int64_t n = numel(c->in[0]);
    int per = c->p->reduction == CG_REDUCE_NONE;
    double div = loss_div(c->p->reduction, n);
    CTX(gout);
    if (c->op == CG_OP_MSE)
        return CG_CUDA_CALL(cg_cuda_mse_bwd((int)gout->dtype, n, per, div, ptr(gout), ptr(c->in[0]), ptr(c->in[1]),
                                       ptr(gin[0]), ptr(gin[1]), ctx->stream));
    return CG_CUDA_CALL(cg_cuda_bce_bwd((int)gout->dtype, n, per, div, ptr(gout), ptr(c->in[0]), ptr(c->in[1]),
                                   ptr(gin[0]), ptr(gin[1]), ctx->stream));
}

static cg_status softmax_ce_fwd(const cg_op_call *c) {
    CG_TRY(need_float(c, c->out->dtype));
    const cg_tensor *x = c->in[0], *lab = c->in[1];
    int64_t N = x->shape[0], C = x->shape[1];
    cg_dtype dt = x->dtype;
    CG_TRY(rows_fit(c, N));
    CTX(c->out);
    void *loss = ptr(c->out);
    int red = c->p->reduction != CG_REDUCE_NONE;
    if (red) CG_TRY(cg_cuda_scratch(ctx->dev, (size_t)(N ? N : 1) * cg_dtype_size(dt), &loss));
    cg_status st = CG_CUDA_CALL(cg_cuda_softmax_ce((int)dt, N, C, ptr(x), ptr(lab), lab->dtype == CG_I64,
                                              c->p->label_smoothing, red_scale(c->p->reduction, N), loss,
                                              ptr(c->aux[0]), cg_cuda_err_sink_of(ctx), ctx->stream));
    if (st == CG_OK && red) st = sum_terms(ctx, dt, N, red_scale(c->p->reduction, N), loss, ptr(c->out));
    if (red) cg_cuda_free(ctx->dev, loss);
    return st;
}

static cg_status softmax_ce_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    CG_TRY(need_float(c, gout->dtype));
    if (!c->aux[0]) return CG_FAIL(CG_E_INTERNAL, "softmax_cross_entropy backward: saved gradient missing");
    int64_t N = c->aux[0]->shape[0], C = c->aux[0]->shape[1];
    int per = c->p->reduction == CG_REDUCE_NONE;
    CTX(gout);
    /* the aux already carries the 1/N of a mean (CPU convention) */
    return CG_CUDA_CALL(cg_cuda_softmax_ce_bwd((int)gout->dtype, N, C, per, 1.0, ptr(gout), ptr(c->aux[0]), ptr(gin[0]),
                                          ctx->stream));
}

/* ---------------------------------------------------------------- contiguous */

static cg_status contiguous_fwd(const cg_op_call *c) { return cg_cuda_copy_strided_impl(c->out, c->in[0]); }

static cg_status contiguous_bwd(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    (void)c;
    if (!gin[0]) return CG_OK;
    return cg_cuda_copy_strided_impl(gin[0], gout);
}

/* ---------------------------------------------------------------- tables */

/* Every op with a CUDA kernel, X(op, forward, backward); RESHAPE, TRANSPOSE and SLICE_ROWS
 * are views and have none. The tables the backend exports run each kernel under the device
 * guard (cuda_internal.h), so an op on cuda:N leaves the caller's thread on its own device. */
#define CUDA_OPS(X)                                      \
    X(CG_OP_MATMUL, matmul_fwd, matmul_bwd)              \
    X(CG_OP_LINEAR, linear_fwd, linear_bwd)              \
    X(CG_OP_ADD, binary_fwd, binary_bwd)                 \
    X(CG_OP_SUB, binary_fwd, binary_bwd)                 \
    X(CG_OP_MUL, binary_fwd, binary_bwd)                 \
    X(CG_OP_DIV, binary_fwd, binary_bwd)                 \
    X(CG_OP_SCALE, scale_fwd, scale_bwd)                 \
    X(CG_OP_SUM, reduce_fwd, reduce_bwd)                 \
    X(CG_OP_MEAN, reduce_fwd, reduce_bwd)                \
    X(CG_OP_EXP, unary_fwd, unary_bwd)                   \
    X(CG_OP_LOG, unary_fwd, unary_bwd)                   \
    X(CG_OP_SQRT, unary_fwd, unary_bwd)                  \
    X(CG_OP_SIGMOID, unary_fwd, unary_bwd)               \
    X(CG_OP_TANH, unary_fwd, unary_bwd)                  \
    X(CG_OP_RELU, unary_fwd, unary_bwd)                  \
    X(CG_OP_LEAKY_RELU, unary_fwd, unary_bwd)            \
    X(CG_OP_GELU, unary_fwd, unary_bwd)                  \
    X(CG_OP_SOFTMAX, softmax_fwd, softmax_bwd)           \
    X(CG_OP_LOG_SOFTMAX, softmax_fwd, softmax_bwd)       \
    X(CG_OP_LAYERNORM, layernorm_fwd, layernorm_bwd)     \
    X(CG_OP_BATCHNORM, batchnorm_fwd, batchnorm_bwd)     \
    X(CG_OP_DROPOUT, dropout_fwd, dropout_bwd)           \
    X(CG_OP_MSE, pair_loss_fwd, pair_loss_bwd)           \
    X(CG_OP_BCE_LOGITS, pair_loss_fwd, pair_loss_bwd)    \
    X(CG_OP_SOFTMAX_CE, softmax_ce_fwd, softmax_ce_bwd)  \
    X(CG_OP_CONTIGUOUS, contiguous_fwd, contiguous_bwd)

#define FWD_IMPL(op, fwd, bwd) [op] = fwd,
#define BWD_IMPL(op, fwd, bwd) [op] = bwd,
static const cg_fwd_fn fwd_impl[CG_OP_COUNT] = {CUDA_OPS(FWD_IMPL)};
static const cg_bwd_fn bwd_impl[CG_OP_COUNT] = {CUDA_OPS(BWD_IMPL)};

static cg_status fwd_guarded(const cg_op_call *c) { CG_CUDA_RETURN_GUARDED(fwd_impl[c->op](c)); }
static cg_status bwd_guarded(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    CG_CUDA_RETURN_GUARDED(bwd_impl[c->op](c, gout, gin));
}

#define FWD_ENTRY(op, fwd, bwd) [op] = fwd_guarded,
#define BWD_ENTRY(op, fwd, bwd) [op] = bwd_guarded,
const cg_fwd_fn cg_cuda_forward_table[CG_OP_COUNT] = {CUDA_OPS(FWD_ENTRY)};
const cg_bwd_fn cg_cuda_backward_table[CG_OP_COUNT] = {CUDA_OPS(BWD_ENTRY)};
