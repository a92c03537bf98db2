/* The op table generated from ops.def, and the shape rules it names. */
#include "backend.h"

static cg_status shape_same(const cg_op_call *c, int64_t *shape, int *ndim, cg_dtype *dt) {
    const cg_tensor *x = c->in[0];
    *ndim = x->ndim;
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    *dt = x->dtype;
    return CG_OK;
}

static cg_status shape_matmul(const cg_op_call *c, int64_t *shape, int *ndim, cg_dtype *dt) {
    const cg_tensor *a = c->in[0], *b = c->in[1];
    char sa[96], sb[96];
    if (a->ndim != 2 || b->ndim != 2)
        return CG_FAIL(CG_E_SHAPE, "matmul: needs 2-d tensors, got %s and %s", cg__shape_str(a->shape, a->ndim, sa, 96),
                       cg__shape_str(b->shape, b->ndim, sb, 96));
    int64_t m = c->p->trans_a ? a->shape[1] : a->shape[0], ka = c->p->trans_a ? a->shape[0] : a->shape[1];
    int64_t kb = c->p->trans_b ? b->shape[1] : b->shape[0], n = c->p->trans_b ? b->shape[0] : b->shape[1];
    if (ka != kb)
        return CG_FAIL(CG_E_SHAPE, "matmul: shapes %s%s x %s%s do not chain: inner dims %lld != %lld",
                       cg__shape_str(a->shape, 2, sa, 96), c->p->trans_a ? "^T" : "", cg__shape_str(b->shape, 2, sb, 96),
                       c->p->trans_b ? "^T" : "", (long long)ka, (long long)kb);
    *ndim = 2;
    shape[0] = m;
    shape[1] = n;
    *dt = a->dtype;
    return CG_OK;
}

/* x (N, K), w (M, K) as torch.nn.Linear, b (M) or NULL -> (N, M) */
static cg_status shape_linear(const cg_op_call *c, int64_t *shape, int *ndim, cg_dtype *dt) {
    const cg_tensor *x = c->in[0], *w = c->in[1], *b = c->in[2];
    char sx[96], sw[96];
    if (x->ndim != 2 || w->ndim != 2 || x->shape[1] != w->shape[1])
        return CG_FAIL(CG_E_SHAPE, "linear: needs x (N, K) and weight (M, K), got %s and %s",
                       cg__shape_str(x->shape, x->ndim, sx, 96), cg__shape_str(w->shape, w->ndim, sw, 96));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return CG_FAIL(CG_E_SHAPE, "linear: bias must have shape (%lld), got %s", (long long)w->shape[0],
                       cg__shape_str(b->shape, b->ndim, sx, 96));
    *ndim = 2;
    shape[0] = x->shape[0];
    shape[1] = w->shape[0];
    *dt = x->dtype;
    return CG_OK;
}

static cg_status shape_broadcast(const cg_op_call *c, int64_t *shape, int *ndim, cg_dtype *dt) {
    const cg_tensor *a = c->in[0], *b = c->in[1];
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[96], sb[96];
            return CG_FAIL(CG_E_SHAPE, "%s: shapes %s and %s do not broadcast (dimension %d: %lld vs %lld)",
                           cg_op_table[c->op].name, cg__shape_str(a->shape, a->ndim, sa, 96),
                           cg__shape_str(b->shape, b->ndim, sb, 96), i, (long long)da, (long long)db);
        }
        shape[i] = da == 1 ? db : da;
    }
    *ndim = nd;
    *dt = a->dtype;
    return CG_OK;
}

static cg_status shape_reduce(const cg_op_call *c, int64_t *shape, int *ndim, cg_dtype *dt) {
    const cg_tensor *x = c->in[0];
    *dt = x->dtype;
    if (c->p->axis == CG_ALL_AXES) {
        *ndim = c->p->keepdim ? x->ndim : 0;
        for (int i = 0; i < *ndim; i++) shape[i] = 1;
        return CG_OK;
    }
    int k = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i != c->p->axis)
            shape[k++] = x->shape[i];
        else if (c->p->keepdim)
            shape[k++] = 1;
    }
    *ndim = k;
    return CG_OK;
}

static cg_status shape_loss(const cg_op_call *c, int64_t *shape, int *ndim, cg_dtype *dt) {
    const cg_tensor *x = c->in[0];
    *dt = x->dtype;
    if (c->p->reduction != CG_REDUCE_NONE) {
        *ndim = 0;
        return CG_OK;
    }
    if (c->op == CG_OP_SOFTMAX_CE) {
        *ndim = 1;
        shape[0] = x->shape[0];
        return CG_OK;
    }
    return shape_same(c, shape, ndim, dt);
}

static cg_status shape_view(const cg_op_call *c, int64_t *shape, int *ndim, cg_dtype *dt) {
    /* views are built in ops.c; their geometry is already in the params */
    *ndim = c->p->view_ndim;
    for (int i = 0; i < *ndim; i++) shape[i] = c->p->view_shape[i];
    *dt = c->in[0]->dtype;
    return CG_OK;
}

/* backward rules live in autograd.c */
cg_status bw_kernel(cg_node *n, const cg_tensor *gout, cg_tensor **gin);
cg_status bw_softmax_ce(cg_node *n, const cg_tensor *gout, cg_tensor **gin);
cg_status bw_reshape(cg_node *n, const cg_tensor *gout, cg_tensor **gin);
cg_status bw_transpose(cg_node *n, const cg_tensor *gout, cg_tensor **gin);
cg_status bw_slice_rows(cg_node *n, const cg_tensor *gout, cg_tensor **gin);
cg_status bw_identity(cg_node *n, const cg_tensor *gout, cg_tensor **gin);

const cg_op_info cg_op_table[CG_OP_COUNT] = {
#define CG_OP(ID, nm, nin, naux, sv, shp, bw) [CG_OP_##ID] = {#nm, nin, naux, sv, shp, bw},
#include "ops.def"
#undef CG_OP
};

int cg_op_count(void) { return CG_OP_COUNT; }

const char *cg_op_name(int op) { return op >= 0 && op < CG_OP_COUNT ? cg_op_table[op].name : NULL; }
