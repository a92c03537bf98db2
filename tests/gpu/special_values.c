/* GPU suite: NaN and Inf propagate like the CPU through activations, row ops, reductions
 * and the fused linear forward; tanh-GELU's gradient saturates like the CPU's. */
#include "gpu_suite.h"

/* ---------------------------------------------------------------- NaN / Inf */

static cg_status ap_unary(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    switch (*(const int *)arg) {
    case 0: return cg_exp(in[0], out);
    case 1: return cg_log(in[0], out);
    case 2: return cg_sqrt(in[0], out);
    case 3: return cg_sigmoid(in[0], out);
    case 4: return cg_tanh(in[0], out);
    case 5: return cg_relu(in[0], out);
    case 6: return cg_leaky_relu(in[0], 0.01, out);
    case 7: return cg_gelu(in[0], CG_GELU_ERF, out);
    case 8: return cg_gelu(in[0], CG_GELU_TANH, out);
    case 9: return cg_softmax(in[0], out);
    case 10: return cg_layernorm(in[0], NULL, NULL, 1e-5, out);
    default: return cg_sum(in[0], 1, 0, out);
    }
}


START_TEST(nan_inf_propagate_like_cpu) {
    cgt_rand r = cgt_rand_make("nan inf");
    for (int wi = 0; wi < 2; wi++) { /* block kernels, then the register-row kernels */
        int64_t w = wi ? 4096 : 1025, shape[2] = {5, w}, n = shape[0] * shape[1];
        double *x = randn_arr(&r, n, 0.5, 1.0);
        x[3] = NAN;                  /* row 0 */
        x[w + 7] = INFINITY;         /* row 1 */
        x[2 * w + 9] = -INFINITY;    /* row 2 */
        x[3 * w + 11] = 1e30;        /* row 3 overflows exp */
        for (int f = 0; f < 12; f++) {
            double *res[2];
            for (int dv = 0; dv < 2; dv++) {
                cg_tensor *t = cgt_tensor(x, shape, 2, CG_F32, dv ? GPU : CG_CPU), *o = NULL;
                CGT_OK(ap_unary(&t, &o, &f));
                res[dv] = cgt_read(o);
                if (!dv) n = cg_tensor_numel(o);
                cg_tensor_release(t);
                cg_tensor_release(o);
            }
            for (int64_t i = 0; i < n; i++)
                ck_assert_msg(same_class(res[1][i], res[0][i], gpu_tol(CG_F32, 10)), "fn %d element %lld: cpu %.9g cuda %.9g",
                              f, (long long)i, res[0][i], res[1][i]);
            n = shape[0] * shape[1];
            free(res[0]);
            free(res[1]);
        }
        free(x);
    }
}
END_TEST

/* tanh-GELU far out (f32 |v| beyond ~1.8e19, where v^2 overflows in float): the gradient is
 * exactly 1 or 0 on both backends, through cg_gelu and through the fused linear (GELU aux). */
START_TEST(gelu_tanh_gradient_saturates_like_cpu) {
    double xs[8] = {1e20, -1e20, 3e38, -3e38, 20.0, -20.0, 2e19, -2e19};
    for (int via = 0; via < 2; via++) {
        double *g = cgt_gelu_tanh_grads(xs, 8, CG_F32, GPU, via);
        for (int i = 0; i < 8; i++)
            ck_assert_msg(g[i] == (xs[i] > 0 ? 1.0 : 0.0), "via %s: x %g grad %g", via ? "linear" : "gelu", xs[i], g[i]);
        free(g);
    }
}
END_TEST

/* The fused linear keeps NaN like the CPU, ReLU included: cuBLASLt's ReLU epilogue would
 * turn it into 0 (a known pitfall), so a NaN row must come out NaN on both devices. */
START_TEST(linear_nan_like_cpu) {
    cgt_rand r = cgt_rand_make("linear nan");
    int64_t xs[2] = {5, 64}, ws[2] = {16, 64}, bs = 16;
    double *x = randn_arr(&r, 5 * 64, 0, 1), *w = randn_arr(&r, 16 * 64, 0, 0.2), *b = randn_arr(&r, 16, 0, 0.2);
    x[3] = NAN;           /* row 0 */
    x[64 + 5] = INFINITY; /* row 1 */
    for (int act = 0; act < 3; act++)
        for (int with_b = 0; with_b < 2; with_b++) {
            double *res[2];
            for (int dv = 0; dv < 2; dv++) {
                cg_device dev = dv ? GPU : CG_CPU;
                cg_tensor *tx = cgt_tensor(x, xs, 2, CG_F32, dev), *tw = cgt_tensor(w, ws, 2, CG_F32, dev);
                cg_tensor *tb = with_b ? cgt_tensor(b, &bs, 1, CG_F32, dev) : NULL, *o = NULL;
                CGT_OK(cg_linear(tx, tw, tb, (cg_linear_act)act, &o));
                res[dv] = cgt_read(o);
                cg_tensor_release(tx);
                cg_tensor_release(tw);
                cg_tensor_release(tb);
                cg_tensor_release(o);
            }
            for (int64_t i = 0; i < 5 * 16; i++)
                ck_assert_msg(same_class(res[1][i], res[0][i], gpu_tol(CG_F32, 10)),
                              "linear act %d bias %d element %lld: cpu %.9g cuda %.9g", act, with_b, (long long)i,
                              res[0][i], res[1][i]);
            ck_assert(isnan(res[1][0])); /* the NaN row stays NaN */
            free(res[0]);
            free(res[1]);
        }
    free(x);
    free(w);
    free(b);
}
END_TEST

void gpu_add_special_values(TCase *ops, TCase *large) {
    (void)large;
    tcase_add_test(ops, nan_inf_propagate_like_cpu);
    tcase_add_test(ops, gelu_tanh_gradient_saturates_like_cpu);
    tcase_add_test(ops, linear_nan_like_cpu);
}
