/* Op values: every case of the op table against its float64 reference (f32 and f64),
 * plus properties the table cannot express: softmax normalisation and large logits,
 * GELU known values, batchnorm running statistics, dropout masks, label smoothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgt.h"
#include "cpu/cpu_kernels.h"
#include "op_cases.h"
#include "op_refs.h"
#include "philox.h"

START_TEST(every_op_has_a_value_test) {
    for (int op = 0; op < cg_op_count(); op++) {
        int found = 0;
        for (int i = 0; i < cgt_n_cases; i++) found |= !strcmp(cgt_cases[i].op, cg_op_name(op)) && cgt_cases[i].ref;
        ck_assert_msg(found, "op '%s' has no value test (a case with a reference in op_cases.c)", cg_op_name(op));
    }
}
END_TEST

/* Loop index: case i / 2 in dtype f32 (even) or f64 (odd). */
START_TEST(value_case) {
    const cgt_case *c = &cgt_cases[_i / 2];
    cg_dtype dt = _i % 2 ? CG_F64 : CG_F32;
    char tag[256];
    snprintf(tag, sizeof tag, "value %s %s", c->op, c->name);
    cgt_rand r = cgt_rand_make(tag);
    cgt_inst I;
    cgt_inst_make(c, &r, dt, &I);
    cg_tensor *out = NULL;
    CGT_OK(cgt_inst_run(&I, dt, CG_CPU, _i % 4 < 2, NULL, &out)); /* with and without requires_grad */
    cgt_ref ref;
    cgt_ref_compute(&I, &ref);
    ck_assert_int_eq(cg_tensor_dtype(out), dt);
    ck_assert_msg(cg_tensor_ndim(out) == ref.ndim, "%s / %s: ndim %d, want %d", c->op, c->name, cg_tensor_ndim(out),
                  ref.ndim);
    for (int d = 0; d < ref.ndim; d++)
        ck_assert_msg(cg_tensor_dim(out, d) == ref.shape[d], "%s / %s: dim %d is %lld, want %lld", c->op, c->name, d,
                      (long long)cg_tensor_dim(out, d), (long long)ref.shape[d]);
    int64_t n = cg_tensor_numel(out);
    double *got = cgt_read(out);
    cgt_tol tol = cgt_tol_scaled(cgt_tol_for(dt), c->tol_mul > 0 ? c->tol_mul : 1);
    char what[256];
    snprintf(what, sizeof what, "%s / %s (%s)", c->op, c->name, cg_dtype_name(dt));
    CGT_ASSERT_CLOSE_ARR(got, ref.v, n, tol, what);
    free(got);
    cgt_ref_free(&ref);
    cg_tensor_release(out);
    cgt_inst_free(&I);
}
END_TEST

START_TEST(softmax_rows_sum_to_one_and_large_logits_stay_finite) {
    cgt_rand r = cgt_rand_make("softmax big");
    for (int k = 0; k < 2; k++) {
        cg_dtype dt = k ? CG_F64 : CG_F32;
        int64_t s[2] = {5, 127};
        double *x = malloc(5 * 127 * sizeof *x);
        for (int i = 0; i < 5 * 127; i++) x[i] = 1e4 * cgt_normal(&r); /* logits around +-1e4 */
        x[3] = 1e4;
        x[4] = 1e4; /* a tie at the maximum */
        cg_tensor *t = cgt_tensor(x, s, 2, dt, CG_CPU), *p = NULL, *lp = NULL;
        CGT_OK(cg_softmax(t, &p));
        CGT_OK(cg_log_softmax(t, &lp));
        double *pv = cgt_read(p), *lv = cgt_read(lp);
        ck_assert(cgt_all_finite(pv, 5 * 127));
        for (int i = 0; i < 5; i++) {
            double sum = 0;
            for (int j = 0; j < 127; j++) {
                ck_assert(pv[i * 127 + j] >= 0 && pv[i * 127 + j] <= 1);
                ck_assert(lv[i * 127 + j] <= 0 && isfinite(lv[i * 127 + j]));
                sum += pv[i * 127 + j];
            }
            CGT_ASSERT_CLOSE(sum, 1.0, 1e-6);
        }
        CGT_ASSERT_CLOSE(pv[3], pv[4], 1e-7);
        /* cross-entropy of the same logits is finite too */
        int64_t ls = 5, lab[5] = {0, 1, 2, 3, 4};
        cg_tensor *labels = NULL, *ce = NULL;
        CGT_OK(cg_tensor_from_host(lab, &ls, 1, CG_I64, CG_CPU, &labels));
        CGT_OK(cg_softmax_cross_entropy(t, labels, CG_REDUCE_MEAN, 0.0, &ce));
        ck_assert(isfinite(cgt_item(ce)));
        free(pv);
        free(lv);
        free(x);
        cg_tensor_release(ce);
        cg_tensor_release(labels);
        cg_tensor_release(t);
        cg_tensor_release(p);
        cg_tensor_release(lp);
    }
}
END_TEST

START_TEST(gelu_known_values) {
    /* GELU(1) = Phi(1) = 0.8413447460685429; the tanh form gives 0.8411919906082768 */
    double xs[3] = {1.0, -1.0, 0.0};
    int64_t s = 3;
    for (int k = 0; k < 2; k++) {
        cg_dtype dt = k ? CG_F64 : CG_F32;
        double tol = k ? 1e-12 : 1e-6;
        cg_tensor *x = cgt_tensor(xs, &s, 1, dt, CG_CPU), *e = NULL, *t = NULL;
        CGT_OK(cg_gelu(x, CG_GELU_ERF, &e));
        CGT_OK(cg_gelu(x, CG_GELU_TANH, &t));
        double *ev = cgt_read(e), *tv = cgt_read(t);
        CGT_ASSERT_CLOSE(ev[0], 0.8413447460685429, tol);
        CGT_ASSERT_CLOSE(ev[1], -0.15865525393145707, tol);
        CGT_ASSERT_CLOSE(ev[2], 0.0, tol);
        CGT_ASSERT_CLOSE(tv[0], 0.8411919906082768, tol);
        CGT_ASSERT_CLOSE(tv[1], -0.15880800939172324, tol);
        ck_assert(fabs(ev[0] - tv[0]) > 1e-4); /* the two forms really differ */
        free(ev);
        free(tv);
        cg_tensor_release(x);
        cg_tensor_release(e);
        cg_tensor_release(t);
    }
}
END_TEST

/* Far out, tanh-GELU's t = tanh(.) is exactly +-1 and its gradient exactly 1 (v > 0) or 0
 * (v < 0), through cg_gelu and through the fused linear. The second term of the derivative
 * is 0 * du there, and du overflows (v^2 beyond the dtype's range; f32 values are computed
 * in double on the CPU, so only f64 reaches it): it used to give NaN. */
START_TEST(gelu_tanh_gradient_saturates) {
    double xs[6] = {1e20, -1e20, 3e38, -3e38, 1e200, -1e200};
    for (int k = 0; k < 2; k++) {
        cg_dtype dt = k ? CG_F64 : CG_F32;
        int64_t n = k ? 6 : 4;
        for (int via = 0; via < 2; via++) {
            double *g = cgt_gelu_tanh_grads(xs, n, dt, CG_CPU, via);
            for (int64_t i = 0; i < n; i++)
                ck_assert_msg(g[i] == (xs[i] > 0 ? 1.0 : 0.0), "%s via %s: x %g grad %g", cg_dtype_name(dt),
                              via ? "linear" : "gelu", xs[i], g[i]);
            free(g);
        }
    }
}
END_TEST

START_TEST(batchnorm_running_stats) {
    cgt_rand r = cgt_rand_make("bn running");
    for (int k = 0; k < 2; k++) {
        cg_dtype dt = k ? CG_F64 : CG_F32;
        int64_t s[2] = {9, 4}, c = 4;
        double x[36], rm[4], rv[4], mom = 0.1;
        for (int i = 0; i < 36; i++) x[i] = cgt_round_to(3 * cgt_normal(&r) + 1, dt);
        for (int j = 0; j < 4; j++) rm[j] = cgt_round_to(cgt_normal(&r), dt), rv[j] = cgt_round_to(cgt_uniform(&r, 0.5, 2), dt);
        cg_tensor *xt = cgt_tensor(x, s, 2, dt, CG_CPU), *rmt = cgt_tensor(rm, &c, 1, dt, CG_CPU),
                  *rvt = cgt_tensor(rv, &c, 1, dt, CG_CPU), *out = NULL;
        uint64_t v0 = cg_tensor_version(rmt);
        CGT_OK(cg_batchnorm(xt, NULL, NULL, rmt, rvt, 1, mom, 1e-5, &out));
        ck_assert_msg(cg_tensor_version(rmt) > v0, "training batchnorm must bump running_mean's version");
        double *nm = cgt_read(rmt), *nv = cgt_read(rvt), *y = cgt_read(out);
        double tol = k ? 1e-12 : 1e-5;
        for (int j = 0; j < 4; j++) {
            double mu = 0, ss = 0;
            for (int i = 0; i < 9; i++) mu += x[i * 4 + j];
            mu /= 9;
            for (int i = 0; i < 9; i++) ss += (x[i * 4 + j] - mu) * (x[i * 4 + j] - mu);
            CGT_ASSERT_CLOSE(nm[j], (1 - mom) * rm[j] + mom * mu, tol * 4);
            CGT_ASSERT_CLOSE(nv[j], (1 - mom) * rv[j] + mom * ss / 8, tol * 4); /* unbiased: n - 1 */
            /* and the output used the biased batch variance */
            CGT_ASSERT_CLOSE(y[j], (x[j] - mu) / sqrt(ss / 9 + 1e-5), tol * 10);
        }
        free(nm);
        free(nv);
        free(y);
        cg_tensor_release(out);
        /* eval mode leaves the running statistics alone and uses them */
        uint64_t v1 = cg_tensor_version(rmt);
        double *before = cgt_read(rmt);
        CGT_OK(cg_batchnorm(xt, NULL, NULL, rmt, rvt, 0, mom, 1e-5, &out));
        double *after = cgt_read(rmt), *rvv = cgt_read(rvt), *ye = cgt_read(out);
        ck_assert_int_eq(cg_tensor_version(rmt), v1);
        for (int j = 0; j < 4; j++) {
            ck_assert(after[j] == before[j]);
            CGT_ASSERT_CLOSE(ye[4 + j], (x[4 + j] - after[j]) / sqrt(rvv[j] + 1e-5), tol * 10);
        }
        free(before);
        free(after);
        free(rvv);
        free(ye);
        cg_tensor_release(out);
        cg_tensor_release(xt);
        cg_tensor_release(rmt);
        cg_tensor_release(rvt);
    }
}
END_TEST

START_TEST(dropout_masks) {
    cgt_rand r = cgt_rand_make("dropout");
    const int64_t n = 100003;
    double p = 0.3;
    cg_tensor *x = cgt_randu(&r, &n, 1, 0.5, 2.0, CG_F32, CG_CPU), *y1 = NULL, *y2 = NULL, *y3 = NULL;
    double *xv = cgt_read(x);
    cg_rng rng = cgt_lib_rng(&r), start = rng;
    CGT_OK(cg_dropout(x, p, 1, &rng, &y1));
    ck_assert_msg(rng.offset == start.offset + (uint64_t)(n + 3) / 4, "dropout must advance the offset by ceil(n/4)");
    cg_rng again = start;
    CGT_OK(cg_dropout(x, p, 1, &again, &y2));
    CGT_OK(cg_dropout(x, p, 1, &rng, &y3)); /* next offset: a different mask */
    double *a = cgt_read(y1), *b = cgt_read(y2), *c = cgt_read(y3);
    int64_t kept = 0, differ = 0;
    for (int64_t i = 0; i < n; i++) {
        ck_assert(a[i] == b[i]); /* same seed and offset: same mask, same values */
        if (a[i] != 0) {
            kept++;
            CGT_ASSERT_CLOSE(a[i], xv[i] / (1 - p), 1e-6 * fabs(xv[i]) / (1 - p));
        }
        /* the mask is the documented Philox stream */
        ck_assert((a[i] != 0) == cg_dropout_keep(start.seed, start.offset, (uint64_t)i, (float)p));
        differ += (a[i] != 0) != (c[i] != 0);
    }
    double frac = (double)kept / (double)n, sd = sqrt(p * (1 - p) / (double)n);
    ck_assert_msg(fabs(frac - (1 - p)) < 6 * sd, "kept fraction %g, want %g", frac, 1 - p);
    /* independent masks disagree on about 2 p (1 - p) of the elements */
    ck_assert_msg(fabs((double)differ / n - 2 * p * (1 - p)) < 0.02, "masks at different offsets differ on %lld",
                  (long long)differ);
    free(a);
    free(b);
    free(c);
    free(xv);
    cg_tensor_release(y1);
    cg_tensor_release(y2);
    cg_tensor_release(y3);
    /* eval mode and p == 0: the input itself, offset untouched */
    cg_rng r2 = start;
    CGT_OK(cg_dropout(x, 0.5, 0, &r2, &y1));
    ck_assert_ptr_eq(y1, x);
    ck_assert_int_eq(r2.offset, start.offset);
    CGT_OK(cg_dropout(x, 0.0, 1, &r2, &y2));
    ck_assert_ptr_eq(y2, x);
    cg_tensor_release(y1);
    cg_tensor_release(y2);
    cg_tensor_release(x);
}
END_TEST

START_TEST(cross_entropy_label_smoothing_by_hand) {
    /* logits [1, 2, 3], class 0, eps 0.2: loss = -(0.8 + 0.2/3) log p0 - 0.2/3 (log p1 + log p2) */
    double z[3] = {1, 2, 3}, lse = log(exp(1.0) + exp(2.0) + exp(3.0));
    double want = -(0.8 + 0.2 / 3) * (1 - lse) - 0.2 / 3 * ((2 - lse) + (3 - lse));
    int64_t s[2] = {1, 3}, ls = 1, lab = 0;
    for (int k = 0; k < 2; k++) {
        cg_dtype dt = k ? CG_F64 : CG_F32;
        cg_tensor *x = cgt_tensor(z, s, 2, dt, CG_CPU), *l = NULL, *out = NULL;
        CGT_OK(cg_tensor_from_host(&lab, &ls, 1, CG_I64, CG_CPU, &l));
        CGT_OK(cg_softmax_cross_entropy(x, l, CG_REDUCE_MEAN, 0.2, &out));
        CGT_ASSERT_CLOSE(cgt_item(out), want, k ? 1e-12 : 1e-6);
        cg_tensor_release(out);
        CGT_OK(cg_softmax_cross_entropy(x, l, CG_REDUCE_SUM, 1.0, &out)); /* all smoothing: uniform target */
        CGT_ASSERT_CLOSE(cgt_item(out), -((1 - lse) + (2 - lse) + (3 - lse)) / 3, k ? 1e-12 : 1e-6);
        cg_tensor_release(out);
        cg_tensor_release(x);
        cg_tensor_release(l);
    }
}
END_TEST

/* A masked class (logit -inf) costs nothing and gets no gradient, as in PyTorch: the loss of
 * [-inf, 1, 2] with class 2 is the loss of [1, 2], finite, without label smoothing; with
 * smoothing the target puts mass on the masked class, so the loss is +inf. */
START_TEST(cross_entropy_masked_logit) {
    double z[3] = {-INFINITY, 1, 2}, want = log(exp(1.0) + exp(2.0)) - 2;
    int64_t s[2] = {1, 3}, ls = 1, lab = 2;
    for (int k = 0; k < 2; k++) {
        cg_dtype dt = k ? CG_F64 : CG_F32;
        cg_tensor *x = cgt_tensor(z, s, 2, dt, CG_CPU), *l = NULL, *out = NULL;
        CGT_OK(cg_tensor_set_requires_grad(x, 1));
        CGT_OK(cg_tensor_from_host(&lab, &ls, 1, CG_I64, CG_CPU, &l));
        CGT_OK(cg_softmax_cross_entropy(x, l, CG_REDUCE_MEAN, 0.0, &out));
        CGT_ASSERT_CLOSE(cgt_item(out), want, k ? 1e-12 : 1e-6);
        CGT_OK(cg_backward(out));
        double *g = cgt_read(cg_tensor_grad(x)), p1 = exp(1.0) / (exp(1.0) + exp(2.0));
        ck_assert(g[0] == 0.0);
        CGT_ASSERT_CLOSE(g[1], p1, k ? 1e-12 : 1e-6);
        CGT_ASSERT_CLOSE(g[2], (1 - p1) - 1, k ? 1e-12 : 1e-6);
        free(g);
        cg_tensor_release(out);
        CGT_OK(cg_softmax_cross_entropy(x, l, CG_REDUCE_MEAN, 0.1, &out));
        ck_assert(isinf(cgt_item(out)) && cgt_item(out) > 0);
        cg_tensor_release(out);
        cg_tensor_release(x);
        cg_tensor_release(l);
    }
}
END_TEST

START_TEST(matmul_matches_exported_oracle) {
    cgt_rand r = cgt_rand_make("matmul oracle");
    for (int tr = 0; tr < 4; tr++) {
        int ta = tr & 1, tb = tr >> 1;
        int64_t M = 33, N = 17, K = 65;
        int64_t sa[2] = {ta ? K : M, ta ? M : K}, sb[2] = {tb ? N : K, tb ? K : N}, so[2] = {M, N};
        cg_tensor *a = cgt_randn(&r, sa, 2, CG_F64, CG_CPU), *b = cgt_randn(&r, sb, 2, CG_F64, CG_CPU), *c = NULL, *o = NULL;
        CGT_OK(cg_matmul(a, b, ta, tb, &c));
        CGT_OK(cg_tensor_zeros(so, 2, CG_F64, CG_CPU, &o));
        cgt_poison(o);
        CGT_OK(cg_matmul_ref_cpu(a, b, ta, tb, o));
        double *cv = cgt_read(c), *ov = cgt_read(o), *av = cgt_read(a), *bv = cgt_read(b);
        double mine[33 * 17];
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++) acc += (ta ? av[k * M + i] : av[i * K + k]) * (tb ? bv[j * K + k] : bv[k * N + j]);
                mine[i * N + j] = acc;
            }
        CGT_ASSERT_CLOSE_ARR(ov, mine, M * N, cgt_tol_for(CG_F64), "cg_matmul_ref_cpu vs triple loop");
        CGT_ASSERT_CLOSE_ARR(cv, mine, M * N, cgt_tol_for(CG_F64), "cg_matmul vs triple loop");
        free(cv);
        free(ov);
        free(av);
        free(bv);
        cg_tensor_release(a);
        cg_tensor_release(b);
        cg_tensor_release(c);
        cg_tensor_release(o);
    }
}
END_TEST

START_TEST(f32_reductions_accumulate_accurately) {
    /* 1e5 positive f32 values: a float accumulator drifts by ~1e-4 relative, double does not */
    cgt_rand r = cgt_rand_make("sum accuracy");
    const int64_t n = 100003;
    cg_tensor *x = cgt_randu(&r, &n, 1, 0.0, 1.0, CG_F32, CG_CPU), *s = NULL, *m = NULL;
    double *v = cgt_read(x), want = 0;
    for (int64_t i = 0; i < n; i++) want += v[i];
    CGT_OK(cg_sum(x, 0, 0, &s));
    CGT_OK(cg_mean(x, CG_ALL_AXES, 0, &m));
    ck_assert(cgt_close(cgt_item(s), want, (cgt_tol){0, 1e-6}));
    ck_assert(cgt_close(cgt_item(m), want / (double)n, (cgt_tol){0, 1e-6}));
    free(v);
    cg_tensor_release(x);
    cg_tensor_release(s);
    cg_tensor_release(m);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("ops");
    TCase *t = tcase_create("values");
    tcase_add_test(t, every_op_has_a_value_test);
    tcase_add_loop_test(t, value_case, 0, 2 * cgt_n_cases);
    tcase_add_test(t, softmax_rows_sum_to_one_and_large_logits_stay_finite);
    tcase_add_test(t, gelu_known_values);
    tcase_add_test(t, gelu_tanh_gradient_saturates);
    tcase_add_test(t, batchnorm_running_stats);
    tcase_add_test(t, dropout_masks);
    tcase_add_test(t, cross_entropy_label_smoothing_by_hand);
    tcase_add_test(t, cross_entropy_masked_logit);
    tcase_add_test(t, matmul_matches_exported_oracle);
    tcase_add_test(t, f32_reductions_accumulate_accurately);
    tcase_set_timeout(t, 60);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
