/* The worked examples of the seed chapter (Neural Networks, Core) as exact test vectors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cgt.h"

static cg_tensor *from(const double *v, const int64_t *s, int nd, int grad) {
    cg_tensor *t = cgt_tensor(v, s, nd, CG_F64, CG_CPU);
    if (grad) CGT_OK(cg_tensor_set_requires_grad(t, 1));
    return t;
}

START_TEST(mlp_342_has_26_parameters) {
    /* 14.1: (4*3 + 4) + (2*4 + 2) = 26 */
    int64_t sw1[2] = {4, 3}, sb1 = 4, sw2[2] = {2, 4}, sb2 = 2;
    cg_tensor *p[4] = {NULL};
    CGT_OK(cg_tensor_zeros(sw1, 2, CG_F32, CG_CPU, &p[0]));
    CGT_OK(cg_tensor_zeros(&sb1, 1, CG_F32, CG_CPU, &p[1]));
    CGT_OK(cg_tensor_zeros(sw2, 2, CG_F32, CG_CPU, &p[2]));
    CGT_OK(cg_tensor_zeros(&sb2, 1, CG_F32, CG_CPU, &p[3]));
    int64_t total = 0;
    for (int i = 0; i < 4; i++) total += cg_tensor_numel(p[i]);
    ck_assert_int_eq(total, 26);
    for (int i = 0; i < 4; i++) cg_tensor_release(p[i]);
}
END_TEST

START_TEST(forward_pass_example) {
    /* 14.2: x = [1, 2], W1 = [[.1, .3], [-.2, .4]], b1 = [0, .1], ReLU -> [0.7, 0.7]
     * (batch form: x (1,2) @ W1^T + b1) */
    double x[2] = {1, 2}, w[4] = {.1, .3, -.2, .4}, b[2] = {0, .1};
    int64_t sx[2] = {1, 2}, sw[2] = {2, 2}, sb = 2;
    cg_tensor *xt = from(x, sx, 2, 0), *wt = from(w, sw, 2, 0), *bt = from(b, &sb, 1, 0), *z = NULL, *zb = NULL,
              *a = NULL;
    CGT_OK(cg_matmul(xt, wt, 0, 1, &z));
    CGT_OK(cg_add(z, bt, &zb));
    CGT_OK(cg_relu(zb, &a));
    double *av = cgt_read(a);
    ck_assert_int_eq(cg_tensor_dim(a, 0), 1);
    ck_assert_int_eq(cg_tensor_dim(a, 1), 2);
    CGT_ASSERT_CLOSE(av[0], 0.7, 1e-12);
    CGT_ASSERT_CLOSE(av[1], 0.7, 1e-12);
    free(av);
    cg_tensor *l[6] = {xt, wt, bt, z, zb, a};
    for (int i = 0; i < 6; i++) cg_tensor_release(l[i]);
}
END_TEST

START_TEST(backprop_example) {
    /* 14.3: x=2, w1=.5, w2=1.5, y=3, L = .5 (w2 w1 x - y)^2 -> dL/dw1 = -4.5, dL/dw2 = -1.5 */
    int64_t one = 1;
    double xv = 2, w1v = .5, w2v = 1.5, yv = 3;
    cg_tensor *x = from(&xv, &one, 1, 0), *w1 = from(&w1v, &one, 1, 1), *w2 = from(&w2v, &one, 1, 1),
              *y = from(&yv, &one, 1, 0);
    cg_tensor *a1 = NULL, *yhat = NULL, *err = NULL, *sq = NULL, *half = NULL, *L = NULL;
    CGT_OK(cg_mul(w1, x, &a1));
    CGT_OK(cg_mul(w2, a1, &yhat));
    CGT_OK(cg_sub(yhat, y, &err));
    CGT_OK(cg_mul(err, err, &sq));
    CGT_OK(cg_scale(sq, 0.5, 0.0, &half));
    CGT_OK(cg_sum(half, CG_ALL_AXES, 0, &L));
    CGT_ASSERT_CLOSE(cgt_item(a1), 1.0, 1e-15);
    CGT_ASSERT_CLOSE(cgt_item(yhat), 1.5, 1e-15);
    CGT_ASSERT_CLOSE(cgt_item(err), -1.5, 1e-15);
    CGT_ASSERT_CLOSE(cgt_item(L), 1.125, 1e-15);
    CGT_OK(cg_backward(L));
    CGT_ASSERT_CLOSE(cgt_item(cg_tensor_grad(w1)), -4.5, 1e-12);
    CGT_ASSERT_CLOSE(cgt_item(cg_tensor_grad(w2)), -1.5, 1e-12);
    /* the same through the fused MSE: mean of (yhat - y)^2 is 2L, so half its gradient */
    cg_tensor *yhat2 = NULL, *a1b = NULL, *mse = NULL;
    CGT_OK(cg_zero_grad((cg_tensor *[]){w1, w2}, 2));
    CGT_OK(cg_mul(w1, x, &a1b));
    CGT_OK(cg_mul(w2, a1b, &yhat2));
    CGT_OK(cg_mse_loss(yhat2, y, CG_REDUCE_MEAN, &mse));
    CGT_ASSERT_CLOSE(cgt_item(mse), 2.25, 1e-15);
    CGT_OK(cg_backward(mse));
    CGT_ASSERT_CLOSE(cgt_item(cg_tensor_grad(w1)) / 2, -4.5, 1e-12);
    CGT_ASSERT_CLOSE(cgt_item(cg_tensor_grad(w2)) / 2, -1.5, 1e-12);
    cg_tensor *l[13] = {x, w1, w2, y, a1, yhat, err, sq, half, L, yhat2, a1b, mse};
    for (int i = 0; i < 13; i++) cg_tensor_release(l[i]);
}
END_TEST

START_TEST(softmax_example) {
    /* 14.6: softmax([2, 1, 0.1]) = [0.659, 0.242, 0.099] (three decimals) */
    double z[3] = {2.0, 1.0, 0.1};
    int64_t s = 3;
    for (int k = 0; k < 2; k++) {
        cg_tensor *t = cgt_tensor(z, &s, 1, k ? CG_F64 : CG_F32, CG_CPU), *p = NULL;
        CGT_OK(cg_softmax(t, &p));
        double *pv = cgt_read(p);
        CGT_ASSERT_CLOSE(pv[0], 0.659, 5e-4);
        CGT_ASSERT_CLOSE(pv[1], 0.242, 5e-4);
        CGT_ASSERT_CLOSE(pv[2], 0.099, 5e-4);
        free(pv);
        cg_tensor_release(t), cg_tensor_release(p);
    }
}
END_TEST

START_TEST(cross_entropy_example) {
    /* 14.8: true class 0; yhat0 = 0.659 -> 0.417, 0.99 -> 0.01, 0.01 -> 4.6. Logits are
     * log-probabilities (softmax of log p is p); the rest of the mass is split evenly. */
    double p0[3] = {0.659, 0.99, 0.01}, want[3] = {0.417, 0.01, 4.6}, dec[3] = {5e-4, 5e-3, 5e-2};
    int64_t s[2] = {3, 3}, ls = 3, lab[3] = {0, 0, 0};
    double logits[9];
    for (int i = 0; i < 3; i++) {
        logits[i * 3] = log(p0[i]);
        logits[i * 3 + 1] = logits[i * 3 + 2] = log((1 - p0[i]) / 2);
    }
    cg_tensor *x = cgt_tensor(logits, s, 2, CG_F64, CG_CPU), *labels = NULL, *ce = NULL, *sm = NULL;
    CGT_OK(cg_tensor_from_host(lab, &ls, 1, CG_I64, CG_CPU, &labels));
    CGT_OK(cg_softmax_cross_entropy(x, labels, CG_REDUCE_NONE, 0.0, &ce));
    CGT_OK(cg_softmax(x, &sm));
    double *v = cgt_read(ce), *pv = cgt_read(sm);
    for (int i = 0; i < 3; i++) {
        CGT_ASSERT_CLOSE(pv[i * 3], p0[i], 1e-12);
        CGT_ASSERT_CLOSE(v[i], -log(p0[i]), 1e-12);
        CGT_ASSERT_CLOSE(v[i], want[i], dec[i]);
    }
    free(v), free(pv);
    cg_tensor_release(x), cg_tensor_release(labels), cg_tensor_release(ce), cg_tensor_release(sm);
}
END_TEST

START_TEST(layernorm_example) {
    /* 14.10: [1, 2, 3, 4] -> [-1.34, -0.45, 0.45, 1.34] (two decimals) */
    double x[4] = {1, 2, 3, 4}, want[4] = {-1.34, -0.45, 0.45, 1.34};
    int64_t s[2] = {1, 4};
    cg_tensor *t = cgt_tensor(x, s, 2, CG_F32, CG_CPU), *y = NULL;
    CGT_OK(cg_layernorm(t, NULL, NULL, 1e-5, &y));
    double *v = cgt_read(y);
    for (int i = 0; i < 4; i++) {
        CGT_ASSERT_CLOSE(v[i], want[i], 5e-3);
        CGT_ASSERT_CLOSE(v[i], (x[i] - 2.5) / sqrt(1.25 + 1e-5), 1e-6);
    }
    free(v);
    cg_tensor_release(t), cg_tensor_release(y);
}
END_TEST

START_TEST(gradient_step_and_weight_decay) {
    /* 14.9: w = 4.0, lr 0.1, grad 6.0 -> 3.4. 14.12: (1 - 0.1*0.01) * 4.0 = 3.996 */
    int64_t one = 1;
    double w0 = 4.0, g0 = 6.0;
    cg_tensor *w = from(&w0, &one, 1, 1), *g = from(&g0, &one, 1, 0), *w2 = from(&w0, &one, 1, 1);
    CGT_FAILS(cg_add_(w, -0.1, g), CG_E_STATE, "no_grad"); /* a leaf needing grad: only under no_grad */
    cg_no_grad_begin();
    CGT_OK(cg_add_(w, -0.1, g));
    CGT_OK(cg_scale_(w2, 1 - 0.1 * 0.01));
    cg_no_grad_end();
    CGT_ASSERT_CLOSE(cgt_item(w), 3.4, 1e-15);
    CGT_ASSERT_CLOSE(cgt_item(w2), 3.996, 1e-15);
    /* repeated steps on L = w^2 / 2 decay geometrically: 4.0 -> 3.6 -> 3.24 */
    double want[2] = {3.6, 3.24};
    cg_tensor *v = from(&w0, &one, 1, 1);
    for (int step = 0; step < 2; step++) {
        cg_tensor *sq = NULL, *L = NULL;
        CGT_OK(cg_mul(v, v, &sq));
        CGT_OK(cg_scale(sq, 0.5, 0, &L));
        CGT_OK(cg_zero_grad(&v, 1));
        CGT_OK(cg_backward(L));
        cg_no_grad_begin();
        CGT_OK(cg_add_(v, -0.1, cg_tensor_grad(v)));
        cg_no_grad_end();
        CGT_ASSERT_CLOSE(cgt_item(v), want[step], 1e-14);
        cg_tensor_release(sq), cg_tensor_release(L);
    }
    cg_tensor_release(w), cg_tensor_release(g), cg_tensor_release(w2), cg_tensor_release(v);
}
END_TEST

/* Std of the activations after 50 ReLU layers of width 256 with He init times `scale`. */
static double he_depth_std(cgt_rand *r, double scale) {
    const int64_t n = 256, batch = 8;
    int64_t sx[2] = {batch, n}, sw[2] = {n, n};
    cg_tensor *a = cgt_randn(r, sx, 2, CG_F64, CG_CPU);
    cg_rng rng = cgt_lib_rng(r);
    cg_no_grad_begin();
    for (int layer = 0; layer < 50; layer++) {
        cg_tensor *w = NULL, *z = NULL, *h = NULL;
        CGT_OK(cg_tensor_rand_normal(sw, 2, CG_F64, CG_CPU, 0.0, sqrt(2.0 / n) * scale, &rng, &w));
        CGT_OK(cg_matmul(a, w, 0, 1, &z)); /* rows are examples: a W^T */
        CGT_OK(cg_relu(z, &h));
        cg_tensor_release(a), cg_tensor_release(w), cg_tensor_release(z);
        a = h;
    }
    cg_no_grad_end();
    double *v = cgt_read(a), m = 0, s = 0;
    for (int64_t i = 0; i < batch * n; i++) m += v[i];
    m /= (double)(batch * n);
    for (int64_t i = 0; i < batch * n; i++) s += (v[i] - m) * (v[i] - m);
    free(v);
    cg_tensor_release(a);
    return sqrt(s / (double)(batch * n));
}

START_TEST(he_init_keeps_deep_relu_signal) {
    /* 14.7: He std stays O(1); half the scale vanishes (0.5^50 ~ 1e-15), double explodes */
    cgt_rand r = cgt_rand_make("he init");
    double s1 = he_depth_std(&r, 1.0), s05 = he_depth_std(&r, 0.5), s2 = he_depth_std(&r, 2.0);
    ck_assert_msg(s1 > 0.1 && s1 < 10, "He init: std %g after 50 layers, want O(1)", s1);
    ck_assert_msg(s05 < 1e-6, "0.5x He: std %g, want vanishing", s05);
    ck_assert_msg(s2 > 1e6 && isfinite(s2), "2x He: std %g, want exploding", s2);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("chapter");
    TCase *t = tcase_create("worked examples");
    tcase_add_test(t, mlp_342_has_26_parameters);
    tcase_add_test(t, forward_pass_example);
    tcase_add_test(t, backprop_example);
    tcase_add_test(t, softmax_example);
    tcase_add_test(t, cross_entropy_example);
    tcase_add_test(t, layernorm_example);
    tcase_add_test(t, gradient_step_and_weight_decay);
    tcase_add_test(t, he_init_keeps_deep_relu_signal);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
