/* Layers and models: parameter counts and PyTorch state-dict names, initialisation
 * statistics and seeding, forward against hand computation, train/eval behaviour of dropout
 * and BatchNorm, thread-safe predict, losses and accuracy, save/load, gradient norms. */
#define _POSIX_C_SOURCE 200809L /* unlink */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgrad/train.h"
#include "cgt.h"

static cg_model *mlp_342(cg_dtype dt, uint64_t seed) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, dt, seed, &m));
    CGT_OK(cg_model_add_linear(m, 3, 4, 1, CG_INIT_AUTO));
    CGT_OK(cg_model_add_activation(m, CG_ACT_RELU, 0));
    CGT_OK(cg_model_add_linear(m, 0, 2, 1, CG_INIT_AUTO));
    return m;
}

START_TEST(chapter_342_network_has_26_parameters_named_like_pytorch) {
    cg_model *m = mlp_342(CG_F32, 1);
    ck_assert_int_eq(cg_model_param_count(m), 26);
    cg_tensor *p[4];
    const char *names[4];
    int n = 0;
    CGT_OK(cg_model_parameters(m, p, names, 4, &n));
    ck_assert_int_eq(n, 4);
    const char *want[4] = {"0.weight", "0.bias", "2.weight", "2.bias"};
    int64_t shapes[4][2] = {{4, 3}, {4, 0}, {2, 4}, {2, 0}};
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(names[i], want[i]);
        ck_assert_int_eq(cg_tensor_dim(p[i], 0), shapes[i][0]);
        if (shapes[i][1]) ck_assert_int_eq(cg_tensor_dim(p[i], 1), shapes[i][1]);
        else ck_assert_int_eq(cg_tensor_ndim(p[i]), 1);
        ck_assert(cg_tensor_requires_grad(p[i]));
        ck_assert_ptr_nonnull(cg_tensor_grad(p[i]));
    }
    ck_assert_int_eq(cg_model_out_features(m), 2);
    ck_assert_int_eq(cg_model_in_features(m), 3);
    /* layers are fixed once built */
    CGT_FAILS(cg_model_add_dropout(m, 0.1), CG_E_STATE, "built");
    cg_model_free(m);
}
END_TEST

START_TEST(batchnorm_buffers_in_state_dict) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 3, &m));
    CGT_OK(cg_model_add_linear(m, 5, 8, 1, CG_INIT_AUTO));
    CGT_OK(cg_model_add_activation(m, CG_ACT_RELU, 0));
    CGT_OK(cg_model_add_batchnorm1d(m, 8, 0, 0));
    CGT_OK(cg_model_add_dropout(m, 0.5));
    CGT_OK(cg_model_add_layernorm(m, 8, 0));
    CGT_OK(cg_model_add_linear(m, 8, 3, 0, CG_INIT_AUTO));
    ck_assert_int_eq(cg_model_param_count(m), 5 * 8 + 8 + 16 + 16 + 24);
    cg_state_dict *sd;
    CGT_OK(cg_model_state_dict(m, &sd));
    const char *want[] = {"0.weight", "0.bias", "2.weight", "2.bias", "2.running_mean", "2.running_var",
                          "2.num_batches_tracked", "4.weight", "4.bias", "5.weight"};
    ck_assert_int_eq(cg_state_dict_count(sd), 10);
    for (int i = 0; i < 10; i++) ck_assert_str_eq(cg_state_dict_name_at(sd, (size_t)i), want[i]);
    cg_tensor *nbt = cg_state_dict_get(sd, "2.num_batches_tracked");
    ck_assert_int_eq(cg_tensor_dtype(nbt), CG_I64);
    ck_assert_int_eq(cg_tensor_ndim(nbt), 0);
    double *rv = cgt_read(cg_state_dict_get(sd, "2.running_var"));
    double *g = cgt_read(cg_state_dict_get(sd, "2.weight"));
    for (int i = 0; i < 8; i++) ck_assert(rv[i] == 1.0 && g[i] == 1.0);
    free(rv), free(g);
    cg_state_dict_free(sd);
    /* one training forward: num_batches_tracked = 1, running_mean = 0.1 * batch mean */
    cgt_rand r = cgt_rand_make("bn");
    int64_t xs[2] = {16, 5};
    cg_tensor *x = cgt_randn(&r, xs, 2, CG_F32, CG_CPU), *y = NULL;
    CGT_OK(cg_model_forward(m, x, &y));
    CGT_OK(cg_model_state_dict(m, &sd));
    ck_assert(cgt_item(cg_state_dict_get(sd, "2.num_batches_tracked")) == 1.0);
    double *rm = cgt_read(cg_state_dict_get(sd, "2.running_mean"));
    int nonzero = 0;
    for (int i = 0; i < 8; i++) nonzero += rm[i] != 0.0 && isfinite(rm[i]);
    ck_assert_int_gt(nonzero, 0);
    free(rm);
    cg_state_dict_free(sd);
    cg_tensor_release(x);
    cg_tensor_release(y);
    cg_model_free(m);
}
END_TEST

static void moments(const cg_tensor *t, double *mean, double *sd, double *maxabs) {
    int64_t n = cg_tensor_numel(t);
    double *v = cgt_read(t), s = 0, q = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) s += v[i], q += v[i] * v[i], mx = fmax(mx, fabs(v[i]));
    *mean = s / (double)n;
    *sd = sqrt(q / (double)n - *mean * *mean);
    *maxabs = mx;
    free(v);
}

START_TEST(initialisation_by_activation_and_seed) {
    /* 512 -> 256 ReLU (He normal: sd sqrt(2/512)), 256 -> 128 tanh (Xavier uniform: bound sqrt(6/384)),
     * explicit He uniform and Xavier normal, zero biases */
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 11, &m));
    CGT_OK(cg_model_add_dense(m, 512, 256, CG_ACT_RELU));
    CGT_OK(cg_model_add_dense(m, 256, 128, CG_ACT_TANH));
    CGT_OK(cg_model_add_linear(m, 128, 400, 1, CG_INIT_HE_UNIFORM));
    CGT_OK(cg_model_add_activation(m, CG_ACT_LEAKY_RELU, 0.2));
    CGT_OK(cg_model_add_linear(m, 400, 300, 1, CG_INIT_XAVIER_NORMAL));
    cg_tensor *p[8];
    int n;
    CGT_OK(cg_model_parameters(m, p, NULL, 8, &n));
    ck_assert_int_eq(n, 8);
    double mean, sd, mx;
    moments(p[0], &mean, &sd, &mx);
    ck_assert_msg(fabs(sd / sqrt(2.0 / 512) - 1) < 0.03 && fabs(mean) < 0.003, "he normal sd %g", sd);
    moments(p[2], &mean, &sd, &mx);
    double b = sqrt(6.0 / 384);
    ck_assert_msg(mx <= b && mx > 0.99 * b && fabs(sd / (b / sqrt(3.0)) - 1) < 0.03, "xavier uniform %g %g", mx, sd);
    moments(p[4], &mean, &sd, &mx);
    double hb = sqrt(2.0 / (1 + 0.04)) * sqrt(3.0 / 128); /* leaky relu gain */
    ck_assert_msg(mx <= hb && mx > 0.99 * hb, "he uniform bound %g vs %g", mx, hb);
    moments(p[6], &mean, &sd, &mx);
    ck_assert_msg(fabs(sd / sqrt(2.0 / 700) - 1) < 0.03, "xavier normal sd %g", sd);
    for (int i = 1; i < 8; i += 2) {
        moments(p[i], &mean, &sd, &mx);
        ck_assert(mx == 0.0);
    }
    /* same seed, same weights; another seed, others */
    cg_model *a = mlp_342(CG_F32, 5), *c = mlp_342(CG_F32, 5), *d = mlp_342(CG_F32, 6);
    double *wa = cgt_read(cg_model_flat_params(a)), *wc = cgt_read(cg_model_flat_params(c)),
           *wd = cgt_read(cg_model_flat_params(d));
    int64_t k = cg_tensor_numel(cg_model_flat_params(a));
    ck_assert(memcmp(wa, wc, (size_t)k * sizeof *wa) == 0);
    ck_assert(memcmp(wa, wd, (size_t)k * sizeof *wa) != 0);
    free(wa), free(wc), free(wd);
    cg_model_free(a), cg_model_free(c), cg_model_free(d);
    cg_model_free(m);
}
END_TEST

/* loads fixed weights by name */
static void set_param(cg_model *m, const char *name, const double *v, const int64_t *shape, int nd) {
    cg_state_dict *sd;
    CGT_OK(cg_model_state_dict(m, &sd));
    cg_tensor *t = cgt_tensor(v, shape, nd, cg_model_dtype(m), CG_CPU);
    CGT_OK(cg_state_dict_set(sd, name, t));
    cg_tensor_release(t);
    CGT_OK(cg_model_load_state_dict(m, sd));
    cg_state_dict_free(sd);
}

START_TEST(forward_matches_hand_computation) {
    /* chapter 14.2: W1 = [[.1, .3], [-.2, .4]], b1 = [0, .1], x = [1, 2], ReLU -> [0.7, 0.7];
     * then W2 = [[1, -1], [0.5, 2]], b2 = [0.25, 0]: [0.25, 1.75] */
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F64, 0, &m));
    CGT_OK(cg_model_add_dense(m, 2, 2, CG_ACT_RELU));
    CGT_OK(cg_model_add_dense(m, 2, 2, CG_ACT_NONE));
    int64_t sw[2] = {2, 2}, sb = 2;
    double w1[4] = {.1, .3, -.2, .4}, b1[2] = {0, .1}, w2[4] = {1, -1, .5, 2}, b2[2] = {.25, 0};
    set_param(m, "0.weight", w1, sw, 2);
    set_param(m, "0.bias", b1, &sb, 1);
    set_param(m, "2.weight", w2, sw, 2);
    set_param(m, "2.bias", b2, &sb, 1);
    double xv[2] = {1, 2};
    int64_t sx[2] = {1, 2};
    cg_tensor *x = cgt_tensor(xv, sx, 2, CG_F64, CG_CPU), *y = NULL;
    CGT_OK(cg_model_predict(m, x, &y));
    double *yv = cgt_read(y);
    CGT_ASSERT_CLOSE(yv[0], 0.25, 1e-12);
    CGT_ASSERT_CLOSE(yv[1], 0.5 * 0.7 + 2 * 0.7, 1e-12);
    free(yv);
    cg_tensor_release(y);
    /* wrong width is a shape error naming the layer */
    int64_t s3[2] = {1, 3};
    double z[3] = {0};
    cg_tensor *x3 = cgt_tensor(z, s3, 2, CG_F64, CG_CPU);
    CGT_FAILS(cg_model_predict(m, x3, &y), CG_E_SHAPE, "layer 0", "linear");
    cg_tensor_release(x3);
    cg_tensor_release(x);
    cg_model_free(m);
}
END_TEST

START_TEST(train_and_eval_modes) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 9, &m));
    CGT_OK(cg_model_add_dropout(m, 0.5));
    CGT_OK(cg_model_add_linear(m, 64, 64, 1, CG_INIT_AUTO));
    int64_t s[2] = {32, 64};
    double *ones = malloc(32 * 64 * sizeof *ones);
    for (int i = 0; i < 32 * 64; i++) ones[i] = 1.0;
    cg_tensor *x = cgt_tensor(ones, s, 2, CG_F32, CG_CPU), *y1 = NULL, *y2 = NULL, *y3 = NULL;
    CGT_OK(cg_model_build(m));
    ck_assert(cg_model_is_training(m));
    cg_rng r0 = cg_model_rng(m);
    CGT_OK(cg_model_forward(m, x, &y1));
    CGT_OK(cg_model_forward(m, x, &y2));
    cg_rng r1 = cg_model_rng(m);
    ck_assert(r1.offset > r0.offset); /* a fresh mask every forward */
    double *a = cgt_read(y1), *b = cgt_read(y2);
    ck_assert(memcmp(a, b, 32 * 64 * sizeof *a) != 0);
    cg_model_eval(m);
    CGT_OK(cg_model_forward(m, x, &y3));
    double *c = cgt_read(y3);
    cg_tensor *y4 = NULL;
    CGT_OK(cg_model_predict(m, x, &y4));
    double *d = cgt_read(y4);
    ck_assert(memcmp(c, d, 32 * 64 * sizeof *c) == 0);
    ck_assert(cg_model_rng(m).offset == r1.offset); /* no draws in eval mode */
    /* in eval the rows of an all-ones input are identical */
    for (int i = 1; i < 32; i++) CGT_ASSERT_CLOSE(c[i * 64 + 5], c[5], 1e-5 * (1 + fabs(c[5])));
    free(a), free(b), free(c), free(d), free(ones);
    cg_tensor *l[5] = {x, y1, y2, y3, y4};
    for (int i = 0; i < 5; i++) cg_tensor_release(l[i]);
    cg_model_free(m);
}
END_TEST

typedef struct pred_job {
    const cg_model *m;
    const cg_tensor *x;
    const double *ref;
    int64_t n;
    int bad;
} pred_job;

static void *pred_thread(void *arg) {
    pred_job *j = arg;
    for (int it = 0; it < 40; it++) {
        cg_tensor *y = NULL;
        if (cg_model_predict(j->m, j->x, &y) != CG_OK) {
            j->bad++;
            continue;
        }
        float *v = malloc((size_t)j->n * sizeof *v);
        if (cg_tensor_to_host(y, v, (size_t)j->n * sizeof *v) != CG_OK) j->bad++;
        for (int64_t i = 0; i < j->n; i++)
            if ((double)v[i] != j->ref[i]) {
                j->bad++;
                break;
            }
        free(v);
        cg_tensor_release(y);
    }
    return NULL;
}

START_TEST(predict_is_thread_safe_and_read_only) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 21, &m));
    CGT_OK(cg_model_add_dense(m, 20, 32, CG_ACT_GELU));
    CGT_OK(cg_model_add_batchnorm1d(m, 32, 0, 0));
    CGT_OK(cg_model_add_dropout(m, 0.3));
    CGT_OK(cg_model_add_layernorm(m, 32, 0));
    CGT_OK(cg_model_add_dense(m, 32, 5, CG_ACT_SIGMOID));
    cgt_rand r = cgt_rand_make("threads");
    int64_t s[2] = {24, 20};
    cg_tensor *x = cgt_randn(&r, s, 2, CG_F32, CG_CPU), *y = NULL;
    CGT_OK(cg_model_forward(m, x, &y)); /* training forward: moves the running stats off their init */
    cg_tensor_release(y);
    cg_state_dict *before;
    CGT_OK(cg_model_state_dict(m, &before));
    cg_rng rng = cg_model_rng(m);
    CGT_OK(cg_model_predict(m, x, &y));
    double *ref = cgt_read(y);
    cg_tensor_release(y);
    pthread_t th[4];
    pred_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (pred_job){m, x, ref, 24 * 5, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, pred_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(jobs[i].bad, 0);
    }
    ck_assert(cg_model_is_training(m)); /* predict does not switch the model's mode */
    ck_assert(cg_model_rng(m).offset == rng.offset);
    cg_state_dict *after;
    CGT_OK(cg_model_state_dict(m, &after));
    for (size_t i = 0; i < cg_state_dict_count(before); i++) {
        double *a = cgt_read(cg_state_dict_tensor_at(before, i)), *b = cgt_read(cg_state_dict_tensor_at(after, i));
        ck_assert_msg(memcmp(a, b, (size_t)cg_tensor_numel(cg_state_dict_tensor_at(before, i)) * sizeof *a) == 0,
                      "%s changed", cg_state_dict_name_at(before, i));
        free(a), free(b);
    }
    cg_state_dict_free(before), cg_state_dict_free(after);
    free(ref);
    cg_tensor_release(x);
    cg_model_free(m);
}
END_TEST

START_TEST(losses_and_accuracy) {
    /* MSE: pred [1, 2], target [0, 0] -> mean 2.5, sum 5 */
    double pv[2] = {1, 2}, tv[2] = {0, 0};
    int64_t s2 = 2;
    cg_tensor *p = cgt_tensor(pv, &s2, 1, CG_F64, CG_CPU), *t = cgt_tensor(tv, &s2, 1, CG_F64, CG_CPU), *l = NULL;
    cg_loss_config c = cg_loss_config_default(CG_LOSS_MSE);
    CGT_OK(cg_loss(&c, p, t, &l));
    CGT_ASSERT_CLOSE(cgt_item(l), 2.5, 1e-15);
    cg_tensor_release(l);
    c.reduction = CG_REDUCE_SUM;
    CGT_OK(cg_loss(&c, p, t, &l));
    CGT_ASSERT_CLOSE(cgt_item(l), 5.0, 1e-15);
    cg_tensor_release(l);
    /* BCE with logits: logit 0 vs 1 -> log 2; logit 2 vs 0 -> log(1 + e^2); (N, 1) vs (N) accepted */
    double lg[2] = {0, 2}, bt[2] = {1, 0};
    int64_t sc[2] = {2, 1};
    cg_tensor *lt = cgt_tensor(lg, sc, 2, CG_F64, CG_CPU), *btt = cgt_tensor(bt, &s2, 1, CG_F64, CG_CPU);
    c = cg_loss_config_default(CG_LOSS_BCE_LOGITS);
    CGT_OK(cg_loss(&c, lt, btt, &l));
    CGT_ASSERT_CLOSE(cgt_item(l), (log(2.0) + log(1 + exp(2.0))) / 2, 1e-12);
    cg_tensor_release(l);
    double acc;
    CGT_OK(cg_accuracy(lt, btt, &acc)); /* 0 > 0 is false vs 1: wrong; 2 > 0 vs 0: wrong */
    CGT_ASSERT_CLOSE(acc, 0.0, 0);
    /* cross-entropy: the chapter's logits [2, 1, 0.1], class 0 -> -log 0.659 = 0.417 */
    double z[6] = {2, 1, 0.1, 0, 3, 0};
    int64_t sz[2] = {2, 3};
    double lab[2] = {0, 1};
    cg_tensor *zt = cgt_tensor(z, sz, 2, CG_F64, CG_CPU), *labt = cgt_tensor(lab, &s2, 1, CG_I64, CG_CPU);
    c = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    c.reduction = CG_REDUCE_SUM;
    CGT_OK(cg_loss(&c, zt, labt, &l));
    double ce0 = -log(exp(2) / (exp(2) + exp(1) + exp(0.1))), ce1 = -log(exp(3) / (exp(3) + 2));
    CGT_ASSERT_CLOSE(cgt_item(l), ce0 + ce1, 1e-12);
    CGT_ASSERT_CLOSE(ce0, 0.417, 1e-3);
    cg_tensor_release(l);
    CGT_OK(cg_accuracy(zt, labt, &acc));
    CGT_ASSERT_CLOSE(acc, 1.0, 0);
    /* float labels for cross-entropy are refused with a hint */
    CGT_FAILS(cg_loss(&c, zt, btt, &l), CG_E_DTYPE, "integer");
    cg_tensor *all[6] = {p, t, lt, btt, zt, labt};
    for (int i = 0; i < 6; i++) cg_tensor_release(all[i]);
}
END_TEST

/* Accuracy against a reference written here: the row's first maximum, where a NaN in column
 * 0 wins and later NaNs never compare greater (the sequential `>` scan of Keras/numpy
 * argmax on NaN-free rows); (N) or (N, 1) predictions compare (p > 0) with (t > 0.5).
 * Fresh random rows with planted ties, NaNs, infinities; f32/f64 predictions; i32, i64, u8
 * and f64 targets; a transposed (strided) prediction view. */
static int64_t ref_argmax(const double *row, int64_t c) {
    if (isnan(row[0])) return 0;
    int64_t best = 0;
    for (int64_t j = 1; j < c; j++)
        if (!isnan(row[j]) && row[j] > row[best]) best = j;
    return best;
}

START_TEST(accuracy_rules_ties_nan_dtypes) {
    cgt_rand r = cgt_rand_make("accuracy");
    const int64_t widths[] = {1, 2, 3, 33};
    const cg_dtype tdts[] = {CG_I32, CG_I64, CG_U8, CG_F64};
    for (int w = 0; w < 4; w++)
        for (int k = 0; k < 8; k++) {
            int64_t n = cgt_randint(&r, 1, 200), c = widths[w];
            cg_dtype pdt = k % 2 ? CG_F64 : CG_F32, tdt = tdts[k / 2];
            double *pv = malloc((size_t)(n * c) * sizeof *pv), *tv = malloc((size_t)n * sizeof *tv);
            for (int64_t i = 0; i < n * c; i++) {
                double u = cgt_uniform(&r, 0, 1);
                pv[i] = u < 0.05 ? NAN : u < 0.08 ? -INFINITY : u < 0.1 ? INFINITY : (double)cgt_randint(&r, -3, 4);
            }
            for (int64_t i = 0; i < n; i++) tv[i] = c == 1 ? (double)cgt_randint(&r, 0, 2) : (double)cgt_randint(&r, 0, c);
            int64_t want = 0;
            for (int64_t i = 0; i < n; i++)
                want += c == 1 ? (pv[i] > 0) == (tv[i] > 0.5) : (double)ref_argmax(pv + i * c, c) == tv[i];
            int64_t shape[2] = {n, c}, tshape = n;
            cg_tensor *pt = cgt_tensor(pv, shape, c == 1 && k % 4 < 2 ? 1 : 2, pdt, CG_CPU);
            cg_tensor *tt = cgt_tensor(tv, &tshape, 1, tdt, CG_CPU);
            int64_t got = -1, total = -1;
            CGT_OK(cg_accuracy_count(pt, tt, &got, &total));
            ck_assert_msg(got == want && total == n, "n %lld c %lld: %lld correct, want %lld", (long long)n,
                          (long long)c, (long long)got, (long long)want);
            /* the same predictions through a transposed view of their transpose */
            double *pT = malloc((size_t)(n * c) * sizeof *pT);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < c; j++) pT[j * n + i] = pv[i * c + j];
            int64_t sT[2] = {c, n};
            cg_tensor *ptT = cgt_tensor(pT, sT, 2, pdt, CG_CPU), *view = NULL;
            CGT_OK(cg_transpose(ptT, 0, 1, &view));
            CGT_OK(cg_accuracy_count(view, tt, &got, NULL));
            ck_assert_int_eq(got, want);
            cg_tensor_release(view), cg_tensor_release(ptT), free(pT);
            cg_tensor_release(pt), cg_tensor_release(tt);
            free(pv), free(tv);
        }
    double one[6] = {0};
    int64_t s23[2] = {2, 3}, s3 = 3;
    cg_tensor *p = cgt_tensor(one, s23, 2, CG_F64, CG_CPU), *t = cgt_tensor(one, &s3, 1, CG_I64, CG_CPU);
    int64_t got;
    CGT_FAILS(cg_accuracy_count(p, t, &got, NULL), CG_E_SHAPE, "one target per row");
    cg_tensor_release(p), cg_tensor_release(t);
    int64_t s20[2] = {2, 0}, s2 = 2; /* no classes: refused, not read out of bounds */
    p = cgt_tensor(one, s20, 2, CG_F64, CG_CPU), t = cgt_tensor(one, &s2, 1, CG_I64, CG_CPU);
    CGT_FAILS(cg_accuracy_count(p, t, &got, NULL), CG_E_SHAPE, "no classes");
    cg_tensor_release(p), cg_tensor_release(t);
}
END_TEST

START_TEST(save_load_roundtrip_and_arch) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 4, &m));
    CGT_OK(cg_model_add_flatten(m));
    CGT_OK(cg_model_add_dense(m, 12, 6, CG_ACT_LEAKY_RELU));
    CGT_OK(cg_model_add_batchnorm1d(m, 0, 1e-3, 0.01));
    CGT_OK(cg_model_add_dropout(m, 0.25));
    CGT_OK(cg_model_add_dense(m, 6, 3, CG_ACT_NONE));
    cgt_rand r = cgt_rand_make("save");
    int64_t s[3] = {8, 3, 4};
    cg_tensor *x = cgt_randn(&r, s, 3, CG_F32, CG_CPU), *y = NULL, *y2 = NULL;
    CGT_OK(cg_model_forward(m, x, &y)); /* update running stats */
    cg_tensor_release(y);
    CGT_OK(cg_model_predict(m, x, &y));
    char arch[512];
    CGT_OK(cg_model_arch(m, arch, sizeof arch));
    ck_assert_msg(strstr(arch, "flatten;linear:12:6:1:auto;leaky_relu:0.01") != NULL, "%s", arch);
    char path[32];
    cgt_temp_file(path);
    CGT_OK(cg_model_save(m, path));
    cg_model *b;
    CGT_OK(cg_model_load(path, CG_CPU, &b));
    ck_assert_int_eq(cg_model_param_count(b), cg_model_param_count(m));
    CGT_OK(cg_model_predict(b, x, &y2));
    double *u = cgt_read(y), *v = cgt_read(y2);
    ck_assert(memcmp(u, v, 24 * sizeof *u) == 0);
    free(u), free(v);
    /* a different architecture refuses the file with the tensor's name */
    cg_model *c = mlp_342(CG_F32, 1);
    cg_state_dict *sd;
    CGT_OK(cg_safetensors_load(path, CG_CPU, &sd));
    CGT_FAILS(cg_model_load_state_dict(c, sd), CG_E_FORMAT, "0.weight", path);
    cg_state_dict_free(sd);
    unlink(path);
    cg_model_free(c);
    cg_tensor_release(x), cg_tensor_release(y), cg_tensor_release(y2);
    cg_model_free(m), cg_model_free(b);
}
END_TEST

/* The library's version is its header's, and a saved model names the cgrad that wrote it. */
START_TEST(version_matches_header_and_saved_files) {
    ck_assert_int_eq(cg_version(), CG_VERSION);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", CG_VERSION_MAJOR, CG_VERSION_MINOR, CG_VERSION_PATCH);
    ck_assert_str_eq(cg_version_string(), want);
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 5, &m));
    CGT_OK(cg_model_add_dense(m, 3, 2, CG_ACT_NONE));
    char path[32];
    cgt_temp_file(path);
    CGT_OK(cg_model_save(m, path));
    cg_state_dict *sd;
    CGT_OK(cg_safetensors_load(path, CG_CPU, &sd));
    const char *v = cg_state_dict_get_meta(sd, "cgrad.version");
    ck_assert_ptr_nonnull(v);
    ck_assert_str_eq(v, want);
    cg_state_dict_free(sd);
    cg_model_free(m);
    unlink(path);
}
END_TEST

/* an F64 model whose first layer has no weight reloads as F64 (the dtype is in the metadata; files
 * without it use the first floating-point tensor) */
START_TEST(save_load_keeps_f64_when_first_layer_has_no_weight) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F64, 4, &m));
    CGT_OK(cg_model_add_flatten(m));
    CGT_OK(cg_model_add_linear(m, 4, 2, 1, CG_INIT_AUTO));
    CGT_OK(cg_model_build(m));
    char path[32];
    cgt_temp_file(path);
    cg_state_dict *sd, *legacy;
    CGT_OK(cg_model_state_dict(m, &sd));
    ck_assert_str_eq(cg_state_dict_get_meta(sd, "model.dtype"), "f64");
    CGT_OK(cg_state_dict_create(&legacy)); /* as written before the dtype was recorded */
    for (size_t i = 0; i < cg_state_dict_count(sd); i++)
        CGT_OK(cg_state_dict_set(legacy, cg_state_dict_name_at(sd, i), cg_state_dict_tensor_at(sd, i)));
    CGT_OK(cg_state_dict_set_meta(legacy, "cgrad.arch", cg_state_dict_get_meta(sd, "cgrad.arch")));
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0) CGT_OK(cg_model_save(m, path));
        else CGT_OK(cg_safetensors_save(path, legacy));
        cg_model *b;
        CGT_OK(cg_model_load(path, CG_CPU, &b));
        ck_assert_int_eq(cg_model_dtype(b), CG_F64);
        cg_state_dict *sb;
        CGT_OK(cg_model_state_dict(b, &sb));
        ck_assert_int_eq(cg_state_dict_count(sb), 2);
        for (size_t i = 0; i < cg_state_dict_count(sb); i++) {
            const cg_tensor *ta = cg_state_dict_get(sd, cg_state_dict_name_at(sb, i));
            const cg_tensor *tb = cg_state_dict_tensor_at(sb, i);
            ck_assert_ptr_nonnull(ta);
            ck_assert_int_eq(cg_tensor_dtype(tb), CG_F64);
            ck_assert_int_eq(cg_tensor_numel(tb), cg_tensor_numel(ta));
            double *u = cgt_read(ta), *v = cgt_read(tb);
            ck_assert(memcmp(u, v, (size_t)cg_tensor_numel(ta) * sizeof *u) == 0);
            free(u), free(v);
        }
        cg_state_dict_free(sb);
        cg_model_free(b);
    }
    cg_state_dict_free(sd), cg_state_dict_free(legacy);
    unlink(path);
    cg_model_free(m);
}
END_TEST

/* parameter counts that overflow int64 are refused at build, not turned into a tiny buffer */
START_TEST(huge_layers_overflow_is_refused) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 1, &m));
    CGT_OK(cg_model_add_linear(m, (int64_t)1 << 32, (int64_t)1 << 32, 1, CG_INIT_AUTO));
    CGT_FAILS(cg_model_build(m), CG_E_SHAPE, "overflow");
    ck_assert_ptr_null(cg_model_flat_params(m));
    cg_model_free(m);
    /* each layer fits, their sum does not */
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 1, &m));
    CGT_OK(cg_model_add_linear(m, (int64_t)1 << 29, (int64_t)1 << 30, 0, CG_INIT_AUTO));
    CGT_OK(cg_model_add_linear(m, (int64_t)1 << 30, (int64_t)1 << 29, 0, CG_INIT_AUTO));
    CGT_FAILS(cg_model_build(m), CG_E_SHAPE, "layer 1", "overflow");
    cg_model_free(m);
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 1, &m));
    CGT_OK(cg_model_add_layernorm(m, INT64_MAX - 2, 0));
    CGT_FAILS(cg_model_build(m), CG_E_SHAPE, "overflow");
    cg_model_free(m);
}
END_TEST

/* cg_model_describe with a zero-sized buffer writes nothing */
START_TEST(describe_zero_sized_buffer) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 1, &m));
    char buf[8] = "XXXXXXX";
    CGT_FAILS(cg_model_describe(m, buf, 0), CG_E_INVALID, "buffer too small");
    ck_assert_int_eq(buf[0], 'X');
    CGT_OK(cg_model_describe(m, buf, 1)); /* no layers: the empty string */
    ck_assert_str_eq(buf, "");
    CGT_OK(cg_model_add_flatten(m));
    strcpy(buf, "XXXXXXX");
    CGT_FAILS(cg_model_describe(m, buf, 0), CG_E_INVALID, "buffer too small");
    ck_assert_int_eq(buf[0], 'X');
    CGT_OK(cg_model_describe(m, buf, sizeof buf));
    ck_assert_str_eq(buf, "flatten");
    cg_model_free(m);
}
END_TEST

START_TEST(grad_norms_after_backward) {
    cg_model *m = mlp_342(CG_F64, 8);
    cgt_rand r = cgt_rand_make("gn");
    int64_t s[2] = {5, 3};
    cg_tensor *x = cgt_randn(&r, s, 2, CG_F64, CG_CPU), *y = NULL, *l = NULL;
    CGT_OK(cg_model_zero_grad(m));
    CGT_OK(cg_model_forward(m, x, &y));
    CGT_OK(cg_sum(y, CG_ALL_AXES, 0, &l));
    CGT_OK(cg_backward(l));
    cg_grad_norm gn[4];
    int n;
    CGT_OK(cg_model_grad_norms(m, gn, 4, &n));
    ck_assert_int_eq(n, 4);
    cg_tensor *p[4];
    CGT_OK(cg_model_parameters(m, p, NULL, 4, &n));
    double total = 0;
    for (int i = 0; i < 4; i++) {
        cg_tensor *g = cg_tensor_grad(p[i]);
        double *v = cgt_read(g), q = 0;
        for (int64_t k = 0; k < cg_tensor_numel(g); k++) q += v[k] * v[k];
        free(v);
        CGT_ASSERT_CLOSE(gn[i].norm, sqrt(q), 1e-12);
        total += q;
    }
    ck_assert_str_eq(gn[2].name, "2.weight");
    /* d sum / d b2 = N per output: norm sqrt(2) * 5 */
    CGT_ASSERT_CLOSE(gn[3].norm, 5 * sqrt(2.0), 1e-12);
    double g = 0;
    CGT_OK(cg_model_grad_global_norm(m, &g));
    CGT_ASSERT_CLOSE(g, sqrt(total), 1e-12);
    cg_tensor_release(x), cg_tensor_release(y), cg_tensor_release(l);
    cg_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("nn");
    TCase *tc = tcase_create("nn");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, chapter_342_network_has_26_parameters_named_like_pytorch);
    tcase_add_test(tc, batchnorm_buffers_in_state_dict);
    tcase_add_test(tc, initialisation_by_activation_and_seed);
    tcase_add_test(tc, forward_matches_hand_computation);
    tcase_add_test(tc, train_and_eval_modes);
    tcase_add_test(tc, predict_is_thread_safe_and_read_only);
    tcase_add_test(tc, losses_and_accuracy);
    tcase_add_test(tc, accuracy_rules_ties_nan_dtypes);
    tcase_add_test(tc, save_load_roundtrip_and_arch);
    tcase_add_test(tc, save_load_keeps_f64_when_first_layer_has_no_weight);
    tcase_add_test(tc, huge_layers_overflow_is_refused);
    tcase_add_test(tc, describe_zero_sized_buffer);
    tcase_add_test(tc, grad_norms_after_backward);
    tcase_add_test(tc, version_matches_header_and_saved_files);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
