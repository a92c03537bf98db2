/* GPU suite: the op-case table of tests/support on both backends, row ops (softmax,
 * log-softmax, LayerNorm, softmax-CE) at odd widths, reductions on every path and their
 * determinism, broadcasting, BatchNorm shapes, extreme values in div / MSE / BatchNorm, and
 * the cuDNN twins. */
#include "gpu_suite.h"

/* ---------------------------------------------------------------- the op-case table */

/* loop index: case i / 2 in f32 (even) or f64 (odd) */
START_TEST(case_vs_cpu) {
    const cgt_case *c = &cgt_cases[_i / 2];
    cg_dtype dt = _i % 2 ? CG_F64 : CG_F32;
    char tag[256];
    snprintf(tag, sizeof tag, "gpu %s %s %s", c->op, c->name, cg_dtype_name(dt));
    cgt_rand r = cgt_rand_make(tag);
    cgt_inst I;
    cgt_inst_make(c, &r, dt, &I);
    cg_tensor *in[CGT_MAX_IN], *out[2] = {NULL, NULL};
    double *vals[2] = {NULL, NULL}, *grads[2][CGT_MAX_IN] = {{0}};
    int64_t nout = 0, ngr[CGT_MAX_IN] = {0};
    double *gseed = NULL;
    for (int k = 0; k < 2; k++) { /* k = 0 cpu, 1 cuda */
        cg_device dev = k ? GPU : CG_CPU;
        if (k) {
            int64_t counts[1 + CGT_MAX_IN] = {nout};
            for (int i = 0; i < I.n_in; i++) counts[1 + i] = I.in[i].present ? cgt_arg_numel(&I.in[i]) : 0;
            poison_cache(counts, 1 + I.n_in, dt);
        }
        CGT_OK(cgt_inst_run(&I, dt, dev, 1, in, &out[k]));
        if (!k) {
            nout = cg_tensor_numel(out[0]);
            gseed = malloc((size_t)(nout ? nout : 1) * sizeof(double));
            for (int64_t j = 0; j < nout; j++) gseed[j] = cgt_round_to(cgt_normal(&r), dt);
        }
        ck_assert_int_eq(cg_tensor_numel(out[k]), nout);
        vals[k] = cgt_read(out[k]);
        if (cg_tensor_requires_grad(out[k]) && cg_tensor_has_grad_fn(out[k])) {
            cg_tensor *gt = cgt_tensor(gseed, cg_tensor_shape(out[k]), cg_tensor_ndim(out[k]), dt, dev);
            CGT_OK(cg_backward_ex(out[k], gt, 0));
            cg_tensor_release(gt);
            for (int i = 0; i < I.n_in; i++)
                if (in[i] && I.in[i].diff && cg_tensor_grad(in[i])) {
                    grads[k][i] = cgt_read(cg_tensor_grad(in[i]));
                    ngr[i] = cg_tensor_numel(in[i]);
                }
        }
        cgt_tensors_release(in, CGT_MAX_IN);
        cg_tensor_release(out[k]);
    }
    cgt_tol tol = gpu_tol(dt, c->tol_mul);
    char what[512];
    snprintf(what, sizeof what, "%s / %s (%s) forward", c->op, c->name, cg_dtype_name(dt));
    CGT_ASSERT_CLOSE_ARR(vals[1], vals[0], nout, tol, what);
    for (int i = 0; i < CGT_MAX_IN; i++) {
        ck_assert_msg((grads[0][i] == NULL) == (grads[1][i] == NULL), "%s / %s: gradient %d on one device only", c->op,
                      c->name, i);
        if (!grads[0][i]) continue;
        snprintf(what, sizeof what, "%s / %s (%s) gradient of input %d", c->op, c->name, cg_dtype_name(dt), i);
        CGT_ASSERT_CLOSE_ARR(grads[1][i], grads[0][i], ngr[i], tol, what);
        free(grads[0][i]);
        free(grads[1][i]);
    }
    free(vals[0]);
    free(vals[1]);
    free(gseed);
    cgt_inst_free(&I);
}
END_TEST

/* ---------------------------------------------------------------- row ops at odd widths */

static cg_status ap_softmax(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    return *(const int *)arg ? cg_log_softmax(in[0], out) : cg_softmax(in[0], out);
}
static cg_status ap_layernorm(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    (void)arg;
    return cg_layernorm(in[0], in[1], in[2], 1e-5, out);
}
static cg_status ap_ce(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    const int *a = arg; /* reduction, label smoothing x 10 */
    return cg_softmax_cross_entropy(in[0], in[1], (cg_reduction)a[0], a[1] / 10.0, out);
}

/* 1028, 4096, 8192: the f32 register-row kernels (d % 4 == 0, up to 8192); the others the
 * warp and block kernels */
static const int64_t ODD_D[] = {1, 3, 127, 1025, 1028, 4096, 4099, 8192, 13000};
static const int64_t ODD_R[] = {1, 3, 130};

START_TEST(rows_odd_widths) {
    cg_dtype dt = _i % 2 ? CG_F64 : CG_F32;
    cgt_rand r = cgt_rand_make("rows odd");
    for (size_t a = 0; a < sizeof ODD_D / sizeof ODD_D[0]; a++)
        for (size_t b = 0; b < sizeof ODD_R / sizeof ODD_R[0]; b++) {
            int64_t d = ODD_D[a], rows = ODD_R[b], n = rows * d;
            double *x = randn_arr(&r, n, 0.3, 2.0), *g = randn_arr(&r, d, 1.0, 0.5), *be = randn_arr(&r, d, 0, 0.5);
            double *lab = malloc((size_t)rows * sizeof *lab);
            for (int64_t k = 0; k < rows; k++) lab[k] = (double)cgt_randint(&r, 0, d);
            char what[128];
            spec s = {.n_in = 1, .v = {x}, .ndim = {2}, .shape = {{rows, d}}, .kind = {CG_F32}, .diff = {1}};
            for (int logsm = 0; logsm < 2; logsm++) {
                snprintf(what, sizeof what, "%s rows %lld x %lld", logsm ? "log_softmax" : "softmax", (long long)rows,
                         (long long)d);
                compare_spec(what, &s, ap_softmax, &logsm, dt, 1);
            }
            spec ln = {.n_in = 3, .v = {x, g, be}, .ndim = {2, 1, 1}, .shape = {{rows, d}, {d}, {d}},
                       .kind = {CG_F32, CG_F32, CG_F32}, .diff = {1, 1, 1}};
            snprintf(what, sizeof what, "layernorm rows %lld x %lld", (long long)rows, (long long)d);
            compare_spec(what, &ln, ap_layernorm, NULL, dt, 10);
            spec ce = {.n_in = 2, .v = {x, lab}, .ndim = {2, 1}, .shape = {{rows, d}, {rows}},
                       .kind = {CG_F32, CG_I64}, .diff = {1, 0}};
            for (int red = 0; red < 3; red++) {
                int arg[2] = {red, red == 1 ? 1 : 0};
                snprintf(what, sizeof what, "softmax_ce rows %lld x %lld red %d", (long long)rows, (long long)d, red);
                compare_spec(what, &ce, ap_ce, arg, dt, 10);
            }
            free(x);
            free(g);
            free(be);
            free(lab);
        }
}
END_TEST

/* cg_backward on a softmax-CE loss hands the forward's gradient on (bw_softmax_ce): on the
 * GPU it must equal the scaling kernel's result (cg_backward_ex with ones) bit for bit, and
 * the CPU's within tolerance; rows that fit a warp and rows that take a block. */
START_TEST(ce_seeded_backward_matches_kernel) {
    cgt_rand r = cgt_rand_make("ce seeded");
    static const int64_t shapes[][2] = {{3, 1025}, {130, 4099}, {257, 10}, {64, 4096}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t N = shapes[si][0], C = shapes[si][1], xs[2] = {N, C};
        double *x = randn_arr(&r, N * C, 0.3, 2.0), *lab = malloc((size_t)N * sizeof *lab);
        for (int64_t k = 0; k < N; k++) lab[k] = (double)cgt_randint(&r, 0, C);
        x[1] = -INFINITY; /* a masked class: probability 0, a finite gradient */
        double *g[3];
        for (int run = 0; run < 3; run++) { /* 0: CPU seeded, 1: GPU seeded, 2: GPU kernel */
            cg_device dev = run ? GPU : CG_CPU;
            cg_tensor *xt = cgt_tensor(x, xs, 2, CG_F32, dev), *lt = cgt_tensor(lab, &N, 1, CG_I64, dev), *l = NULL;
            CGT_OK(cg_tensor_set_requires_grad(xt, 1));
            if (run) {
                int64_t counts[2] = {N * C, N * C};
                poison_cache(counts, 2, CG_F32);
            }
            CGT_OK(cg_softmax_cross_entropy(xt, lt, CG_REDUCE_MEAN, 0.1, &l));
            if (run == 2) {
                cg_tensor *one = NULL;
                CGT_OK(cg_tensor_ones(NULL, 0, CG_F32, dev, &one));
                CGT_OK(cg_backward_ex(l, one, 0));
                cg_tensor_release(one);
            } else {
                CGT_OK(cg_backward(l));
            }
            g[run] = cgt_read(cg_tensor_grad(xt));
            cg_tensor_release(l), cg_tensor_release(lt), cg_tensor_release(xt);
        }
        char what[96];
        snprintf(what, sizeof what, "softmax_ce seeded backward %lld x %lld", (long long)N, (long long)C);
        CGT_ASSERT_CLOSE_ARR(g[1], g[0], N * C, gpu_tol(CG_F32, 10), what);
        ck_assert_msg(!memcmp(g[1], g[2], (size_t)(N * C) * sizeof(double)), "%s: differs from the kernel path", what);
        for (int k = 0; k < 3; k++) free(g[k]);
        free(x), free(lab);
    }
}
END_TEST

/* More rows than the LayerNorm backward's 512 blocks: each block walks several rows and
 * accumulates dgamma/dbeta over them (register rows at 1028 and 4096, block rows at 1027). */
START_TEST(layernorm_many_rows) {
    cgt_rand r = cgt_rand_make("layernorm rows");
    static const int64_t S[][2] = {{1030, 1028}, {600, 4096}, {1100, 1027}};
    for (size_t k = 0; k < sizeof S / sizeof S[0]; k++) {
        int64_t rows = S[k][0], d = S[k][1];
        double *x = randn_arr(&r, rows * d, 0.3, 2.0), *g = randn_arr(&r, d, 1.0, 0.5), *be = randn_arr(&r, d, 0, 0.5);
        /* with gamma and beta, without both (no parameter gradients), gamma only, and
         * parameter gradients without dx */
        static const int variants[][5] = {{1, 1, 1, 1, 1}, {0, 0, 1, 0, 0}, {1, 0, 1, 1, 0}, {1, 1, 0, 1, 1}};
        for (int v = 0; v < 4; v++) {
            const int *u = variants[v];
            spec ln = {.n_in = 3, .v = {x, u[0] ? g : NULL, u[1] ? be : NULL}, .ndim = {2, 1, 1},
                       .shape = {{rows, d}, {d}, {d}}, .kind = {CG_F32, CG_F32, CG_F32}, .diff = {u[2], u[3], u[4]}};
            char what[96];
            snprintf(what, sizeof what, "layernorm %lld x %lld variant %d", (long long)rows, (long long)d, v);
            compare_spec(what, &ln, ap_layernorm, NULL, CG_F32, 10);
        }
        free(x), free(g), free(be);
    }
}
END_TEST

/* ---------------------------------------------------------------- reductions */

static cg_status ap_reduce(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    const int *a = arg; /* mean?, axis, keepdim */
    return a[0] ? cg_mean(in[0], a[1], a[2], out) : cg_sum(in[0], a[1], a[2], out);
}

START_TEST(reductions_all_paths) {
    cg_dtype dt = _i % 2 ? CG_F64 : CG_F32;
    cgt_rand r = cgt_rand_make("reduce paths");
    /* warp rows, block rows, split rows, columns, split columns */
    static const int64_t shapes[][3] = {{1, 1, 1}, {3, 127, 1}, {1025, 3, 1}, {127, 1025, 3}, {2, 300001, 1},
                                        {3000, 5, 1}, {70000, 3, 1}, {5, 4099, 1}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int nd = shapes[k][2] > 1 ? 3 : 2;
        int64_t n = shapes[k][0] * shapes[k][1] * shapes[k][2];
        double *x = randn_arr(&r, n, 0.1, 1.0);
        spec s = {.n_in = 1, .v = {x}, .ndim = {nd}, .shape = {{shapes[k][0], shapes[k][1], shapes[k][2]}},
                  .kind = {CG_F32}, .diff = {1}};
        for (int mean = 0; mean < 2; mean++)
            for (int axis = -1; axis < nd; axis++) {
                int arg[3] = {mean, axis < 0 ? CG_ALL_AXES : axis, axis == 1};
                char what[128];
                snprintf(what, sizeof what, "%s axis %d of shape %lld", mean ? "mean" : "sum", axis, (long long)k);
                /* long f32 sums: float accumulation vs the CPU's double */
                compare_spec(what, &s, ap_reduce, arg, dt, dt == CG_F32 ? 20 : 100);
            }
        free(x);
    }
}
END_TEST

START_TEST(reductions_are_deterministic) {
    cgt_rand r = cgt_rand_make("reduce determinism");
    int64_t shape[2] = {3, 1 << 20};
    cg_tensor *x = cgt_randn(&r, shape, 2, CG_F32, GPU), *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    CGT_OK(cg_sum(x, CG_ALL_AXES, 0, &a));
    CGT_OK(cg_sum(x, CG_ALL_AXES, 0, &b));
    CGT_OK(cg_sum(x, 0, 0, &c));
    CGT_OK(cg_sum(x, 0, 0, &d));
    float va, vb;
    CGT_OK(cg_tensor_to_host(a, &va, sizeof va));
    CGT_OK(cg_tensor_to_host(b, &vb, sizeof vb));
    ck_assert_msg(memcmp(&va, &vb, sizeof va) == 0, "sum of all: %.9g then %.9g", va, vb);
    size_t nb = cg_tensor_nbytes(c);
    void *hc = malloc(nb), *hd = malloc(nb);
    CGT_OK(cg_tensor_to_host(c, hc, nb));
    CGT_OK(cg_tensor_to_host(d, hd, nb));
    ck_assert_msg(memcmp(hc, hd, nb) == 0, "column sums differ between two runs");
    double s1, s2;
    CGT_OK(cg_sumsq(x, &s1));
    CGT_OK(cg_sumsq(x, &s2));
    ck_assert_msg(s1 == s2, "sumsq %.17g then %.17g", s1, s2);
    free(hc);
    free(hd);
    cg_tensor *all[] = {x, a, b, c, d};
    for (int i = 0; i < 5; i++) cg_tensor_release(all[i]);
}
END_TEST

/* ---------------------------------------------------------------- broadcasting */

static cg_status ap_binary(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    switch (*(const int *)arg) {
    case 0: return cg_add(in[0], in[1], out);
    case 1: return cg_sub(in[0], in[1], out);
    case 2: return cg_mul(in[0], in[1], out);
    default: return cg_div(in[0], in[1], out);
    }
}

START_TEST(broadcast_shapes) {
    cg_dtype dt = _i % 2 ? CG_F64 : CG_F32;
    cgt_rand r = cgt_rand_make("broadcast");
    static const struct {
        int na, nb;
        int64_t a[4], b[4];
    } P[] = {{2, 1, {127, 1025}, {1025}},    {3, 3, {3, 1, 5}, {1, 4, 1}},    {1, 2, {1}, {3, 127}},
             {4, 3, {2, 3, 4, 5}, {3, 1, 5}}, {2, 2, {1025, 1}, {1, 3}},       {2, 2, {4096, 1024}, {4096, 1024}},
             {2, 2, {3, 127}, {3, 127}},      {2, 2, {0, 3}, {1, 3}}};
    for (size_t k = 0; k < sizeof P / sizeof P[0]; k++) {
        int64_t na = 1, nb = 1;
        for (int i = 0; i < P[k].na; i++) na *= P[k].a[i];
        for (int i = 0; i < P[k].nb; i++) nb *= P[k].b[i];
        double *a = randn_arr(&r, na, 0, 1), *b = randn_arr(&r, nb, 0, 1);
        for (int64_t i = 0; i < nb; i++) b[i] = (b[i] < 0 ? -0.5 : 0.5) + b[i]; /* away from 0 for div */
        spec s = {.n_in = 2, .v = {a, b}, .ndim = {P[k].na, P[k].nb}, .kind = {CG_F32, CG_F32}, .diff = {1, 1}};
        memcpy(s.shape[0], P[k].a, sizeof P[k].a);
        memcpy(s.shape[1], P[k].b, sizeof P[k].b);
        for (int op = 0; op < 4; op++) {
            char what[96];
            snprintf(what, sizeof what, "binary op %d, shape pair %zu", op, k);
            compare_spec(what, &s, ap_binary, &op, dt, 10);
        }
        free(a);
        free(b);
    }
}
END_TEST

/* ---------------------------------------------------------------- batchnorm */

/* f32 div backward where b*b leaves the float range (tiny and huge b) but the gradient
 * -g a / b^2 does not: finite like the CPU's double arithmetic, and close to it. */
START_TEST(div_backward_extreme_b) {
    double a[4] = {1e-30, 1e-20, 3.0, -2e15}, b[4] = {1e-23, -3e-22, 3e19, 2e20};
    int op = 3;
    spec s = {.n_in = 2, .v = {a, b}, .ndim = {1, 1}, .shape = {{4}, {4}}, .kind = {CG_F32, CG_F32}, .diff = {1, 1}};
    compare_spec("div extreme b", &s, ap_binary, &op, CG_F32, 10);
}
END_TEST

static cg_status ap_mse_mean(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    (void)arg;
    return cg_mse_loss(in[0], in[1], CG_REDUCE_MEAN, out);
}

/* f32 MSE mean where a term or a - b leaves the float range but what the CPU's double
 * arithmetic returns does not: one term 4e38 (a mean of ~2.5e37), then a - b = 3.6e38 (the
 * loss is inf on both, the gradient 2 (a - b) g / 16 finite for any |g| < 7). Random
 * values around them, 16 terms. */
START_TEST(mse_extreme_values_like_cpu) {
    cgt_rand r = cgt_rand_make("mse extreme");
    for (int k = 0; k < 2; k++) {
        double *a = randn_arr(&r, 16, 0, 1), *b = randn_arr(&r, 16, 0, 1);
        int at = (int)cgt_uniform(&r, 0, 16) % 16;
        if (k == 0) a[at] = 2e19;
        else {
            a[at] = 1.8e38;
            b[at] = -1.8e38;
        }
        spec s = {.n_in = 2, .v = {a, b}, .ndim = {1, 1}, .shape = {{16}, {16}}, .kind = {CG_F32, CG_F32},
                  .diff = {1, 1}};
        compare_spec(k ? "mse mean, a - b out of range" : "mse mean, a term out of range", &s, ap_mse_mean, NULL,
                     CG_F32, 10);
        free(a);
        free(b);
    }
}
END_TEST

/* f32 BCE with logits, elementwise, where max(x, 0) - x t cancels: |x| in [5, 60] with t
 * within 1e-3 of the label its sign predicts. Each term must come out within 8 ulp of the
 * float64 value of the same f32 inputs (the CPU rounds it once; the GPU's float
 * log1pf(expf()) may add a few ulp); float arithmetic for x - x t was 475 ulp off on the
 * emulator. 4099 terms, fresh values. */
START_TEST(bce_none_f32_within_8_ulp) {
    cgt_rand r = cgt_rand_make("bce none ulp");
    int64_t n = 4099;
    double *x = malloc((size_t)n * sizeof *x), *t = malloc((size_t)n * sizeof *t);
    for (int64_t i = 0; i < n; i++) {
        double sgn = cgt_uniform(&r, 0, 1) < 0.5 ? -1 : 1;
        x[i] = (double)(float)(sgn * cgt_uniform(&r, 5, 60));
        t[i] = (double)(float)(sgn > 0 ? 1 - cgt_uniform(&r, 0, 1e-3) : cgt_uniform(&r, 0, 1e-3));
    }
    cg_tensor *xt = cgt_tensor(x, &n, 1, CG_F32, GPU), *tt = cgt_tensor(t, &n, 1, CG_F32, GPU), *y = NULL;
    CGT_OK(cg_bce_with_logits(xt, tt, CG_REDUCE_NONE, &y));
    double *got = cgt_read(y);
    for (int64_t i = 0; i < n; i++) {
        double ref = (x[i] > 0 ? x[i] : 0.0) - x[i] * t[i] + log1p(exp(-fabs(x[i])));
        float rf = (float)ref, ulp = nextafterf(fabsf(rf), INFINITY) - fabsf(rf);
        ck_assert_msg(fabs(got[i] - (double)rf) <= 8.0 * ulp, "term %lld: x %.9g t %.9g: %.9g, want %.9g (%.1f ulp)",
                      (long long)i, x[i], t[i], got[i], (double)rf, fabs(got[i] - (double)rf) / ulp);
    }
    cg_tensor_release(xt), cg_tensor_release(tt), cg_tensor_release(y);
    free(x), free(t), free(got);
}
END_TEST

static cg_status ap_bn(cg_tensor *const *in, cg_tensor **out, const void *arg) {
    const int *a = arg; /* training */
    return cg_batchnorm(in[0], in[1], in[2], in[3], in[4], a[0], 0.1, 1e-5, out);
}

static void bn_shapes(cg_dtype dt, double tol_mul) {
    cgt_rand r = cgt_rand_make("batchnorm");
    /* C % 4 == 0 (16, 64, 4096) takes the float4 kernels; C / 4 < 32 packs several rows
     * into a warp, as C < 32 does for the others */
    static const int64_t S[][2] = {{2, 1},    {3, 127},  {1025, 3}, {4096, 33}, {600, 1025},
                                   {300, 16}, {513, 64}, {64, 4096}, {4099, 8}};
    for (size_t k = 0; k < sizeof S / sizeof S[0]; k++) {
        int64_t N = S[k][0], C = S[k][1];
        double *x = randn_arr(&r, N * C, 0.5, 2.0), *g = randn_arr(&r, C, 1, 0.5), *b = randn_arr(&r, C, 0, 0.5);
        double *rm = randn_arr(&r, C, 0, 0.3), *rv = randn_arr(&r, C, 0, 0.3);
        for (int64_t i = 0; i < C; i++) rv[i] = 0.5 + fabs(rv[i]);
        for (int training = 0; training < 2; training++) {
            spec s = {.n_in = 5, .v = {x, g, b, rm, rv}, .ndim = {2, 1, 1, 1, 1},
                      .shape = {{N, C}, {C}, {C}, {C}, {C}}, .kind = {CG_F32, CG_F32, CG_F32, CG_F32, CG_F32},
                      .diff = {1, 1, 1, 0, 0}};
            char what[96];
            snprintf(what, sizeof what, "batchnorm %lld x %lld training %d", (long long)N, (long long)C, training);
            compare_spec(what, &s, ap_bn, &training, dt, tol_mul);
        }
        /* running statistics after one training step */
        cg_tensor *t[2][5] = {{0}}, *out = NULL;
        double *after[2][2];
        for (int dv = 0; dv < 2; dv++) {
            cg_device dev = dv ? GPU : CG_CPU;
            const double *v[5] = {x, g, b, rm, rv};
            int64_t sh[5][2] = {{N, C}, {C}, {C}, {C}, {C}};
            for (int i = 0; i < 5; i++) t[dv][i] = cgt_tensor(v[i], sh[i], i ? 1 : 2, dt, dev);
            CGT_OK(cg_batchnorm(t[dv][0], t[dv][1], t[dv][2], t[dv][3], t[dv][4], 1, 0.1, 1e-5, &out));
            cg_tensor_release(out);
            after[dv][0] = cgt_read(t[dv][3]);
            after[dv][1] = cgt_read(t[dv][4]);
            for (int i = 0; i < 5; i++) cg_tensor_release(t[dv][i]);
        }
        CGT_ASSERT_CLOSE_ARR(after[1][0], after[0][0], C, gpu_tol(dt, tol_mul), "batchnorm running_mean");
        CGT_ASSERT_CLOSE_ARR(after[1][1], after[0][1], C, gpu_tol(dt, tol_mul), "batchnorm running_var");
        for (int dv = 0; dv < 2; dv++) {
            free(after[dv][0]);
            free(after[dv][1]);
        }
        free(x);
        free(g);
        free(b);
        free(rm);
        free(rv);
    }
}

START_TEST(batchnorm_shapes) { bn_shapes(_i % 2 ? CG_F64 : CG_F32, 10); }
END_TEST

/* f32 BatchNorm with a value far out (1e20: its squared deviation overflows float, where the
 * CPU's double statistics do not) in one channel, one chunk (N 64) and several (N 600), the
 * scalar and the float4 kernels (C 5, 64): forward, backward and the running statistics
 * match the CPU and are finite. */
START_TEST(batchnorm_huge_values_like_cpu) {
    cgt_rand r = cgt_rand_make("batchnorm huge");
    static const int64_t S[][2] = {{64, 5}, {600, 64}};
    for (size_t k = 0; k < 2; k++) {
        int64_t N = S[k][0], C = S[k][1];
        double *x = randn_arr(&r, N * C, 0.5, 2.0), *g = randn_arr(&r, C, 1, 0.5), *b = randn_arr(&r, C, 0, 0.5);
        double *rm = randn_arr(&r, C, 0, 0.3), *rv = randn_arr(&r, C, 1, 0.1);
        x[3 * C + 2] = 1e20;
        x[(N - 1) * C + C - 1] = -3e19;
        int training = 1;
        spec s = {.n_in = 5, .v = {x, g, b, rm, rv}, .ndim = {2, 1, 1, 1, 1},
                  .shape = {{N, C}, {C}, {C}, {C}, {C}}, .kind = {CG_F32, CG_F32, CG_F32, CG_F32, CG_F32},
                  .diff = {1, 1, 1, 0, 0}};
        compare_spec("batchnorm huge values", &s, ap_bn, &training, CG_F32, 10);
        double *after[2][2];
        for (int dv = 0; dv < 2; dv++) {
            cg_tensor *t[5], *out = NULL;
            const double *v[5] = {x, g, b, rm, rv};
            int64_t sh[5][2] = {{N, C}, {C}, {C}, {C}, {C}};
            for (int i = 0; i < 5; i++) t[i] = cgt_tensor(v[i], sh[i], i ? 1 : 2, CG_F32, dv ? GPU : CG_CPU);
            CGT_OK(cg_batchnorm(t[0], t[1], t[2], t[3], t[4], 1, 0.1, 1e-5, &out));
            cg_tensor_release(out);
            after[dv][0] = cgt_read(t[3]);
            after[dv][1] = cgt_read(t[4]);
            for (int i = 0; i < 5; i++) cg_tensor_release(t[i]);
        }
        ck_assert(cgt_all_finite(after[1][0], C) && cgt_all_finite(after[1][1], C));
        CGT_ASSERT_CLOSE_ARR(after[1][0], after[0][0], C, gpu_tol(CG_F32, 10), "huge values: running_mean");
        CGT_ASSERT_CLOSE_ARR(after[1][1], after[0][1], C, gpu_tol(CG_F32, 10), "huge values: running_var");
        for (int dv = 0; dv < 2; dv++) free(after[dv][0]), free(after[dv][1]);
        free(x), free(g), free(b), free(rm), free(rv);
    }
}
END_TEST

/* ---------------------------------------------------------------- cuDNN twins */

START_TEST(cudnn_twins_match_cpu) {
#ifndef CG_GPU_SUITE_ON_CPU
    /* without a cuDNN handle every twin would hand back to the own kernels and this would
     * test them again */
    cg_cuda_device_info info;
    CGT_OK(cg_cuda_device_info_get(0, &info));
    ck_assert_msg(info.cudnn_version > 0, "cuDNN did not initialise on cuda:0: the twins cannot be tested");
#endif
    CGT_OK(cg_cuda_set_impl(CG_IMPL_CUDNN));
    cgt_rand r = cgt_rand_make("cudnn");
    int64_t rows = 130, d = 1025;
    double *x = randn_arr(&r, rows * d, 0.3, 2.0);
    spec s = {.n_in = 1, .v = {x}, .ndim = {2}, .shape = {{rows, d}}, .kind = {CG_F32}, .diff = {1}};
    for (int logsm = 0; logsm < 2; logsm++) compare_spec("cudnn softmax", &s, ap_softmax, &logsm, CG_F32, 10);
    free(x);
    bn_shapes(CG_F32, 50);
    CGT_OK(cg_cuda_set_impl(CG_IMPL_OWN));
    ck_assert_int_eq(cg_cuda_get_impl(), CG_IMPL_OWN);
}
END_TEST

void gpu_add_ops(TCase *ops, TCase *large) {
    tcase_add_loop_test(ops, case_vs_cpu, 0, 2 * cgt_n_cases);
    tcase_add_loop_test(large, rows_odd_widths, 0, 2);
    tcase_add_test(ops, ce_seeded_backward_matches_kernel);
    tcase_add_test(large, layernorm_many_rows);
    tcase_add_loop_test(large, reductions_all_paths, 0, 2);
    tcase_add_test(ops, reductions_are_deterministic);
    tcase_add_loop_test(ops, broadcast_shapes, 0, 2);
    tcase_add_test(ops, div_backward_extreme_b);
    tcase_add_test(ops, mse_extreme_values_like_cpu);
    tcase_add_test(ops, bce_none_f32_within_8_ulp);
    tcase_add_loop_test(large, batchnorm_shapes, 0, 2);
    tcase_add_test(ops, batchnorm_huge_values_like_cpu);
#if !defined(CG_GPU_SUITE_ON_CPU) || defined(CG_HAVE_CUDA) /* cg_cuda_set_* need the CUDA build */
    tcase_add_test(ops, cudnn_twins_match_cpu);
#endif
}
