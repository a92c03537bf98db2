/* Autograd engine: accumulation, zero_grad, no_grad, shared inputs (diamonds),
 * retain_graph, version checks on saved tensors, scopes, user gradient buffers, detach
 * and views. Meant to run under ASan too (CG_SANITIZE=ON) to catch leaks and double frees. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cgt.h"

static cg_tensor *leaf(cgt_rand *r, const int64_t *s, int nd) {
    cg_tensor *t = cgt_randn(r, s, nd, CG_F64, CG_CPU);
    CGT_OK(cg_tensor_set_requires_grad(t, 1));
    return t;
}

/* loss = sum(x * x): grad 2x */
static cg_tensor *sumsq_loss(cg_tensor *x) {
    cg_tensor *m = NULL, *l = NULL;
    CGT_OK(cg_mul(x, x, &m));
    CGT_OK(cg_sum(m, CG_ALL_AXES, 0, &l));
    cg_tensor_release(m);
    return l;
}

START_TEST(gradients_accumulate_across_backwards) {
    cgt_rand r = cgt_rand_make("accumulate");
    int64_t s[2] = {3, 5};
    cg_tensor *x = leaf(&r, s, 2);
    double *xv = cgt_read(x);
    for (int round = 1; round <= 2; round++) {
        cg_tensor *l = sumsq_loss(x);
        CGT_OK(cg_backward(l));
        cg_tensor_release(l);
        double *g = cgt_read(cg_tensor_grad(x));
        for (int i = 0; i < 15; i++) CGT_ASSERT_CLOSE(g[i], round * 2 * xv[i], 1e-12);
        free(g);
    }
    /* zero_grad keeps the buffer and zeroes it */
    cg_tensor *gbuf = cg_tensor_grad(x);
    CGT_OK(cg_zero_grad(&x, 1));
    ck_assert_ptr_eq(cg_tensor_grad(x), gbuf);
    double *g = cgt_read(gbuf);
    for (int i = 0; i < 15; i++) ck_assert(g[i] == 0.0);
    free(g);
    cg_tensor *l = sumsq_loss(x);
    CGT_OK(cg_backward(l));
    g = cgt_read(cg_tensor_grad(x));
    for (int i = 0; i < 15; i++) CGT_ASSERT_CLOSE(g[i], 2 * xv[i], 1e-12);
    cg_tensor *none[2] = {NULL, x};
    CGT_OK(cg_zero_grad(none, 2)); /* NULL entries are skipped */
    free(g);
    free(xv);
    cg_tensor_release(l);
    cg_tensor_release(x);
}
END_TEST

START_TEST(no_grad_records_nothing) {
    cgt_rand r = cgt_rand_make("no_grad");
    int64_t s[2] = {4, 3};
    cg_tensor *x = leaf(&r, s, 2), *y = NULL, *z = NULL, *w = NULL;
    ck_assert(cg_grad_enabled());
    cg_no_grad_begin();
    cg_no_grad_begin(); /* nests */
    cg_no_grad_end();
    ck_assert(!cg_grad_enabled());
    CGT_OK(cg_relu(x, &y));
    CGT_OK(cg_matmul(x, x, 1, 0, &z));
    cg_no_grad_end();
    ck_assert(cg_grad_enabled());
    ck_assert_int_eq(cg_tensor_has_grad_fn(y), 0);
    ck_assert_int_eq(cg_tensor_has_grad_fn(z), 0);
    ck_assert_int_eq(cg_tensor_requires_grad(y), 0);
    ck_assert_ptr_null(cg_tensor_grad_fn_name(z));
    CGT_FAILS(cg_backward_ex(y, y, 0), CG_E_STATE, "require");
    /* with grad mode back on the same op is recorded */
    CGT_OK(cg_relu(x, &w));
    ck_assert_int_eq(cg_tensor_has_grad_fn(w), 1);
    ck_assert_str_eq(cg_tensor_grad_fn_name(w), "relu");
    ck_assert_int_eq(cg_tensor_requires_grad(w), 1);
    cg_no_grad_end(); /* unbalanced end is harmless */
    ck_assert(cg_grad_enabled());
    cg_tensor_release(y), cg_tensor_release(z), cg_tensor_release(w), cg_tensor_release(x);
}
END_TEST

START_TEST(diamond_graph) {
    /* y = sum(x*x + exp(x) * x): x reaches the loss along four edges; dy/dx = 2x + e^x (1 + x) */
    cgt_rand r = cgt_rand_make("diamond");
    int64_t s = 7;
    cg_tensor *x = leaf(&r, &s, 1), *a = NULL, *e = NULL, *b = NULL, *c = NULL, *l = NULL;
    CGT_OK(cg_mul(x, x, &a));
    CGT_OK(cg_exp(x, &e));
    CGT_OK(cg_mul(e, x, &b));
    CGT_OK(cg_add(a, b, &c));
    CGT_OK(cg_sum(c, 0, 0, &l));
    CGT_OK(cg_backward(l));
    double *xv = cgt_read(x), *g = cgt_read(cg_tensor_grad(x));
    for (int i = 0; i < 7; i++) CGT_ASSERT_CLOSE(g[i], 2 * xv[i] + exp(xv[i]) * (1 + xv[i]), 1e-12);
    free(xv), free(g);
    cg_tensor_release(a), cg_tensor_release(e), cg_tensor_release(b), cg_tensor_release(c), cg_tensor_release(l);
    cg_tensor_release(x);
}
END_TEST

START_TEST(retain_graph_and_freed_graph) {
    cgt_rand r = cgt_rand_make("retain");
    int64_t s = 5;
    cg_tensor *x = leaf(&r, &s, 1), *t = NULL, *l = NULL, *one = NULL;
    CGT_OK(cg_tanh(x, &t));
    CGT_OK(cg_sum(t, 0, 0, &l));
    CGT_OK(cg_tensor_ones(NULL, 0, CG_F64, CG_CPU, &one));
    CGT_OK(cg_backward_ex(l, one, 1));
    CGT_OK(cg_backward_ex(l, one, 0)); /* second pass works: the graph was retained */
    double *xv = cgt_read(x), *g = cgt_read(cg_tensor_grad(x));
    for (int i = 0; i < 5; i++) CGT_ASSERT_CLOSE(g[i], 2 * (1 - tanh(xv[i]) * tanh(xv[i])), 1e-12);
    free(g);
    /* the third was not retained: a clear CG_E_STATE, and the gradient is untouched */
    CGT_FAILS(cg_backward(l), CG_E_STATE, "retain_graph", "freed");
    g = cgt_read(cg_tensor_grad(x));
    for (int i = 0; i < 5; i++) CGT_ASSERT_CLOSE(g[i], 2 * (1 - tanh(xv[i]) * tanh(xv[i])), 1e-12);
    free(g), free(xv);
    cg_tensor_release(one), cg_tensor_release(t), cg_tensor_release(l), cg_tensor_release(x);
}
END_TEST

/* Softmax-CE under cg_backward hands its saved gradient on instead of scaling it by the seed
 * 1 (bw_softmax_ce). Whatever path runs, the gradients must be the kernel's bit for bit and
 * the float64 formula's: W's through a matmul, for mean and sum, with label smoothing. */
static void ce_graph(cg_tensor *x, cg_tensor *w, cg_tensor *lab, cg_reduction red, cg_tensor **z, cg_tensor **l) {
    CGT_OK(cg_matmul(x, w, 0, 1, z));
    CGT_OK(cg_softmax_cross_entropy(*z, lab, red, 0.1, l));
}

START_TEST(softmax_ce_seed_paths_agree) {
    cgt_rand r = cgt_rand_make("ce_seed");
    for (int dti = 0; dti < 2; dti++)
        for (int red = CG_REDUCE_MEAN; red <= CG_REDUCE_SUM; red++) {
            cg_dtype dt = dti ? CG_F32 : CG_F64;
            const int64_t N = 7, K = 5, C = 13;
            int64_t xs[2] = {N, K}, ws[2] = {C, K}, ls = N;
            cg_tensor *x = cgt_randn(&r, xs, 2, dt, CG_CPU), *w = cgt_randn(&r, ws, 2, dt, CG_CPU);
            CGT_OK(cg_tensor_set_requires_grad(w, 1));
            double lv[7];
            for (int i = 0; i < N; i++) lv[i] = (double)cgt_randint(&r, 0, C);
            cg_tensor *lab = cgt_tensor(lv, &ls, 1, CG_I64, CG_CPU), *one = NULL, *z = NULL, *l = NULL;
            CGT_OK(cg_tensor_ones(NULL, 0, dt, CG_CPU, &one));
            /* 1: cg_backward (the aux is handed on); 2: cg_backward_ex with ones (the kernel) */
            ce_graph(x, w, lab, (cg_reduction)red, &z, &l);
            double *zv = cgt_read(z);
            CGT_OK(cg_backward(l));
            double *g1 = cgt_read(cg_tensor_grad(w));
            CGT_FAILS(cg_backward(l), CG_E_STATE, "retain_graph"); /* the graph is spent */
            cg_tensor_release(z), cg_tensor_release(l);
            CGT_OK(cg_zero_grad(&w, 1));
            ce_graph(x, w, lab, (cg_reduction)red, &z, &l);
            CGT_OK(cg_backward_ex(l, one, 0));
            double *g2 = cgt_read(cg_tensor_grad(w));
            ck_assert(!memcmp(g1, g2, sizeof(double) * (size_t)(C * K)));
            cg_tensor_release(z), cg_tensor_release(l);
            /* 3: retained then seeded: the retained pass must not give its aux away */
            CGT_OK(cg_zero_grad(&w, 1));
            ce_graph(x, w, lab, (cg_reduction)red, &z, &l);
            CGT_OK(cg_backward_ex(l, one, 1));
            CGT_OK(cg_backward(l));
            double *g3 = cgt_read(cg_tensor_grad(w));
            /* float64 reference: dW = dZ^T x, dZ = (softmax(z) - q) * scale */
            double *xv = cgt_read(x), scale = red == CG_REDUCE_MEAN ? 1.0 / (double)N : 1.0;
            double dz[7 * 13], ref[13 * 5] = {0};
            for (int i = 0; i < N; i++) {
                double m = -INFINITY, se = 0;
                for (int j = 0; j < C; j++) m = fmax(m, zv[i * C + j]);
                for (int j = 0; j < C; j++) se += exp(zv[i * C + j] - m);
                for (int j = 0; j < C; j++)
                    dz[i * C + j] = (exp(zv[i * C + j] - m) / se - 0.1 / C - (j == (int)lv[i] ? 0.9 : 0.0)) * scale;
            }
            for (int c = 0; c < C; c++)
                for (int k = 0; k < K; k++)
                    for (int i = 0; i < N; i++) ref[c * K + k] += dz[i * C + c] * xv[i * K + k];
            cgt_tol tol = cgt_tol_scaled(cgt_tol_for(dt), 10);
            CGT_ASSERT_CLOSE_ARR(g1, ref, C * K, tol, "cg_backward dW");
            for (int i = 0; i < C * K; i++) ref[i] *= 2;
            CGT_ASSERT_CLOSE_ARR(g3, ref, C * K, tol, "retained + seeded dW");
            free(zv), free(g1), free(g2), free(g3), free(xv);
            cg_tensor_release(z), cg_tensor_release(l), cg_tensor_release(one), cg_tensor_release(lab);
            cg_tensor_release(x), cg_tensor_release(w);
        }
}
END_TEST

/* cg_backward_ex reads grad_out in place (no copy); a grad_out that overlaps the gradient
 * buffer it is added into, shifted by one element, must still add the old values (an in-order add would read the ones it just wrote). */
START_TEST(backward_ex_grad_out_aliasing_grad_buffer) {
    cgt_rand r = cgt_rand_make("alias");
    int64_t s13[2] = {13, 1}, s12[2] = {12, 1};
    cg_tensor *x = leaf(&r, s12, 2), *buf = cgt_randn(&r, s13, 2, CG_F64, CG_CPU), *acc = NULL, *go = NULL, *y = NULL;
    double *old = cgt_read(buf);
    CGT_OK(cg_slice_rows(buf, 1, 13, &acc)); /* acc[i] = buf[i + 1], go[i] = buf[i] */
    CGT_OK(cg_slice_rows(buf, 0, 12, &go));
    CGT_OK(cg_tensor_set_grad(x, acc));
    CGT_OK(cg_reshape(x, s12, 2, &y));
    CGT_OK(cg_backward_ex(y, go, 0));
    double *now = cgt_read(buf);
    for (int i = 0; i < 12; i++) ck_assert(now[i + 1] == old[i + 1] + old[i]);
    ck_assert(now[0] == old[0]);
    free(old), free(now);
    cg_tensor_release(y), cg_tensor_release(go), cg_tensor_release(acc), cg_tensor_release(buf), cg_tensor_release(x);
}
END_TEST

START_TEST(in_place_change_of_saved_tensor_fails_backward) {
    cgt_rand r = cgt_rand_make("version");
    int64_t s = 6;
    cg_tensor *w = leaf(&r, &s, 1), *x = cgt_randn(&r, &s, 1, CG_F64, CG_CPU), *y = NULL, *l = NULL;
    CGT_OK(cg_mul(x, w, &y)); /* mul saves x for dL/dw */
    CGT_OK(cg_sum(y, 0, 0, &l));
    uint64_t v0 = cg_tensor_version(x);
    cg_no_grad_begin();
    CGT_OK(cg_add_(x, 1.0, x));
    cg_no_grad_end();
    ck_assert_uint_gt(cg_tensor_version(x), v0);
    CGT_FAILS(cg_backward(l), CG_E_STATE, "mul", "modified in place");
    ck_assert_ptr_null(cg_tensor_grad(w)); /* nothing was accumulated */
    cg_tensor_release(y), cg_tensor_release(l);

    /* an op that saves its output (exp) notices a change to that output */
    cg_tensor *e = NULL;
    CGT_OK(cg_exp(w, &e));
    CGT_OK(cg_sum(e, 0, 0, &l));
    CGT_FAILS(cg_scale_(e, 2.0), CG_E_STATE, "exp"); /* refused while grad mode is on */
    cg_no_grad_begin();
    CGT_OK(cg_scale_(e, 2.0));
    cg_no_grad_end();
    CGT_FAILS(cg_backward(l), CG_E_STATE, "exp");
    cg_tensor_release(e), cg_tensor_release(l);

    /* ops that save nothing (add) do not care */
    cg_tensor *a = NULL;
    CGT_OK(cg_add(x, w, &a));
    CGT_OK(cg_sum(a, 0, 0, &l));
    cg_no_grad_begin();
    CGT_OK(cg_scale_(x, 3.0));
    cg_no_grad_end();
    CGT_OK(cg_backward(l));
    double *g = cgt_read(cg_tensor_grad(w));
    for (int i = 0; i < 6; i++) ck_assert(g[i] == 1.0);
    free(g);
    cg_tensor_release(a), cg_tensor_release(l), cg_tensor_release(x), cg_tensor_release(w);
}
END_TEST

START_TEST(scopes_release_temporaries) {
    cgt_rand r = cgt_rand_make("scopes");
    int64_t s[2] = {4, 4};
    cg_tensor *w = leaf(&r, s, 2), *kept = NULL, *inner_kept = NULL;
    double *wv = cgt_read(w);
    for (int step = 0; step < 3; step++) {
        CGT_OK(cg_scope_begin());
        cg_tensor *h = NULL, *a = NULL, *l = NULL;
        CGT_OK(cg_matmul(w, w, 0, 1, &h)); /* temporaries: released by scope_end */
        CGT_OK(cg_relu(h, &a));
        CGT_OK(cg_scope_begin());
        cg_tensor *t = NULL;
        CGT_OK(cg_scale(a, 2.0, 0.0, &t));
        if (step == 2) inner_kept = cg_keep(t);
        CGT_OK(cg_scope_end());
        CGT_OK(cg_sum(a, CG_ALL_AXES, 0, &l));
        CGT_OK(cg_backward(l));
        if (step == 2) kept = cg_keep(a);
        CGT_OK(cg_scope_end());
    }
    /* what was kept outlives its scope and holds the right values */
    double *kv = cgt_read(kept), *iv = cgt_read(inner_kept);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double acc = 0;
            for (int k = 0; k < 4; k++) acc += wv[i * 4 + k] * wv[j * 4 + k];
            CGT_ASSERT_CLOSE(kv[i * 4 + j], acc > 0 ? acc : 0, 1e-12);
            CGT_ASSERT_CLOSE(iv[i * 4 + j], 2 * (acc > 0 ? acc : 0), 1e-12);
        }
    ck_assert_ptr_nonnull(cg_tensor_grad(w)); /* the leaf's gradient is not a temporary */
    free(kv), free(iv), free(wv);
    cg_tensor_release(kept), cg_tensor_release(inner_kept), cg_tensor_release(w);
    CGT_FAILS(cg_scope_end(), CG_E_STATE, "scope");
}
END_TEST

START_TEST(user_gradient_buffer) {
    cgt_rand r = cgt_rand_make("set_grad");
    int64_t s = 5, big = 8;
    cg_tensor *x = leaf(&r, &s, 1), *g = NULL, *wrong = NULL;
    CGT_OK(cg_tensor_full(&s, 1, CG_F64, CG_CPU, 1.0, &g)); /* backward adds into what is there */
    CGT_OK(cg_tensor_set_grad(x, g));
    ck_assert_ptr_eq(cg_tensor_grad(x), g);
    cg_tensor *l = sumsq_loss(x);
    CGT_OK(cg_backward(l));
    ck_assert_ptr_eq(cg_tensor_grad(x), g);
    double *xv = cgt_read(x), *gv = cgt_read(g);
    for (int i = 0; i < 5; i++) CGT_ASSERT_CLOSE(gv[i], 1 + 2 * xv[i], 1e-12);
    CGT_OK(cg_tensor_zeros(&big, 1, CG_F64, CG_CPU, &wrong));
    CGT_FAILS(cg_tensor_set_grad(x, wrong), CG_E_SHAPE, "gradient");
    CGT_OK(cg_tensor_set_grad(x, NULL));
    ck_assert_ptr_null(cg_tensor_grad(x));
    free(xv), free(gv);
    cg_tensor_release(l), cg_tensor_release(g), cg_tensor_release(wrong), cg_tensor_release(x);
}
END_TEST

START_TEST(detach_cuts_the_graph) {
    cgt_rand r = cgt_rand_make("detach");
    int64_t s = 6;
    cg_tensor *x = leaf(&r, &s, 1), *y = NULL, *d = NULL, *z = NULL, *l = NULL, *l2 = NULL;
    CGT_OK(cg_sigmoid(x, &y));
    CGT_OK(cg_tensor_detach(y, &d));
    ck_assert_int_eq(cg_tensor_has_grad_fn(d), 0);
    ck_assert_int_eq(cg_tensor_requires_grad(d), 0);
    ck_assert_ptr_eq(cg_tensor_data(d), cg_tensor_data(y)); /* shares storage */
    CGT_OK(cg_mul(d, x, &z)); /* gradient reaches x only through the second factor */
    CGT_OK(cg_sum(z, 0, 0, &l));
    CGT_OK(cg_backward(l));
    double *xv = cgt_read(x), *g = cgt_read(cg_tensor_grad(x));
    for (int i = 0; i < 6; i++) CGT_ASSERT_CLOSE(g[i], 1 / (1 + exp(-xv[i])), 1e-12);
    /* set_requires_grad on a non-leaf is refused */
    CGT_FAILS(cg_tensor_set_requires_grad(y, 0), CG_E_STATE, "sigmoid");
    CGT_OK(cg_sum(d, 0, 0, &l2));
    ck_assert_int_eq(cg_tensor_has_grad_fn(l2), 0);
    free(xv), free(g);
    cg_tensor_release(y), cg_tensor_release(d), cg_tensor_release(z), cg_tensor_release(l), cg_tensor_release(l2);
    cg_tensor_release(x);
}
END_TEST

START_TEST(views_route_gradients) {
    /* x (4,3) -> rows [1,3) -> transpose (3,2) -> reshape (6) -> dot with c */
    cgt_rand r = cgt_rand_make("views");
    int64_t s[2] = {4, 3}, six = 6;
    cg_tensor *x = leaf(&r, s, 2), *sl = NULL, *t = NULL, *rs = NULL, *m = NULL, *l = NULL;
    double c[6];
    for (int i = 0; i < 6; i++) c[i] = cgt_normal(&r);
    cg_tensor *ct = cgt_tensor(c, &six, 1, CG_F64, CG_CPU);
    CGT_OK(cg_slice_rows(x, 1, 3, &sl));
    CGT_OK(cg_transpose(sl, 0, 1, &t));
    CGT_OK(cg_reshape(t, &six, 1, &rs)); /* non-contiguous input: goes through a copy */
    CGT_OK(cg_mul(rs, ct, &m));
    CGT_OK(cg_sum(m, 0, 0, &l));
    CGT_OK(cg_backward(l));
    double *g = cgt_read(cg_tensor_grad(x));
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) {
            /* t[j][i-1] = x[i][j]; rs[j*2 + (i-1)] */
            double want = (i == 1 || i == 2) ? c[j * 2 + (i - 1)] : 0.0;
            ck_assert_msg(g[i * 3 + j] == want, "grad[%d][%d] = %g, want %g", i, j, g[i * 3 + j], want);
        }
    free(g);
    cg_tensor *list[6] = {sl, t, rs, m, l, ct};
    for (int i = 0; i < 6; i++) cg_tensor_release(list[i]);
    cg_tensor_release(x);
}
END_TEST

START_TEST(backward_ex_on_leaf_and_non_requiring_inputs) {
    cgt_rand r = cgt_rand_make("leaf backward");
    int64_t s = 4;
    cg_tensor *x = leaf(&r, &s, 1), *c = cgt_randn(&r, &s, 1, CG_F64, CG_CPU), *gout = cgt_randn(&r, &s, 1, CG_F64, CG_CPU);
    CGT_OK(cg_backward_ex(x, gout, 0)); /* the gradient of a leaf w.r.t. itself */
    double *g = cgt_read(cg_tensor_grad(x)), *gv = cgt_read(gout);
    for (int i = 0; i < 4; i++) ck_assert(g[i] == gv[i]);
    free(g), free(gv);
    cg_tensor *y = NULL, *l = NULL;
    CGT_OK(cg_mul(x, c, &y));
    CGT_OK(cg_sum(y, 0, 0, &l));
    CGT_OK(cg_backward(l));
    ck_assert_ptr_null(cg_tensor_grad(c)); /* c does not require grad */
    cg_tensor_release(y), cg_tensor_release(l), cg_tensor_release(c), cg_tensor_release(gout), cg_tensor_release(x);
}
END_TEST

START_TEST(long_chain) {
    /* 20000 recorded ops: the engine walks iteratively, no recursion depth limit */
    int64_t s = 3;
    cg_tensor *x = NULL;
    CGT_OK(cg_tensor_ones(&s, 1, CG_F64, CG_CPU, &x));
    CGT_OK(cg_tensor_set_requires_grad(x, 1));
    cg_tensor *cur = cg_tensor_retain(x);
    for (int i = 0; i < 20000; i++) {
        cg_tensor *nx = NULL;
        CGT_OK(cg_scale(cur, 1.0, 0.001, &nx));
        cg_tensor_release(cur);
        cur = nx;
    }
    cg_tensor *l = NULL;
    CGT_OK(cg_sum(cur, 0, 0, &l));
    CGT_ASSERT_CLOSE(cgt_item(l), 3 * (1 + 20.0), 1e-9);
    CGT_OK(cg_backward(l));
    double *g = cgt_read(cg_tensor_grad(x));
    for (int i = 0; i < 3; i++) ck_assert(g[i] == 1.0);
    free(g);
    cg_tensor_release(l), cg_tensor_release(cur), cg_tensor_release(x);
}
END_TEST

START_TEST(long_graph_released_without_backward) {
    /* a loss accumulated over many steps with grad on, then dropped: freeing the graph
     * must not recurse once per node (it overflowed the stack at ~200k nodes) */
    int64_t s = 2;
    cg_tensor *x = NULL;
    CGT_OK(cg_tensor_ones(&s, 1, CG_F32, CG_CPU, &x));
    CGT_OK(cg_tensor_set_requires_grad(x, 1));
    cg_tensor *cur = cg_tensor_retain(x);
    for (int i = 0; i < 300000; i++) {
        cg_tensor *nx = NULL;
        CGT_OK(cg_add(cur, x, &nx));
        cg_tensor_release(cur);
        cur = nx;
    }
    ck_assert_str_eq(cg_tensor_grad_fn_name(cur), "add");
    cg_tensor_release(cur);
    cg_tensor_release(x);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("autograd");
    TCase *t = tcase_create("autograd");
    tcase_add_test(t, gradients_accumulate_across_backwards);
    tcase_add_test(t, no_grad_records_nothing);
    tcase_add_test(t, diamond_graph);
    tcase_add_test(t, retain_graph_and_freed_graph);
    tcase_add_test(t, softmax_ce_seed_paths_agree);
    tcase_add_test(t, backward_ex_grad_out_aliasing_grad_buffer);
    tcase_add_test(t, in_place_change_of_saved_tensor_fails_backward);
    tcase_add_test(t, scopes_release_temporaries);
    tcase_add_test(t, user_gradient_buffer);
    tcase_add_test(t, detach_cuts_the_graph);
    tcase_add_test(t, views_route_gradients);
    tcase_add_test(t, backward_ex_on_leaf_and_non_requiring_inputs);
    tcase_add_test(t, long_chain);
    tcase_add_test(t, long_graph_released_without_backward);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
