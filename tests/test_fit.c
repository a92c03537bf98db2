/* The training loop: toy problems converge (XOR, two spirals, 1-D sine regression), early
 * stopping restores the best weights (synthetic validation curve through the callback),
 * deterministic runs are bit-identical, a NaN loss stops with CG_E_NUMERIC and the last good
 * weights, history export, progress output, validation, and a small Fashion-MNIST run. */
#define _POSIX_C_SOURCE 200809L /* mkstemp, fmemopen */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgrad/data.h"
#include "cgrad/train.h"
#include "cgt.h"

#define PI 3.14159265358979323846

static cg_tensor *host_tensor(const double *v, int64_t rows, int64_t cols, cg_dtype dt) {
    int64_t s[2] = {rows, cols};
    return cgt_tensor(v, s, cols ? 2 : 1, dt, CG_CPU);
}

static cg_fit_config quiet_config(int epochs, int64_t batch) {
    cg_fit_config c = cg_fit_config_default();
    c.epochs = epochs;
    c.batch_size = batch;
    c.verbose = CG_VERBOSE_QUIET;
    return c;
}

START_TEST(xor_converges) {
    double x[8] = {0, 0, 0, 1, 1, 0, 1, 1}, y[4] = {0, 1, 1, 0};
    cg_tensor *xt = host_tensor(x, 4, 2, CG_F32), *yt = host_tensor(y, 4, 1, CG_F32);
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 3, &m));
    CGT_OK(cg_model_add_dense(m, 2, 8, CG_ACT_TANH));
    CGT_OK(cg_model_add_dense(m, 8, 1, CG_ACT_NONE));
    cg_optim_config o = cg_optim_adam(0.05);
    cg_loss_config l = cg_loss_config_default(CG_LOSS_BCE_LOGITS);
    CGT_OK(cg_model_compile(m, &o, &l, CG_METRIC_ACCURACY));
    cg_fit_config fc = quiet_config(300, 4);
    cg_history *h;
    CGT_OK(cg_model_fit(m, xt, yt, &fc, &h));
    const cg_epoch_logs *last = cg_history_at(h, cg_history_count(h) - 1);
    ck_assert_msg(last->loss < 0.05, "xor loss %g", last->loss);
    double loss, acc;
    CGT_OK(cg_model_evaluate(m, xt, yt, 4, &loss, &acc));
    ck_assert_msg(acc == 1.0 && loss < 0.05, "xor acc %g loss %g", acc, loss);
    cg_history_free(h);
    cg_model_free(m);
    cg_tensor_release(xt), cg_tensor_release(yt);
}
END_TEST

START_TEST(two_spirals_classified) {
    enum { P = 150 }; /* points per arm */
    double *x = malloc(2 * P * 2 * sizeof *x), *y = malloc(2 * P * sizeof *y);
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < P; i++) {
            double t = 0.25 + 2.75 * PI * i / P, r = t / (3 * PI), s = c ? -1 : 1;
            int k = c * P + i;
            x[2 * k] = s * r * cos(t);
            x[2 * k + 1] = s * r * sin(t);
            y[k] = c;
        }
    cg_tensor *xt = host_tensor(x, 2 * P, 2, CG_F32), *yt = host_tensor(y, 2 * P, 0, CG_I64);
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 5, &m));
    CGT_OK(cg_model_add_dense(m, 2, 64, CG_ACT_RELU));
    CGT_OK(cg_model_add_dense(m, 64, 64, CG_ACT_RELU));
    CGT_OK(cg_model_add_dense(m, 64, 2, CG_ACT_NONE));
    cg_optim_config o = cg_optim_adam(0.01);
    cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    CGT_OK(cg_model_compile(m, &o, &l, CG_METRIC_ACCURACY));
    cg_fit_config fc = quiet_config(300, 32);
    CGT_OK(cg_model_fit(m, xt, yt, &fc, NULL));
    double loss, acc;
    CGT_OK(cg_model_evaluate(m, xt, yt, 0, &loss, &acc));
    ck_assert_msg(acc >= 0.97, "spirals accuracy %g (loss %g)", acc, loss);
    free(x), free(y);
    cg_model_free(m);
    cg_tensor_release(xt), cg_tensor_release(yt);
}
END_TEST

START_TEST(sine_regression_with_mse) {
    enum { N = 256 };
    double x[N], y[N];
    for (int i = 0; i < N; i++) {
        x[i] = -PI + 2 * PI * i / (N - 1);
        y[i] = sin(x[i]);
    }
    cg_tensor *xt = host_tensor(x, N, 1, CG_F32), *yt = host_tensor(y, N, 1, CG_F32);
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 2, &m));
    CGT_OK(cg_model_add_dense(m, 1, 32, CG_ACT_TANH));
    CGT_OK(cg_model_add_dense(m, 32, 32, CG_ACT_TANH));
    CGT_OK(cg_model_add_dense(m, 32, 1, CG_ACT_NONE));
    cg_optim_config o = cg_optim_adam(0.01);
    o.schedule = (cg_lr_schedule){.kind = CG_SCHED_COSINE, .warmup = 20};
    cg_loss_config l = cg_loss_config_default(CG_LOSS_MSE);
    CGT_OK(cg_model_compile(m, &o, &l, CG_METRIC_NONE));
    cg_fit_config fc = quiet_config(300, 32);
    cg_history *h;
    CGT_OK(cg_model_fit(m, xt, yt, &fc, &h));
    double loss, acc;
    CGT_OK(cg_model_evaluate(m, xt, yt, 64, &loss, &acc));
    ck_assert_msg(loss < 2e-3, "sine mse %g", loss);
    ck_assert(isnan(acc));
    ck_assert(isnan(cg_history_at(h, 0)->accuracy));
    /* the cosine schedule ran down to ~0 over all steps */
    ck_assert_msg(cg_history_at(h, 299)->lr < 1e-6, "final lr %g", cg_history_at(h, 299)->lr);
    ck_assert_msg(cg_history_at(h, 0)->lr <= 0.01 * 8 / 20 + 1e-12, "warmup lr %g", cg_history_at(h, 0)->lr);
    cg_history_free(h);
    cg_model_free(m);
    cg_tensor_release(xt), cg_tensor_release(yt);
}
END_TEST

/* synthetic validation curve: best at epoch 1, then worse; callback records the weights */
typedef struct curve {
    double *w[16];
    int64_t n;
} curve;

static int fake_monitor(cg_model *m, cg_epoch_logs *logs, void *user) {
    static const double val[] = {1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1};
    curve *c = user;
    logs->val_loss = val[logs->epoch];
    c->w[logs->epoch] = cgt_read(cg_model_flat_params(m));
    c->n = cg_tensor_numel(cg_model_flat_params(m));
    return 0;
}

static cg_model *small_classifier(uint64_t seed) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, seed, &m));
    CGT_OK(cg_model_add_dense(m, 6, 16, CG_ACT_RELU));
    CGT_OK(cg_model_add_batchnorm1d(m, 16, 0, 0));
    CGT_OK(cg_model_add_dropout(m, 0.2));
    CGT_OK(cg_model_add_dense(m, 16, 3, CG_ACT_NONE));
    cg_optim_config o = cg_optim_sgd(0.05, 0.9, 1, 1e-4);
    cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    CGT_OK(cg_model_compile(m, &o, &l, CG_METRIC_ACCURACY));
    return m;
}

/* After m's fit on (x, y) failed: m equals twin (built the same way) fitted one epoch on the
 * first `rows` rows with batch `batch` (`steps` optimizer steps), and still does after one more
 * clean epoch on both, which holds only if the dropout stream was put back too. */
static void assert_like_clean_prefix(cg_model *m, cg_model *twin, const cg_tensor *x, const cg_tensor *y, int64_t rows,
                                     int64_t batch, int64_t steps) {
    cg_tensor *xp, *yp;
    CGT_OK(cg_slice_rows(x, 0, rows, &xp));
    CGT_OK(cg_slice_rows(y, 0, rows, &yp));
    cg_fit_config one = quiet_config(1, batch);
    one.shuffle = 0;
    CGT_OK(cg_model_fit(twin, xp, yp, &one, NULL));
    ck_assert_int_eq(cg_optimizer_steps(cg_model_optimizer(m)), steps);
    cgt_assert_same_state(m, twin, "after the failed fit");
    for (int k = 0; k < 2; k++) CGT_OK(cg_model_fit(k ? twin : m, xp, yp, &one, NULL));
    cgt_assert_same_state(m, twin, "one clean epoch later");
    cg_tensor_release(xp), cg_tensor_release(yp);
}

static void blobs(int64_t n, cg_tensor **x, cg_tensor **y, const char *tag) {
    cgt_rand r = cgt_rand_make(tag);
    double *xv = malloc((size_t)n * 6 * sizeof *xv), *yv = malloc((size_t)n * sizeof *yv);
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(i % 3);
        yv[i] = c;
        for (int j = 0; j < 6; j++) xv[i * 6 + j] = cgt_normal(&r) + (j % 3 == c ? 1.5 : 0);
    }
    *x = host_tensor(xv, n, 6, CG_F32);
    *y = host_tensor(yv, n, 0, CG_I64);
    free(xv), free(yv);
}

START_TEST(early_stopping_restores_best_weights) {
    cg_tensor *x, *y;
    blobs(120, &x, &y, "es");
    cg_model *m = small_classifier(1);
    curve c = {{0}, 0};
    cg_fit_config fc = quiet_config(8, 16);
    fc.validation_split = 0.25; /* real val metrics exist; the callback overrides val_loss */
    fc.on_epoch_end = fake_monitor;
    fc.user = &c;
    fc.early_stopping = (cg_early_stopping){.enabled = 1, .monitor = CG_MONITOR_VAL_LOSS, .patience = 3,
                                            .min_delta = 0.01, .restore_best_weights = 1};
    cg_history *h;
    CGT_OK(cg_model_fit(m, x, y, &fc, &h));
    /* best at 1; 2, 3, 4 do not improve -> stop after epoch 4 */
    ck_assert_int_eq(cg_history_count(h), 5);
    ck_assert_int_eq(cg_history_stopped_epoch(h), 4);
    ck_assert_int_eq(cg_history_best_epoch(h), 1);
    CGT_ASSERT_CLOSE(cg_history_at(h, 1)->val_loss, 0.5, 0);
    ck_assert(isfinite(cg_history_at(h, 1)->val_accuracy));
    double *now = cgt_read(cg_model_flat_params(m));
    ck_assert(memcmp(now, c.w[1], (size_t)c.n * sizeof *now) == 0);
    ck_assert(memcmp(now, c.w[4], (size_t)c.n * sizeof *now) != 0);
    free(now);
    for (int i = 0; i < 16; i++) free(c.w[i]);
    cg_history_free(h);
    cg_model_free(m);
    /* without restore the last weights stay */
    m = small_classifier(1);
    memset(&c, 0, sizeof c);
    fc.early_stopping.restore_best_weights = 0;
    CGT_OK(cg_model_fit(m, x, y, &fc, NULL));
    now = cgt_read(cg_model_flat_params(m));
    ck_assert(memcmp(now, c.w[4], (size_t)c.n * sizeof *now) == 0);
    free(now);
    for (int i = 0; i < 16; i++) free(c.w[i]);
    cg_model_free(m);
    cg_tensor_release(x), cg_tensor_release(y);
}
END_TEST

/* monitoring (val_)accuracy without the accuracy metric is refused before any training */
START_TEST(early_stopping_on_accuracy_needs_the_metric) {
    cg_tensor *x, *y;
    blobs(120, &x, &y, "es-acc");
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 1, &m));
    CGT_OK(cg_model_add_dense(m, 6, 3, CG_ACT_NONE));
    cg_optim_config o = cg_optim_sgd(0.05, 0.9, 1, 1e-4);
    cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    CGT_OK(cg_model_compile(m, &o, &l, 0));
    double *before = cgt_read(cg_model_flat_params(m));
    cg_fit_config fc = quiet_config(8, 16);
    fc.validation_split = 0.25;
    fc.early_stopping = (cg_early_stopping){.enabled = 1, .monitor = CG_MONITOR_VAL_ACCURACY, .patience = 2,
                                            .restore_best_weights = 1};
    cg_history *h = (cg_history *)1;
    CGT_FAILS(cg_model_fit(m, x, y, &fc, &h), CG_E_INVALID, "val_accuracy", "CG_METRIC_ACCURACY");
    ck_assert_ptr_null(h);
    fc.early_stopping.monitor = CG_MONITOR_ACCURACY;
    CGT_FAILS(cg_model_fit(m, x, y, &fc, NULL), CG_E_INVALID, "accuracy", "CG_METRIC_ACCURACY");
    ck_assert_int_eq(cg_optimizer_steps(cg_model_optimizer(m)), 0);
    double *after = cgt_read(cg_model_flat_params(m));
    ck_assert(memcmp(before, after, (size_t)cg_tensor_numel(cg_model_flat_params(m)) * sizeof *before) == 0);
    free(before), free(after);
    /* a loss monitor is fine without the metric */
    fc.early_stopping.monitor = CG_MONITOR_VAL_LOSS;
    fc.epochs = 2;
    CGT_OK(cg_model_fit(m, x, y, &fc, NULL));
    cg_model_free(m);
    cg_tensor_release(x), cg_tensor_release(y);
}
END_TEST

START_TEST(deterministic_runs_are_bit_identical) {
    cg_tensor *x, *y;
    blobs(200, &x, &y, "det");
    double *w[2];
    int64_t n = 0;
    for (int k = 0; k < 2; k++) {
        cg_model *m = small_classifier(77);
        cg_fit_config fc = quiet_config(3, 32);
        fc.validation_split = 0.1;
        CGT_OK(cg_model_fit(m, x, y, &fc, NULL));
        w[k] = cgt_read(cg_model_flat_params(m));
        n = cg_tensor_numel(cg_model_flat_params(m));
        cg_model_free(m);
    }
    ck_assert(memcmp(w[0], w[1], (size_t)n * sizeof *w[0]) == 0);
    ck_assert(cgt_all_finite(w[0], n));
    free(w[0]), free(w[1]);
    cg_tensor_release(x), cg_tensor_release(y);
}
END_TEST

START_TEST(nan_loss_stops_with_numeric_error) {
    cg_tensor *x, *y;
    blobs(64, &x, &y, "nan");
    /* row 40 becomes NaN: with shuffle off and batch 16 the third step fails */
    float *xv = cg_tensor_data(x);
    xv[40 * 6 + 2] = NAN;
    cg_model *m = small_classifier(3), *twin = small_classifier(3);
    cg_fit_config fc = quiet_config(2, 16);
    fc.shuffle = 0;
    CGT_FAILS(cg_model_fit(m, x, y, &fc, NULL), CG_E_NUMERIC, "epoch 1", "step 3");
    /* the failure is seen when the step log is read (end of the epoch here): the updates of
     * steps 3 and 4 were skipped on the device and their counters taken back; the BatchNorm
     * statistics their forwards changed (NaN from step 3 on) and the dropout stream are put
     * back: the model is that of exactly two good steps */
    assert_like_clean_prefix(m, twin, x, y, 32, 16, 2);
    cg_model_free(m), cg_model_free(twin);
    cg_tensor_release(x), cg_tensor_release(y);
}
END_TEST

/* A NaN at step 81 of 100, batch 1: the log is read after 64 steps (one full window, all
 * good) and again at the end of the epoch, which finds step 81; steps 81..100 were gated off
 * on the device. Weights, Adam state (through a further epoch) and counters equal a run on
 * the clean first 80 rows. With clipping on, the norm goes through the same gate. */
START_TEST(nan_after_a_full_window_rolls_back) {
    for (int clip = 0; clip < 2; clip++) {
        cg_tensor *x, *y;
        blobs(100, &x, &y, "window");
        float *xv = cg_tensor_data(x);
        xv[80 * 6 + 4] = INFINITY;
        cg_model *mm[2];
        for (int k = 0; k < 2; k++) {
            CGT_OK(cg_model_create(CG_CPU, CG_F32, 9, &mm[k]));
            CGT_OK(cg_model_add_dense(mm[k], 6, 8, CG_ACT_TANH));
            CGT_OK(cg_model_add_dense(mm[k], 8, 3, CG_ACT_NONE));
            cg_optim_config o = cg_optim_adam(1e-2);
            o.clip_norm = clip ? 0.5 : 0;
            cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
            CGT_OK(cg_model_compile(mm[k], &o, &l, CG_METRIC_ACCURACY));
        }
        cg_fit_config fc = quiet_config(1, 1);
        fc.shuffle = 0;
        CGT_FAILS(cg_model_fit(mm[0], x, y, &fc, NULL), CG_E_NUMERIC, "epoch 1", "step 81 of 100", "before this step");
        cg_tensor *x80, *y80;
        CGT_OK(cg_slice_rows(x, 0, 80, &x80));
        CGT_OK(cg_slice_rows(y, 0, 80, &y80));
        CGT_OK(cg_model_fit(mm[1], x80, y80, &fc, NULL));
        if (clip) { /* the gated step's norm, read when asked for: the last step's, before clipping */
            double gn = -1;
            CGT_OK(cg_optimizer_get_last_grad_norm(cg_model_optimizer(mm[1]), &gn));
            ck_assert_msg(isfinite(gn) && gn > 0, "last gradient norm %g", gn);
            CGT_ASSERT_CLOSE(cg_optimizer_last_grad_norm(cg_model_optimizer(mm[1])), gn, 0);
        }
        ck_assert_int_eq(cg_optimizer_steps(cg_model_optimizer(mm[0])), 80);
        ck_assert_int_eq(cg_optimizer_schedule_pos(cg_model_optimizer(mm[0])), 80);
        /* one more clean epoch on both: equal only if moments and bias-correction counts agree */
        for (int k = 0; k < 2; k++) CGT_OK(cg_model_fit(mm[k], x80, y80, &fc, NULL));
        int64_t n = cg_tensor_numel(cg_model_flat_params(mm[0]));
        double *a = cgt_read(cg_model_flat_params(mm[0])), *b = cgt_read(cg_model_flat_params(mm[1]));
        ck_assert(cgt_all_finite(a, n));
        ck_assert_msg(memcmp(a, b, (size_t)n * sizeof *a) == 0, "clip %d: weights differ from the clean run", clip);
        free(a), free(b);
        cg_tensor_release(x80), cg_tensor_release(y80);
        for (int k = 0; k < 2; k++) cg_model_free(mm[k]);
        cg_tensor_release(x), cg_tensor_release(y);
    }
}
END_TEST

/* The same with BatchNorm (batch 2, 100 steps): the failure at step 81 is found after a full
 * window was read, and the statistics are put back from the copy of step 81's start. */
START_TEST(nan_after_a_full_window_restores_batchnorm) {
    cg_tensor *x, *y;
    blobs(200, &x, &y, "bnwindow");
    float *xv = cg_tensor_data(x);
    xv[161 * 6 + 1] = NAN;
    cg_model *m = small_classifier(4), *twin = small_classifier(4);
    cg_fit_config fc = quiet_config(1, 2);
    fc.shuffle = 0;
    CGT_FAILS(cg_model_fit(m, x, y, &fc, NULL), CG_E_NUMERIC, "epoch 1", "step 81 of 100", "before this step");
    assert_like_clean_prefix(m, twin, x, y, 160, 2, 80);
    cg_model_free(m), cg_model_free(twin);
    cg_tensor_release(x), cg_tensor_release(y);
}
END_TEST

/* A label out of range fails inside the step on the CPU, after the forward changed the
 * BatchNorm statistics: they are put back. A train_step on a NaN batch changes nothing. */
START_TEST(failed_step_leaves_batchnorm_as_it_was) {
    cg_tensor *x, *y;
    blobs(64, &x, &y, "bnlabel");
    int64_t *yv = cg_tensor_data(y);
    yv[37] = 3; /* three classes */
    cg_model *m = small_classifier(5), *twin = small_classifier(5);
    cg_fit_config fc = quiet_config(1, 16);
    fc.shuffle = 0;
    CGT_FAILS(cg_model_fit(m, x, y, &fc, NULL), CG_E_INVALID, "label 3");
    assert_like_clean_prefix(m, twin, x, y, 32, 16, 2);
    /* train_step */
    cg_tensor *xb, *yb;
    CGT_OK(cg_slice_rows(x, 0, 16, &xb));
    CGT_OK(cg_slice_rows(y, 0, 16, &yb));
    double loss = 0;
    CGT_OK(cg_model_train_step(m, xb, yb, &loss));
    CGT_OK(cg_model_train_step(twin, xb, yb, &loss));
    float *xd = cg_tensor_data(x);
    xd[5 * 6] = NAN; /* row 5 of xb, a view of x */
    CGT_FAILS(cg_model_train_step(m, xb, yb, &loss), CG_E_NUMERIC, "loss is nan");
    ck_assert(isnan(loss));
    cgt_assert_same_state(m, twin, "after a train_step on a NaN batch");
    xd[5 * 6] = 0.25f;
    for (int k = 0; k < 2; k++) CGT_OK(cg_model_train_step(k ? twin : m, xb, yb, &loss));
    cgt_assert_same_state(m, twin, "one clean step later");
    cg_tensor_release(xb), cg_tensor_release(yb);
    cg_model_free(m), cg_model_free(twin);
    cg_tensor_release(x), cg_tensor_release(y);
}
END_TEST

/* A NaN at step 2 (absorbed by the device-side gate, seen only when the step log is read) and
 * a label out of range at step 3 (on the CPU a failure at the step itself): the first failure
 * is the one reported, and the model is as before step 2, like a run on the first batch. */
START_TEST(earlier_gated_failure_comes_first) {
    cg_tensor *x, *y;
    blobs(64, &x, &y, "gated first");
    float *xv = cg_tensor_data(x);
    int64_t *yv = cg_tensor_data(y);
    xv[20 * 6 + 3] = NAN; /* batch 16: step 2 */
    yv[40] = 7;           /* step 3 */
    cg_model *m = small_classifier(8), *twin = small_classifier(8);
    cg_fit_config fc = quiet_config(1, 16);
    fc.shuffle = 0;
    CGT_FAILS(cg_model_fit(m, x, y, &fc, NULL), CG_E_NUMERIC, "step 2", "before this step");
    assert_like_clean_prefix(m, twin, x, y, 16, 16, 1);
    cg_model_free(m), cg_model_free(twin);
    cg_tensor_release(x), cg_tensor_release(y);
}
END_TEST

/* train_step whose optimizer step fails before any update (clip_norm with an infinite
 * gradient norm; f32, a weight of 1.5e18, MSE summed: the loss is finite, its gradient is
 * not): the BatchNorm statistics and counter the forward changed are put back too. */
START_TEST(train_step_failing_update_keeps_batchnorm) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 1, &m));
    CGT_OK(cg_model_add_batchnorm1d(m, 1, 0, 0));
    CGT_OK(cg_model_add_linear(m, 1, 1, 1, CG_INIT_AUTO));
    cg_optim_config o = cg_optim_sgd(0.1, 0, 0, 0);
    o.clip_norm = 1.0;
    cg_loss_config l = cg_loss_config_default(CG_LOSS_MSE);
    l.reduction = CG_REDUCE_SUM;
    CGT_OK(cg_model_compile(m, &o, &l, 0));
    cg_tensor *p[4];
    const char *names[4];
    int n = 0;
    CGT_OK(cg_model_parameters(m, p, names, 4, &n));
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], "1.weight")) {
            cg_no_grad_begin();
            CGT_OK(cg_tensor_fill(p[i], 1.5e18));
            cg_no_grad_end();
        }
    double xv[100], yv[100];
    for (int i = 0; i < 100; i++) xv[i] = (double)(i % 7 - 3), yv[i] = 0;
    cg_tensor *x = host_tensor(xv, 100, 1, CG_F32), *y = host_tensor(yv, 100, 1, CG_F32);
    cg_state_dict *before, *after;
    CGT_OK(cg_model_state_dict(m, &before));
    double loss = 0;
    CGT_FAILS(cg_model_train_step(m, x, y, &loss), CG_E_NUMERIC, "norm");
    ck_assert(isfinite(loss));
    CGT_OK(cg_model_state_dict(m, &after));
    for (size_t i = 0; i < cg_state_dict_count(before); i++) {
        const char *name = cg_state_dict_name_at(before, i);
        cg_tensor *a = cg_state_dict_tensor_at(before, i), *b = cg_state_dict_get(after, name);
        int64_t k = cg_tensor_numel(a);
        double *va = cgt_read(a), *vb = cgt_read(b);
        ck_assert_msg(memcmp(va, vb, (size_t)k * sizeof *va) == 0, "%s changed: %g -> %g", name, va[0], vb[0]);
        free(va), free(vb);
    }
    cg_state_dict_free(before), cg_state_dict_free(after);
    cg_tensor_release(x), cg_tensor_release(y);
    cg_model_free(m);
}
END_TEST

START_TEST(history_export_progress_and_validation_set) {
    cg_tensor *x, *y, *xv, *yv;
    blobs(90, &x, &y, "hist");
    blobs(30, &xv, &yv, "hist-val");
    cg_model *m = small_classifier(4);
    char buf[4096] = {0};
    FILE *out = fmemopen(buf, sizeof buf - 1, "w");
    cg_fit_config fc = cg_fit_config_default();
    fc.epochs = 3;
    fc.batch_size = 20;
    fc.x_val = xv;
    fc.y_val = yv;
    fc.out = out; /* not a terminal: one line per epoch */
    cg_history *h;
    CGT_OK(cg_model_fit(m, x, y, &fc, &h));
    fclose(out);
    int lines = 0;
    for (char *p = buf; (p = strstr(p, "Epoch ")); p++) lines++;
    ck_assert_msg(lines == 3 && strstr(buf, "Epoch 3/3") && strstr(buf, "val_accuracy: "), "progress: %s", buf);
    ck_assert_int_eq(cg_history_count(h), 3);
    for (int i = 0; i < 3; i++) {
        const cg_epoch_logs *l = cg_history_at(h, i);
        ck_assert(l->epoch == i && isfinite(l->loss) && isfinite(l->val_loss) && l->val_accuracy >= 0 &&
                  l->seconds >= 0 && l->steps == 5 * (i + 1));
        CGT_ASSERT_CLOSE(l->lr, 0.05, 0);
    }
    /* evaluate on the validation set reproduces the last epoch's val metrics */
    double vl, va;
    CGT_OK(cg_model_evaluate(m, xv, yv, 7, &vl, &va));
    CGT_ASSERT_CLOSE(vl, cg_history_at(h, 2)->val_loss, 1e-5);
    CGT_ASSERT_CLOSE(va, cg_history_at(h, 2)->val_accuracy, 1e-12);
    char csv[] = "/tmp/cg_hist_XXXXXX", js[] = "/tmp/cg_histj_XXXXXX";
    close(mkstemp(csv));
    close(mkstemp(js));
    CGT_OK(cg_history_save_csv(h, csv));
    CGT_OK(cg_history_save_json(h, js));
    FILE *f = fopen(csv, "r");
    char line[256];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n");
    int rows = 0;
    while (fgets(line, sizeof line, f)) rows++;
    fclose(f);
    ck_assert_int_eq(rows, 3);
    json_error_t err;
    json_t *root = json_load_file(js, 0, &err);
    ck_assert_ptr_nonnull(root);
    ck_assert_int_eq(json_array_size(json_object_get(root, "epochs")), 3);
    json_t *e2 = json_array_get(json_object_get(root, "epochs"), 2);
    CGT_ASSERT_CLOSE(json_real_value(json_object_get(e2, "val_loss")), cg_history_at(h, 2)->val_loss, 1e-6);
    ck_assert(json_is_null(json_object_get(root, "stopped_epoch")));
    json_decref(root);
    unlink(csv), unlink(js);
    /* quiet prints nothing */
    char qb[256] = {0};
    out = fmemopen(qb, sizeof qb - 1, "w");
    fc.out = out;
    fc.verbose = CG_VERBOSE_QUIET;
    fc.epochs = 1;
    CGT_OK(cg_model_fit(m, x, y, &fc, NULL));
    fclose(out);
    ck_assert_str_eq(qb, "");
    /* misuse */
    cg_model *raw;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 0, &raw));
    CGT_OK(cg_model_add_dense(raw, 6, 3, CG_ACT_NONE));
    CGT_FAILS(cg_model_fit(raw, x, y, &fc, NULL), CG_E_STATE, "compile");
    fc.validation_split = 1.5;
    CGT_FAILS(cg_model_fit(m, x, y, &fc, NULL), CG_E_INVALID, "validation_split");
    cg_model_free(raw);
    cg_history_free(h);
    cg_model_free(m);
    cg_tensor_release(x), cg_tensor_release(y), cg_tensor_release(xv), cg_tensor_release(yv);
}
END_TEST

START_TEST(fashion_mnist_subset) {
    cg_tensor *img, *lab, *timg, *tlab;
    if (cg_fashion_mnist_load(NULL, CG_SPLIT_TRAIN, 1, CG_CPU, &img, &lab) != CG_OK) {
        fprintf(stderr, "fashion_mnist_subset: skipped, data set not installed (%s)\n", cg_last_error());
        return;
    }
    CGT_OK(cg_fashion_mnist_load(NULL, CG_SPLIT_TEST, 1, CG_CPU, &timg, &tlab));
    cg_tensor *x, *y, *xt, *yt;
    CGT_OK(cg_slice_rows(img, 0, 2000, &x));
    CGT_OK(cg_slice_rows(lab, 0, 2000, &y));
    CGT_OK(cg_slice_rows(timg, 0, 1000, &xt));
    CGT_OK(cg_slice_rows(tlab, 0, 1000, &yt));
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 42, &m));
    CGT_OK(cg_model_add_flatten(m));
    CGT_OK(cg_model_add_linear(m, 784, 128, 1, CG_INIT_AUTO));
    CGT_OK(cg_model_add_batchnorm1d(m, 128, 0, 0));
    CGT_OK(cg_model_add_activation(m, CG_ACT_RELU, 0));
    CGT_OK(cg_model_add_dropout(m, 0.3));
    CGT_OK(cg_model_add_linear(m, 128, 10, 1, CG_INIT_AUTO));
    cg_optim_config o = cg_optim_adamw(1e-3, 1e-4);
    cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    l.label_smoothing = 0.1;
    CGT_OK(cg_model_compile(m, &o, &l, CG_METRIC_ACCURACY));
    cg_fit_config fc = quiet_config(4, 64);
    fc.validation_split = 0.1;
    cg_history *h;
    CGT_OK(cg_model_fit(m, x, y, &fc, &h));
    double loss, acc;
    CGT_OK(cg_model_evaluate(m, xt, yt, 500, &loss, &acc));
    ck_assert_msg(acc >= 0.75, "2000-image Fashion-MNIST test accuracy %g", acc);
    ck_assert(cg_history_at(h, 3)->loss < cg_history_at(h, 0)->loss);
    cg_history_free(h);
    cg_model_free(m);
    cg_tensor *all[8] = {img, lab, timg, tlab, x, y, xt, yt};
    for (int i = 0; i < 8; i++) cg_tensor_release(all[i]);
}
END_TEST

START_TEST(cpu_and_gpu_loss_curves_agree) {
    if (cg_device_count() == 0) {
        fprintf(stderr, "cpu_and_gpu_loss_curves_agree: skipped, no CUDA device\n");
        return;
    }
    cg_tensor *x, *y;
    blobs(256, &x, &y, "devices");
    double loss[2][8];
    for (int d = 0; d < 2; d++) {
        cg_model *m;
        CGT_OK(cg_model_create(d ? CG_CUDA(0) : CG_CPU, CG_F32, 12, &m));
        CGT_OK(cg_model_add_dense(m, 6, 32, CG_ACT_RELU));
        CGT_OK(cg_model_add_batchnorm1d(m, 32, 0, 0));
        CGT_OK(cg_model_add_dropout(m, 0.2));
        CGT_OK(cg_model_add_dense(m, 32, 3, CG_ACT_NONE));
        cg_optim_config o = cg_optim_adamw(1e-2, 1e-2);
        cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
        CGT_OK(cg_model_compile(m, &o, &l, CG_METRIC_ACCURACY));
        for (int s = 0; s < 8; s++) {
            cg_tensor *xb, *yb;
            CGT_OK(cg_slice_rows(x, s * 32, s * 32 + 32, &xb));
            CGT_OK(cg_slice_rows(y, s * 32, s * 32 + 32, &yb));
            CGT_OK(cg_model_train_step(m, xb, yb, &loss[d][s]));
            cg_tensor_release(xb), cg_tensor_release(yb);
        }
        cg_model_free(m);
    }
    for (int s = 0; s < 8; s++)
        ck_assert_msg(fabs(loss[0][s] - loss[1][s]) <= 1e-4 * (1 + fabs(loss[0][s])), "step %d: cpu %.8g gpu %.8g", s,
                      loss[0][s], loss[1][s]);
    cg_tensor_release(x), cg_tensor_release(y);
}
END_TEST

int main(void) {
    Suite *s = suite_create("fit");
    TCase *tc = tcase_create("fit");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, xor_converges);
    tcase_add_test(tc, two_spirals_classified);
    tcase_add_test(tc, sine_regression_with_mse);
    tcase_add_test(tc, early_stopping_restores_best_weights);
    tcase_add_test(tc, early_stopping_on_accuracy_needs_the_metric);
    tcase_add_test(tc, deterministic_runs_are_bit_identical);
    tcase_add_test(tc, nan_loss_stops_with_numeric_error);
    tcase_add_test(tc, nan_after_a_full_window_rolls_back);
    tcase_add_test(tc, nan_after_a_full_window_restores_batchnorm);
    tcase_add_test(tc, failed_step_leaves_batchnorm_as_it_was);
    tcase_add_test(tc, earlier_gated_failure_comes_first);
    tcase_add_test(tc, train_step_failing_update_keeps_batchnorm);
    tcase_add_test(tc, history_export_progress_and_validation_set);
    tcase_add_test(tc, fashion_mnist_subset);
    tcase_add_test(tc, cpu_and_gpu_loss_curves_agree);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
