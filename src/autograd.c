/* Reverse-mode engine over the dynamic graph: topological walk, gradient accumulation,
 * version checks, freeing of saved tensors; grad mode and scopes (thread-local). */
#include <stdlib.h>
#include <string.h>

#include "backend.h"

static _Thread_local int tl_no_grad;
static atomic_int g_epoch = 1;

void cg_no_grad_begin(void) { tl_no_grad++; }
void cg_no_grad_end(void) {
    if (tl_no_grad > 0) tl_no_grad--;
}
int cg_grad_enabled(void) { return tl_no_grad == 0; }

/* ---- scopes ---- */

typedef struct pool {
    cg_tensor **items;
    size_t n, cap;
} pool;

static _Thread_local pool *tl_pools;
static _Thread_local int tl_depth, tl_cap;

cg_status cg_scope_begin(void) {
    if (tl_depth == tl_cap) {
        int cap = tl_cap ? 2 * tl_cap : 4;
        pool *p = realloc(tl_pools, (size_t)cap * sizeof *p);
        if (!p) return CG_FAIL(CG_E_OOM, "cg_scope_begin: out of host memory");
        memset(p + tl_cap, 0, (size_t)(cap - tl_cap) * sizeof *p);
        tl_pools = p;
        tl_cap = cap;
    }
    tl_pools[tl_depth].n = 0;
    tl_depth++;
    return CG_OK;
}

cg_status cg_scope_end(void) {
    if (tl_depth == 0) return CG_FAIL(CG_E_STATE, "cg_scope_end: no scope is open on this thread");
    pool *p = &tl_pools[--tl_depth];
    for (size_t i = p->n; i-- > 0;) cg_tensor_release(p->items[i]);
    p->n = 0;
    if (tl_depth == 0) { /* give the memory back when the outermost scope closes */
        for (int i = 0; i < tl_cap; i++) free(tl_pools[i].items);
        free(tl_pools);
        tl_pools = NULL;
        tl_cap = 0;
    }
    return CG_OK;
}

cg_tensor *cg__autorelease(cg_tensor *t) {
    if (!t || tl_depth == 0) return t;
    pool *p = &tl_pools[tl_depth - 1];
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        cg_tensor **items = realloc(p->items, cap * sizeof *items);
        if (!items) return t; /* cannot track it: the caller's reference stays with the caller */
        p->items = items;
        p->cap = cap;
    }
    p->items[p->n++] = t;
    return t;
}

cg_tensor *cg_keep(cg_tensor *t) { return cg_tensor_retain(t); }

/* ---- nodes ---- */

static void node_release_saved(cg_node *n) {
    for (int i = 0; i < n->n_in; i++) {
        cg_tensor_release(n->in[i]);
        n->in[i] = NULL;
    }
    for (int i = 0; i < n->n_aux; i++) {
        cg_tensor_release(n->aux[i]);
        n->aux[i] = NULL;
    }
    cg_tensor_release(n->out);
    n->out = NULL;
    n->released = 1;
    n->handed_on = 0; /* the backward finished: the graph is simply spent */
}

void cg__node_free(cg_node *n) {
    node_release_saved(n);
    cg_tensor_release(n->gacc);
    free(n);
}

/* ---- gradient accumulation ---- */

/* *acc += g, taking ownership of g. Adopts g as the buffer when nothing else can see it. */
static cg_status accumulate(cg_tensor **acc, cg_tensor *g) {
    cg_status st = CG_OK;
    if (*acc && g->st == (*acc)->st) {
        /* g reads the buffer it is added into (cg_backward_ex's grad_out may be a leaf's
         * .grad, passed on through a view): add a copy, never a possibly permuted alias */
        cg_tensor *c = NULL;
        st = cg__tensor_new_like(g, &c);
        if (st == CG_OK) st = cg__backend(g->st->dev)->copy_strided(c, g);
        cg_tensor_release(g);
        if (st != CG_OK) {
            cg_tensor_release(c);
            return st;
        }
        g = c;
    }
    if (!*acc) {
        int exclusive = atomic_load(&g->refcount) == 1 && atomic_load(&g->st->refcount) == 1 && !g->node;
        if (exclusive && cg_tensor_is_contiguous(g)) {
            *acc = g;
            return CG_OK;
        }
        cg_tensor *c = NULL;
        st = cg__tensor_new_like(g, &c);
        if (st == CG_OK) st = cg__backend(g->st->dev)->copy_strided(c, g);
        if (st == CG_OK) *acc = c;
        else cg_tensor_release(c);
        cg_tensor_release(g);
        return st;
    }
    cg_tensor *gc = NULL;
    st = cg__tensor_contiguous(g, &gc);
    if (st == CG_OK) {
        st = cg__backend((*acc)->st->dev)->axpy(*acc, 1.0, gc);
        if (st == CG_OK) cg__bump_version(*acc);
    }
    cg_tensor_release(gc);
    cg_tensor_release(g);
    return st;
}

/* ---- backward rules named in ops.def ---- */

/* The kernel rule: the backend's backward writes each wanted input gradient. */
cg_status bw_kernel(cg_node *n, const cg_tensor *gout, cg_tensor **gin) {
    const cg_backend *be = cg__backend(n->out->st->dev);
    if (!be) return CG_E_DEVICE;
    if (!be->backward[n->op])
        return CG_FAIL(CG_E_UNSUPPORTED, "%s: backward not implemented on the %s backend", cg_op_table[n->op].name,
                       be->name);
    cg_status st = CG_OK;
    cg_op_call c = {.op = n->op, .p = &n->p, .n_in = n->n_in, .out = n->out, .n_aux = n->n_aux};
    for (int k = 0; k < n->n_aux; k++) c.aux[k] = n->aux[k];
    /* inputs the rule reads must be contiguous; the others only lend their shape */
    unsigned saves = cg_op_table[n->op].saves;
    for (int i = 0; i < n->n_in; i++) {
        if (!n->in[i]) continue;
        if (saves & SAVE_IN(i)) CG_CHECK_GOTO(cg__tensor_contiguous(n->in[i], &c.in[i]));
        else c.in[i] = cg_tensor_retain(n->in[i]);
    }
    for (int i = 0; i < n->n_in; i++)
        if (gin[i]) CG_CHECK_GOTO(cg__tensor_new_like(n->in[i], &gin[i]));
    CG_CHECK_GOTO(be->backward[n->op](&c, gout, gin));
fail:
    for (int i = 0; i < n->n_in; i++) cg_tensor_release(c.in[i]);
    return st;
}

/* Softmax cross-entropy: the forward already wrote d loss / d logits for an output gradient
 * of 1 into aux[0]. When the engine knows the output gradient is exactly 1 (cg_backward's
 * seed) and this backward is the graph's last, that aux becomes the logits' gradient:
 * aux * 1 == aux bit for bit, so the result is the kernel's without its read and write of
 * N x C values, and forward + backward is one read of the logits and one write (llm.c's
 * fused classifier). Otherwise (cg_backward_ex, retain_graph) the kernel scales it. */
cg_status bw_softmax_ce(cg_node *n, const cg_tensor *gout, cg_tensor **gin) {
    cg_tensor *a = n->aux[0];
    int own = a && atomic_load(&a->refcount) == 1 && atomic_load(&a->st->refcount) == 1 && !a->node;
    if (gin[0] && !gin[1] && n->gacc_ones && own && cg_tensor_is_contiguous(a) &&
        a->dtype == n->in[0]->dtype && cg__same_shape(a, n->in[0])) {
        gin[0] = a;
        n->aux[0] = NULL;
        n->released = n->handed_on = 1; /* a retry after a later failure is refused */
        return CG_OK;
    }
    return bw_kernel(n, gout, gin);
}

cg_status bw_identity(cg_node *n, const cg_tensor *gout, cg_tensor **gin) {
    (void)n;
    gin[0] = cg_tensor_retain((cg_tensor *)gout);
    return CG_OK;
}

cg_status bw_reshape(cg_node *n, const cg_tensor *gout, cg_tensor **gin) {
    const cg_tensor *x = n->in[0];
    int64_t strides[CG_MAX_DIMS];
    cg__contiguous_strides(x->shape, x->ndim, strides);
    return cg__tensor_view(gout, x->shape, strides, x->ndim, gout->offset, &gin[0]);
}

cg_status bw_transpose(cg_node *n, const cg_tensor *gout, cg_tensor **gin) {
    int64_t s[CG_MAX_DIMS], st[CG_MAX_DIMS];
    cg__swap_dims(gout, n->p.dim0, n->p.dim1, s, st);
    return cg__tensor_view(gout, s, st, gout->ndim, gout->offset, &gin[0]);
}

cg_status bw_slice_rows(cg_node *n, const cg_tensor *gout, cg_tensor **gin) {
    const cg_tensor *x = n->in[0];
    const cg_backend *be = cg__backend(x->st->dev);
    cg_tensor *g = NULL, *rows = NULL;
    cg_status st = cg__tensor_new_like(x, &g);
    if (st == CG_OK) st = be->fill(g, 0.0);
    int64_t start = (int64_t)n->p.offset;
    if (st == CG_OK)
        st = cg__tensor_view(g, gout->shape, g->strides, g->ndim, g->offset + start * g->strides[0], &rows);
    if (st == CG_OK) st = be->copy_strided(rows, gout);
    cg_tensor_release(rows);
    if (st != CG_OK) {
        cg_tensor_release(g);
        return st;
    }
    gin[0] = g;
    return CG_OK;
}

/* ---- the engine ---- */

typedef struct node_list {
    cg_node **v;
    size_t n, cap;
} node_list;

static int list_push(node_list *l, cg_node *x) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        cg_node **v = realloc(l->v, cap * sizeof *v);
        if (!v) return 0;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return 1;
}

/* Post-order (inputs before consumers) of the nodes reachable from root, iteratively. */
static cg_status topo_sort(cg_node *root, int epoch, node_list *order) {
    node_list stack = {0};
    cg_status st = CG_OK;
    if (!list_push(&stack, root)) st = CG_FAIL(CG_E_OOM, "backward: out of host memory");
    root->mark = epoch;
    /* a node is pushed once (mark = epoch); when re-seen with all inputs done it is emitted */
    while (st == CG_OK && stack.n) {
        cg_node *n = stack.v[stack.n - 1];
        if (n->handed_on) {
            st = CG_FAIL(CG_E_STATE, "backward: an earlier cg_backward through '%s' failed after it had handed that "
                                     "op's saved gradient on; recompute the loss and call backward again",
                         cg_op_table[n->op].name);
            break;
        }
        if (n->released) {
            st = CG_FAIL(CG_E_STATE, "backward: the graph through '%s' was already freed by an earlier backward; pass "
                                     "retain_graph=1 to cg_backward_ex to backward through it twice",
                         cg_op_table[n->op].name);
            break;
        }
        int pushed = 0;
        for (int i = 0; i < n->n_in; i++) {
            cg_node *in = n->in[i] ? n->in[i]->node : NULL;
            if (in && in->mark != epoch && in->mark != -epoch) {
                in->mark = epoch;
                if (!list_push(&stack, in)) st = CG_FAIL(CG_E_OOM, "backward: out of host memory");
                pushed = 1;
                break;
            }
        }
        if (!pushed && st == CG_OK) {
            stack.n--;
            n->mark = -epoch; /* done */
            if (!list_push(order, n)) st = CG_FAIL(CG_E_OOM, "backward: out of host memory");
        }
    }
    free(stack.v);
    return st;
}

static cg_status check_versions(cg_node *n) {
    unsigned saves = cg_op_table[n->op].saves;
    for (int i = 0; i < n->n_in; i++) {
        if (!(saves & SAVE_IN(i)) || !n->in[i]) continue;
        uint64_t now = cg_tensor_version(n->in[i]);
        if (now != n->in_version[i])
            return CG_FAIL(CG_E_STATE, "backward: input %d of '%s' was modified in place after it was saved (version "
                                       "%llu, saved at %llu); clone it before changing it, or change it after backward",
                           i, cg_op_table[n->op].name, (unsigned long long)now, (unsigned long long)n->in_version[i]);
    }
    if ((saves & SAVE_OUT) && cg_tensor_version(n->out) != n->out_version)
        return CG_FAIL(CG_E_STATE, "backward: the output of '%s' was modified in place after it was saved (version "
                                   "%llu, saved at %llu); clone it before changing it",
                       cg_op_table[n->op].name, (unsigned long long)cg_tensor_version(n->out),
                       (unsigned long long)n->out_version);
    return CG_OK;
}

/* leaf->grad may be a user-provided buffer (cg_tensor_set_grad): accumulate adds into it */
static cg_status accumulate_leaf(cg_tensor *leaf, cg_tensor *g) { return accumulate(&leaf->grad, g); }

static cg_status check_backward(const cg_tensor *out, const cg_tensor *grad_out) {
    if (!cg__needs_grad(out))
        return CG_FAIL(CG_E_STATE, "backward: the tensor does not require grad (no input of the ops that made it "
                                   "required grad, or it was computed under no_grad)");
    if (!cg__same_shape(out, grad_out) || grad_out->dtype != out->dtype ||
        !cg__same_device(out->st->dev, grad_out->st->dev)) {
        char a[96], b[96];
        return CG_FAIL(CG_E_SHAPE, "backward: gradient %s %s must match the output %s %s",
                       cg__shape_str(grad_out->shape, grad_out->ndim, a, 96), cg_dtype_name(grad_out->dtype),
                       cg__shape_str(out->shape, out->ndim, b, 96), cg_dtype_name(out->dtype));
    }
    return CG_OK;
}

/* The walk from out, whose gradient is seed (owned; contiguous). seed_ones: every element of
 * seed is 1, which the root's rule may use when the graph is not retained (bw_softmax_ce). */
static cg_status backward_run(cg_tensor *out, cg_tensor *seed, int seed_ones, int retain_graph) {
    cg_status st = CG_OK;
    if (!out->node) return accumulate_leaf(out, seed);

    node_list order = {0};
    int epoch = atomic_fetch_add(&g_epoch, 1);
    CG_CHECK_GOTO(topo_sort(out->node, epoch, &order));
    for (size_t k = 0; k < order.n; k++) CG_CHECK_GOTO(check_versions(order.v[k]));

    out->node->gacc = seed;
    seed = NULL;
    for (size_t k = order.n; k-- > 0;) {
        cg_node *n = order.v[k];
        cg_tensor *g = n->gacc;
        n->gacc = NULL;
        if (!g) continue; /* no gradient reached this node */
        /* nothing is ever added into the root's gradient: the graph has no cycles */
        n->gacc_ones = seed_ones && !retain_graph && n == out->node;
        cg_tensor *gin[CG_MAX_IN] = {0};
        int any = 0;
        for (int i = 0; i < n->n_in; i++) {
            /* a non-NULL marker asks the rule for this gradient */
            if (n->in[i] && cg__needs_grad(n->in[i])) {
                gin[i] = (cg_tensor *)n->in[i];
                any = 1;
            }
        }
        st = any ? cg_op_table[n->op].backward(n, g, gin) : CG_OK;
        cg_tensor_release(g);
        for (int i = 0; i < n->n_in; i++) {
            if (gin[i] == n->in[i]) gin[i] = NULL; /* rule did not produce it */
        }
        if (st != CG_OK) {
            for (int i = 0; i < n->n_in; i++) cg_tensor_release(gin[i]);
            goto fail;
        }
        for (int i = 0; i < n->n_in && st == CG_OK; i++) {
            if (!gin[i]) continue;
            cg_tensor *x = n->in[i];
            if (!cg__same_shape(gin[i], x)) {
                cg_tensor_release(gin[i]);
                st = CG_FAIL(CG_E_INTERNAL, "backward of '%s' produced a gradient of the wrong shape for input %d",
                             cg_op_table[n->op].name, i);
            } else {
                st = x->node ? accumulate(&x->node->gacc, gin[i]) : accumulate_leaf(x, gin[i]);
            }
            gin[i] = NULL;
        }
        for (int i = 0; i < n->n_in; i++) cg_tensor_release(gin[i]);
        if (st != CG_OK) goto fail;
    }
    if (!retain_graph)
        for (size_t k = 0; k < order.n; k++) node_release_saved(order.v[k]);
fail:
    if (st != CG_OK)
        for (size_t k = 0; k < order.n; k++) {
            cg_tensor_release(order.v[k]->gacc);
            order.v[k]->gacc = NULL;
        }
    cg_tensor_release(seed);
    free(order.v);
    return st;
}

cg_status cg_backward_ex(cg_tensor *out, const cg_tensor *grad_out, int retain_graph) {
    CG_ARG_NOT_NULL(out, "cg_backward_ex");
    CG_ARG_NOT_NULL(grad_out, "cg_backward_ex");
    CG_TRY(check_backward(out, grad_out));
    /* The rules only read the seed, and accumulate() copies what it cannot own, so a
     * contiguous grad_out is used as it is: no copy pass over it. */
    cg_tensor *seed = NULL;
    if (cg_tensor_is_contiguous(grad_out)) {
        seed = cg_tensor_retain((cg_tensor *)grad_out);
    } else {
        CG_TRY(cg__tensor_new_like(grad_out, &seed));
        cg_status st = cg__backend(seed->st->dev)->copy_strided(seed, grad_out);
        if (st != CG_OK) {
            cg_tensor_release(seed);
            return st;
        }
    }
    return backward_run(out, seed, 0, retain_graph);
}

cg_status cg_backward(cg_tensor *loss) {
    CG_ARG_NOT_NULL(loss, "cg_backward");
    if (cg_tensor_numel(loss) != 1) {
        char b[96];
        return CG_FAIL(CG_E_SHAPE, "backward: loss has shape %s; cg_backward needs a one-element tensor (reduce it "
                                   "with cg_mean/cg_sum, or pass a gradient to cg_backward_ex)",
                       cg__shape_str(loss->shape, loss->ndim, b, sizeof b));
    }
    cg_tensor *one;
    CG_TRY(cg__tensor_new_like(loss, &one));
    cg_status st = cg__backend(one->st->dev)->fill(one, 1.0);
    if (st == CG_OK) st = check_backward(loss, one);
    if (st != CG_OK) {
        cg_tensor_release(one);
        return st;
    }
    return backward_run(loss, one, 1, 0);
}

cg_status cg_zero_grad(cg_tensor *const *params, int n) {
    if (n > 0 && !params) return CG_FAIL(CG_E_INVALID, "cg_zero_grad: params is NULL");
    for (int i = 0; i < n; i++) {
        cg_tensor *g = params[i] ? params[i]->grad : NULL;
        if (!g) continue;
        CG_TRY(cg__backend(g->st->dev)->fill(g, 0.0));
        cg__bump_version(g);
    }
    return CG_OK;
}
