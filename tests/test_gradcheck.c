/* Gradient checks: for every case of the op table (tests/support/op_cases.c), float64
 * central finite differences of <out, G> for a random upstream gradient G against the
 * gradients cg_backward_ex() accumulates, for every differentiable input. An op of
 * src/ops.def without a case fails the suite. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgt.h"
#include "op_cases.h"

#define FD_H 1e-6

START_TEST(every_op_has_a_case) {
    ck_assert_int_gt(cg_op_count(), 0);
    for (int op = 0; op < cg_op_count(); op++) {
        const char *name = cg_op_name(op);
        ck_assert_ptr_nonnull(name);
        ck_assert_msg(cgt_case_find(name) >= 0, "op '%s' has no case in tests/support/op_cases.c", name);
    }
    /* and every case names a real op (a typo would silently test nothing) */
    for (int i = 0; i < cgt_n_cases; i++) {
        int found = 0;
        for (int op = 0; op < cg_op_count(); op++) found |= !strcmp(cg_op_name(op), cgt_cases[i].op);
        ck_assert_msg(found, "case '%s / %s' names an op that is not in the table", cgt_cases[i].op, cgt_cases[i].name);
    }
    ck_assert_ptr_null(cg_op_name(cg_op_count()));
    ck_assert_ptr_null(cg_op_name(-1));
}
END_TEST

/* <out, G> for the instance with its current host values, no graph. */
static double objective(const cgt_inst *I, const double *G, int64_t n) {
    cg_tensor *out = NULL;
    cg_no_grad_begin();
    CGT_OK(cgt_inst_run(I, CG_F64, CG_CPU, 0, NULL, &out));
    cg_no_grad_end();
    ck_assert_int_eq(cg_tensor_numel(out), n);
    double *v = cgt_read(out), acc = 0;
    for (int64_t k = 0; k < n; k++) acc += v[k] * G[k];
    free(v);
    cg_tensor_release(out);
    return acc;
}

START_TEST(gradcheck_case) {
    const cgt_case *c = &cgt_cases[_i];
    char tag[256];
    snprintf(tag, sizeof tag, "gradcheck %s %s", c->op, c->name);
    cgt_rand r = cgt_rand_make(tag);
    cgt_inst I;
    cgt_inst_make(c, &r, CG_F64, &I);

    cg_tensor *in[CGT_MAX_IN], *out = NULL;
    CGT_OK(cgt_inst_run(&I, CG_F64, CG_CPU, 1, in, &out));
    if (!(c->flags & CGT_NO_NODE)) {
        const char *fn = cg_tensor_grad_fn_name(out);
        ck_assert_msg(fn && !strcmp(fn, c->op), "%s / %s: output made by '%s', want '%s'", c->op, c->name,
                      fn ? fn : "(leaf)", c->op);
    }
    int64_t n = cg_tensor_numel(out);
    double *G = malloc((size_t)(n ? n : 1) * sizeof *G);
    for (int64_t k = 0; k < n; k++) G[k] = cgt_normal(&r);
    cg_tensor *gt = cgt_tensor(G, cg_tensor_shape(out), cg_tensor_ndim(out), CG_F64, CG_CPU);
    CGT_OK(cg_backward_ex(out, gt, 0));
    cg_tensor_release(gt);
    cg_tensor_release(out);

    cgt_tol tol = {1e-6, 1e-5};
    for (int i = 0; i < I.n_in; i++) {
        cgt_arg *a = &I.in[i];
        if (!a->present || !a->diff) continue;
        int64_t m = cgt_arg_numel(a);
        cg_tensor *g = cg_tensor_grad(in[i]);
        if (m == 0) continue;
        ck_assert_msg(g != NULL, "%s / %s: input %d got no gradient", c->op, c->name, i);
        double *ga = cgt_read(g);
        double *gn = malloc((size_t)m * sizeof *gn);
        for (int64_t k = 0; k < m; k++) {
            double v = a->v[k], h = FD_H * (1.0 + fabs(v));
            a->v[k] = v + h;
            double fp = objective(&I, G, n);
            a->v[k] = v - h;
            double fm = objective(&I, G, n);
            a->v[k] = v;
            gn[k] = (fp - fm) / (2 * h);
        }
        int64_t bad = cgt_first_mismatch(ga, gn, m, tol);
        ck_assert_msg(bad < 0, "%s / %s: d/d input %d [%lld]: backward %.12g, finite difference %.12g [seed %llu]",
                      c->op, c->name, i, (long long)bad, bad >= 0 ? ga[bad] : 0.0, bad >= 0 ? gn[bad] : 0.0,
                      (unsigned long long)cgt_seed());
        free(ga);
        free(gn);
    }
    free(G);
    cgt_tensors_release(in, CGT_MAX_IN);
    cgt_inst_free(&I);
}
END_TEST

/* Input gradients of one instance in dtype dt for upstream gradient G (malloc'd, per input). */
static void grads_in(const cgt_inst *I, cg_dtype dt, const double *G, double **g) {
    cg_tensor *in[CGT_MAX_IN], *out = NULL;
    CGT_OK(cgt_inst_run(I, dt, CG_CPU, 1, in, &out));
    cg_tensor *gt = cgt_tensor(G, cg_tensor_shape(out), cg_tensor_ndim(out), dt, CG_CPU);
    CGT_OK(cg_backward_ex(out, gt, 0));
    for (int i = 0; i < CGT_MAX_IN; i++)
        g[i] = in[i] && I->in[i].diff && cgt_arg_numel(&I->in[i]) ? cgt_read(cg_tensor_grad(in[i])) : NULL;
    cg_tensor_release(gt);
    cg_tensor_release(out);
    cgt_tensors_release(in, CGT_MAX_IN);
}

/* The f32 backward kernels agree with the (finite-difference checked) f64 ones. */
START_TEST(f32_backward_matches_f64) {
    const cgt_case *c = &cgt_cases[_i];
    char tag[256];
    snprintf(tag, sizeof tag, "f32 backward %s %s", c->op, c->name);
    cgt_rand r = cgt_rand_make(tag);
    cgt_inst I;
    cgt_inst_make(c, &r, CG_F32, &I); /* values exact in f32, so both runs see the same inputs */
    cg_tensor *out = NULL;
    CGT_OK(cgt_inst_run(&I, CG_F64, CG_CPU, 0, NULL, &out));
    int64_t n = cg_tensor_numel(out);
    cg_tensor_release(out);
    double *G = malloc((size_t)(n ? n : 1) * sizeof *G);
    for (int64_t k = 0; k < n; k++) G[k] = cgt_round_to(cgt_normal(&r), CG_F32);
    double *g32[CGT_MAX_IN], *g64[CGT_MAX_IN];
    grads_in(&I, CG_F32, G, g32);
    grads_in(&I, CG_F64, G, g64);
    cgt_tol tol = cgt_tol_scaled((cgt_tol){2e-5, 2e-4}, c->tol_mul > 0 ? c->tol_mul : 1);
    for (int i = 0; i < CGT_MAX_IN; i++) {
        if (!g64[i]) continue;
        char what[256];
        snprintf(what, sizeof what, "%s / %s: f32 gradient of input %d", c->op, c->name, i);
        CGT_ASSERT_CLOSE_ARR(g32[i], g64[i], cgt_arg_numel(&I.in[i]), tol, what);
        free(g32[i]);
        free(g64[i]);
    }
    free(G);
    cgt_inst_free(&I);
}
END_TEST

/* Non-differentiable inputs (labels, running statistics) must not get gradients and
 * must not be written by backward. */
START_TEST(no_grad_for_labels_and_stats) {
    for (int ci = 0; ci < cgt_n_cases; ci++) {
        const cgt_case *c = &cgt_cases[ci];
        if (strcmp(c->op, "softmax_ce") && strcmp(c->op, "batchnorm")) continue;
        cgt_rand r = cgt_rand_make(c->name);
        cgt_inst I;
        cgt_inst_make(c, &r, CG_F64, &I);
        cg_tensor *in[CGT_MAX_IN], *out = NULL, *loss = NULL;
        CGT_OK(cgt_inst_run(&I, CG_F64, CG_CPU, 1, in, &out));
        CGT_OK(cg_sum(out, CG_ALL_AXES, 0, &loss));
        CGT_OK(cg_backward(loss));
        for (int i = 0; i < I.n_in; i++)
            if (in[i] && !I.in[i].diff) ck_assert_ptr_null(cg_tensor_grad(in[i]));
        cg_tensor_release(loss);
        cg_tensor_release(out);
        cgt_tensors_release(in, CGT_MAX_IN);
        cgt_inst_free(&I);
    }
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("gradcheck");
    TCase *t = tcase_create("table");
    tcase_add_test(t, every_op_has_a_case);
    tcase_add_test(t, no_grad_for_labels_and_stats);
    tcase_add_loop_test(t, gradcheck_case, 0, cgt_n_cases);
    tcase_add_loop_test(t, f32_backward_matches_f64, 0, cgt_n_cases);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
