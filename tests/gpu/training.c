/* GPU suite: backend services of a training step (optimizer updates, accuracy counts),
 * fit against the CPU (rollback, BatchNorm restore, a bad label), and thread-safe inference. */
#include <pthread.h>

#include "gpu_suite.h"

/* ---------------------------------------------------------------- backend services */

START_TEST(optimizers_match_cpu) {
    const cg_backend *bc = cg__backend(CG_CPU), *bg = cg__backend(GPU);
    ck_assert_ptr_nonnull(bg);
    cgt_rand r = cgt_rand_make("optim");
    int64_t n = 4099;
    for (int k = 0; k < 8; k++) {
        cg_dtype dt = k % 2 ? CG_F64 : CG_F32;
        cg_optim_kind kind = k < 4 ? CG_OPTIM_SGD : k < 6 ? CG_OPTIM_ADAM : CG_OPTIM_ADAMW;
        double *p = randn_arr(&r, n, 0, 1), *g = randn_arr(&r, n, 0, 1), *m = randn_arr(&r, n, 0, 0.1),
               *v = randn_arr(&r, n, 0, 0.1);
        for (int64_t i = 0; i < n; i++) v[i] = fabs(v[i]);
        double *res[2][3];
        for (int dv = 0; dv < 2; dv++) {
            cg_device dev = dv ? GPU : CG_CPU;
            cg_tensor *tp = cgt_tensor(p, &n, 1, dt, dev), *tg = cgt_tensor(g, &n, 1, dt, dev),
                      *tm = cgt_tensor(m, &n, 1, dt, dev), *tv = cgt_tensor(v, &n, 1, dt, dev);
            cg_optim_call c = {.kind = kind, .param = tp, .grad = tg, .m = tm, .v = tv, .lr = 0.01, .momentum = 0.9,
                               .dampening = k == 2 ? 0.1 : 0.0, .weight_decay = 0.01, .beta1 = 0.9, .beta2 = 0.999,
                               .eps = 1e-8, .nesterov = k == 3, .step = 3};
            for (int step = 1; step <= 3; step++) {
                c.step = step;
                CGT_OK((dv ? bg : bc)->optim(&c));
            }
            res[dv][0] = cgt_read(tp);
            res[dv][1] = cgt_read(tm);
            res[dv][2] = cgt_read(tv);
            cg_tensor_release(tp);
            cg_tensor_release(tg);
            cg_tensor_release(tm);
            cg_tensor_release(tv);
        }
        for (int j = 0; j < (kind == CG_OPTIM_SGD ? 2 : 3); j++) {
            char what[64];
            snprintf(what, sizeof what, "optimizer case %d buffer %d", k, j);
            /* src/optim_math.h runs the same rounded operations on both sides: bit for bit */
            CGT_ASSERT_CLOSE_ARR(res[1][j], res[0][j], n, ((cgt_tol){0, 0}), what);
        }
        for (int dv = 0; dv < 2; dv++)
            for (int j = 0; j < 3; j++) free(res[dv][j]);
        free(p);
        free(g);
        free(m);
        free(v);
    }
}
END_TEST

/* The optimizer's device-side gate (cg_optim_call.gate / clip_sumsq, read by the kernel
 * itself): skip on a NaN gate or an infinite norm, clip in the kernel above the threshold,
 * nothing scaled under it; GPU bit for bit equal to the CPU in every mode. */
START_TEST(gated_optimizer_matches_cpu) {
    const cg_backend *bc = cg__backend(CG_CPU), *bg = cg__backend(GPU);
    cgt_rand r = cgt_rand_make("gate");
    int64_t n = 4099, one = 1;
    for (int k = 0; k < 4; k++) {
        cg_dtype dt = k % 2 ? CG_F64 : CG_F32;
        double *p0 = randn_arr(&r, n, 0, 1), *g0 = randn_arr(&r, n, 0, 3);
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += g0[i] * g0[i];
        for (int mode = 0; mode < 4; mode++) {
            double gate_v = mode == 0 ? NAN : 0.0, sq_v = mode == 1 ? INFINITY : ss;
            double *res[2][2];
            for (int dv = 0; dv < 2; dv++) {
                cg_device dev = dv ? GPU : CG_CPU;
                cg_tensor *p = cgt_tensor(p0, &n, 1, dt, dev), *g = cgt_tensor(g0, &n, 1, dt, dev),
                          *m = cgt_tensor(g0, &n, 1, dt, dev), *v = cgt_tensor(p0, &n, 1, dt, dev);
                for (int64_t i = 0; i < 1; i++) CGT_OK(cg_tensor_fill(v, 0.25));
                cg_tensor *gate = cgt_tensor(&gate_v, &one, 1, CG_F64, dev), *sq = cgt_tensor(&sq_v, &one, 1, CG_F64, dev);
                cg_optim_call c = {.kind = k < 2 ? CG_OPTIM_SGD : CG_OPTIM_ADAMW, .param = p, .grad = g, .m = m, .v = v,
                                   .lr = 0.05, .momentum = 0.9, .weight_decay = 0.01, .beta1 = 0.9, .beta2 = 0.999,
                                   .eps = 1e-8, .step = 4, .gate = gate, .clip_sumsq = sq,
                                   .clip_max = mode == 3 ? 2 * sqrt(ss) : 0.3 * sqrt(ss)};
                CGT_OK((dv ? bg : bc)->optim(&c));
                res[dv][0] = cgt_read(p);
                res[dv][1] = cgt_read(m);
                cg_tensor *all[6] = {p, g, m, v, gate, sq};
                for (int i = 0; i < 6; i++) cg_tensor_release(all[i]);
            }
            char what[64];
            snprintf(what, sizeof what, "gated optimizer case %d mode %d", k, mode);
            for (int j = 0; j < 2; j++) CGT_ASSERT_CLOSE_ARR(res[1][j], res[0][j], n, ((cgt_tol){0, 0}), what);
            if (mode < 2) CGT_ASSERT_CLOSE_ARR(res[1][0], p0, n, gpu_tol(dt, 1), what); /* untouched */
            for (int dv = 0; dv < 2; dv++) free(res[dv][0]), free(res[dv][1]);
        }
        free(p0), free(g0);
    }
}
END_TEST

/* Accuracy counted on the device (backend count_correct: a warp per row, first maximum,
 * NaNs skipped unless in column 0) equals the CPU count: planted ties, NaNs and infinities,
 * widths 1 to 1025, i32/i64/f32 targets, f32/f64 predictions. */
START_TEST(accuracy_count_matches_cpu) {
    cgt_rand r = cgt_rand_make("acc");
    const int64_t widths[] = {1, 2, 10, 31, 33, 1025};
    const cg_dtype tdts[] = {CG_I32, CG_I64, CG_F32};
    for (int w = 0; w < 6; w++)
        for (int k = 0; k < 6; k++) {
            int64_t c = widths[w], n = k < 3 ? cgt_randint(&r, 1, 9) : cgt_randint(&r, 1000, 5000);
            cg_dtype pdt = k % 2 ? CG_F64 : CG_F32, tdt = tdts[k % 3];
            double *pv = malloc((size_t)(n * c) * sizeof *pv), *tv = malloc((size_t)n * sizeof *tv);
            for (int64_t i = 0; i < n * c; i++) {
                double u = cgt_uniform(&r, 0, 1);
                pv[i] = u < 0.03 ? NAN : u < 0.05 ? -INFINITY : u < 0.06 ? INFINITY : (double)cgt_randint(&r, -2, 3);
            }
            for (int64_t i = 0; i < n; i++) tv[i] = (double)cgt_randint(&r, 0, c == 1 ? 2 : c);
            int64_t shape[2] = {n, c}, got[2];
            for (int dv = 0; dv < 2; dv++) {
                cg_device dev = dv ? GPU : CG_CPU;
                cg_tensor *pt = cgt_tensor(pv, shape, 2, pdt, dev), *tt = cgt_tensor(tv, &n, 1, tdt, dev);
                CGT_OK(cg_accuracy_count(pt, tt, &got[dv], NULL));
                cg_tensor_release(pt), cg_tensor_release(tt);
            }
            ck_assert_msg(got[0] == got[1], "n %lld c %lld: cpu %lld gpu %lld", (long long)n, (long long)c,
                          (long long)got[0], (long long)got[1]);
            free(pv), free(tv);
        }
}
END_TEST

/* fit on the GPU queues every step without a host wait; it must still match the CPU: the
 * same losses and accuracies per epoch (f64 model), and the same failure on a NaN after a
 * full step-log window, with the skipped steps' counters taken back. */
/* 6 -> hidden (ReLU) -> 3 classes, Adam 1e-2 (clip_norm when > 0), cross-entropy, accuracy */
static cg_model *fit_model(cg_device dev, cg_dtype dt, int64_t hidden, double clip) {
    cg_model *m;
    CGT_OK(cg_model_create(dev, dt, 5, &m));
    CGT_OK(cg_model_add_dense(m, 6, hidden, CG_ACT_RELU));
    CGT_OK(cg_model_add_dense(m, hidden, 3, CG_ACT_NONE));
    cg_optim_config o = cg_optim_adam(1e-2);
    o.clip_norm = clip;
    cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    CGT_OK(cg_model_compile(m, &o, &l, CG_METRIC_ACCURACY));
    return m;
}

START_TEST(fit_matches_cpu_and_rolls_back) {
    cgt_rand r = cgt_rand_make("fit");
    int64_t n = 100, shape[2] = {100, 6};
    double *xv = randn_arr(&r, n * 6, 0, 1), *yv = malloc((size_t)n * sizeof *yv);
    for (int64_t i = 0; i < n; i++) yv[i] = (double)(i % 3), xv[i * 6 + i % 3] += 2;
    for (int bad = 0; bad < 2; bad++) {
        if (bad) xv[80 * 6 + 1] = NAN;
        cg_epoch_logs logs[2][2];
        int64_t steps[2];
        double *w[2];
        for (int dv = 0; dv < 2; dv++) {
            cg_tensor *x = cgt_tensor(xv, shape, 2, CG_F64, CG_CPU), *y = cgt_tensor(yv, &n, 1, CG_I64, CG_CPU);
            cg_model *m = fit_model(dv ? GPU : CG_CPU, CG_F64, 16, 1.0);
            cg_fit_config fc = cg_fit_config_default();
            fc.epochs = 2;
            fc.batch_size = bad ? 1 : 7;
            fc.shuffle = !bad;
            fc.verbose = CG_VERBOSE_QUIET;
            cg_history *h = NULL;
            if (bad) {
                CGT_FAILS(cg_model_fit(m, x, y, &fc, &h), CG_E_NUMERIC, "epoch 1, step 81 of 100");
            } else {
                CGT_OK(cg_model_fit(m, x, y, &fc, &h));
                for (int e = 0; e < 2; e++) logs[dv][e] = *cg_history_at(h, e);
                cg_history_free(h);
            }
            steps[dv] = cg_optimizer_steps(cg_model_optimizer(m));
            w[dv] = cgt_read(cg_model_flat_params(m));
            int64_t nw = cg_tensor_numel(cg_model_flat_params(m));
            ck_assert(cgt_all_finite(w[dv], nw));
            if (dv) CGT_ASSERT_CLOSE_ARR(w[1], w[0], nw, gpu_tol(CG_F64, 100), bad ? "weights at the failure" : "weights");
            cg_model_free(m);
            cg_tensor_release(x), cg_tensor_release(y);
        }
        ck_assert_int_eq(steps[0], steps[1]);
        ck_assert_int_eq(steps[0], bad ? 80 : 2 * 15);
        /* 14 batches of 7 and one of 2 an epoch: on a GPU all but the first step and the short
           batches replay the recorded step (unless the emulator is told to refuse recordings) */
        const char *refuse = getenv("CGEMU_CAPTURE_REFUSE");
        int graphs = cg__backend(GPU)->graph_begin != NULL && !(refuse && *refuse);
        if (!bad)
            for (int e = 0; e < 2; e++) {
                ck_assert_msg(cgt_close(logs[1][e].loss, logs[0][e].loss, gpu_tol(CG_F64, 100)), "epoch %d loss", e);
                ck_assert(logs[1][e].accuracy == logs[0][e].accuracy);
                ck_assert_int_eq(logs[0][e].replayed, 0);
                ck_assert_int_eq(logs[1][e].replayed, graphs ? 13 + e : 0);
            }
        free(w[0]), free(w[1]);
    }
    free(xv), free(yv);
}
END_TEST

/* A NaN at step 81 of 100 (batch 8) in a model with BatchNorm: the forwards of steps 81..100
 * changed the running statistics on the device before the step log was read; fit puts them
 * back from the device copy of step 81's start. Every state-dict tensor (parameters, running
 * statistics, num_batches_tracked) is finite and matches the CPU. */
START_TEST(fit_restores_batchnorm_like_cpu) {
    cgt_rand r = cgt_rand_make("fit batchnorm");
    /* batches of 8, not 2: BatchNorm over two rows outputs +-1 whatever the input, so the
       first layer's gradient is only eps's trace, rounding noise that Adam grows into
       weights the backends cannot agree on at 1e-8 (seen on the emulator) */
    int64_t n = 800, shape[2] = {800, 6};
    double *xv = randn_arr(&r, n * 6, 0, 1), *yv = malloc((size_t)n * sizeof *yv);
    for (int64_t i = 0; i < n; i++) yv[i] = (double)(i % 3), xv[i * 6 + i % 3] += 2;
    xv[(80 * 8 + 1) * 6 + 2] = NAN; /* in the 81st batch */
    cg_state_dict *sd[2];
    for (int dv = 0; dv < 2; dv++) {
        cg_tensor *x = cgt_tensor(xv, shape, 2, CG_F64, CG_CPU), *y = cgt_tensor(yv, &n, 1, CG_I64, CG_CPU);
        cg_model *m;
        CGT_OK(cg_model_create(dv ? GPU : CG_CPU, CG_F64, 6, &m));
        /* no bias before BatchNorm: its gradient is 0 up to rounding, and Adam would grow
           that noise into a bias the two backends cannot agree on */
        CGT_OK(cg_model_add_linear(m, 6, 24, 0, CG_INIT_AUTO));
        CGT_OK(cg_model_add_batchnorm1d(m, 24, 0, 0));
        CGT_OK(cg_model_add_activation(m, CG_ACT_RELU, 0));
        CGT_OK(cg_model_add_dense(m, 24, 3, CG_ACT_NONE));
        cg_optim_config o = cg_optim_adam(1e-2);
        cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
        CGT_OK(cg_model_compile(m, &o, &l, 0));
        cg_fit_config fc = cg_fit_config_default();
        fc.batch_size = 8;
        fc.shuffle = 0;
        fc.verbose = CG_VERBOSE_QUIET;
        CGT_FAILS(cg_model_fit(m, x, y, &fc, NULL), CG_E_NUMERIC, "epoch 1, step 81 of 100");
        ck_assert_int_eq(cg_optimizer_steps(cg_model_optimizer(m)), 80);
        CGT_OK(cg_model_state_dict(m, &sd[dv]));
        cg_model_free(m);
        cg_tensor_release(x), cg_tensor_release(y);
    }
    ck_assert_uint_eq(cg_state_dict_count(sd[0]), cg_state_dict_count(sd[1]));
    for (size_t i = 0; i < cg_state_dict_count(sd[0]); i++) {
        const char *name = cg_state_dict_name_at(sd[0], i);
        cg_tensor *c = cg_state_dict_tensor_at(sd[0], i), *g = cg_state_dict_get(sd[1], name);
        ck_assert_ptr_nonnull(g);
        int64_t k = cg_tensor_numel(c);
        double *cv = cgt_read(c), *gv = cgt_read(g);
        ck_assert_msg(cgt_all_finite(gv, k), "%s is not finite", name);
        CGT_ASSERT_CLOSE_ARR(gv, cv, k, gpu_tol(CG_F64, 100), name);
        free(cv), free(gv);
    }
    cg_state_dict_free(sd[0]), cg_state_dict_free(sd[1]);
    free(xv), free(yv);
}
END_TEST

/* ---------------------------------------------------------------- thread-safe inference */

typedef struct predict_job {
    const cg_model *m;
    const cg_tensor *x; /* on the host: each call uploads it, as a service's request would be */
    const float *ref;   /* the single-thread GPU output */
    int64_t n;
    int bad, iters;
} predict_job;

static void *predict_worker(void *arg) {
    predict_job *j = arg;
    float *v = malloc((size_t)j->n * sizeof *v);
    for (int it = 0; it < j->iters; it++) {
        cg_tensor *y = NULL;
        if (!v || cg_model_predict(j->m, j->x, &y) != CG_OK ||
            cg_tensor_to_host(y, v, (size_t)j->n * sizeof *v) != CG_OK || memcmp(v, j->ref, (size_t)j->n * sizeof *v))
            j->bad++;
        cg_tensor_release(y);
    }
    free(v);
    return NULL;
}

/* cg_model_predict from four host threads at once on one model on the GPU (the embedding
 * service's call): every output equals the single-thread GPU output bit for bit (the same
 * kernels on the same shapes, one stream), which matches the CPU; the model is unchanged. */
START_TEST(predict_threads_match_one_thread) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 23, &m));
    CGT_OK(cg_model_add_dense(m, 20, 48, CG_ACT_GELU));
    CGT_OK(cg_model_add_batchnorm1d(m, 48, 0, 0));
    CGT_OK(cg_model_add_dropout(m, 0.3));
    CGT_OK(cg_model_add_layernorm(m, 48, 0));
    CGT_OK(cg_model_add_dense(m, 48, 7, CG_ACT_RELU));
    CGT_OK(cg_model_add_dense(m, 7, 5, CG_ACT_SIGMOID));
    cgt_rand r = cgt_rand_make("predict threads");
    int64_t s[2] = {37, 20}, n = 37 * 5;
    cg_tensor *x = cgt_randn(&r, s, 2, CG_F32, CG_CPU), *y = NULL;
    CGT_OK(cg_model_forward(m, x, &y)); /* a training forward moves the running statistics */
    cg_tensor_release(y);
    CGT_OK(cg_model_predict(m, x, &y));
    double *cpu = cgt_read(y);
    cg_tensor_release(y);
    CGT_OK(cg_model_to(m, GPU));
    cg_state_dict *before, *after;
    CGT_OK(cg_model_state_dict(m, &before));
    CGT_OK(cg_model_predict(m, x, &y));
    double *gpu = cgt_read(y);
    CGT_ASSERT_CLOSE_ARR(gpu, cpu, n, gpu_tol(CG_F32, 10), "predict on the GPU");
    float *ref = malloc((size_t)n * sizeof *ref);
    CGT_OK(cg_tensor_to_host(y, ref, (size_t)n * sizeof *ref));
    cg_tensor_release(y);
    pthread_t th[4];
    predict_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (predict_job){m, x, ref, n, 0, 25};
        ck_assert_int_eq(pthread_create(&th[i], NULL, predict_worker, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) ck_assert_msg(jobs[i].bad == 0, "thread %d: %d of 25 predictions differ or failed", i, jobs[i].bad);
    CGT_OK(cg_model_state_dict(m, &after));
    for (size_t i = 0; i < cg_state_dict_count(before); i++) {
        cg_tensor *a = cg_state_dict_tensor_at(before, i), *b = cg_state_dict_tensor_at(after, i);
        int64_t k = cg_tensor_numel(a);
        double *av = cgt_read(a), *bv = cgt_read(b);
        ck_assert_msg(memcmp(av, bv, (size_t)k * sizeof *av) == 0, "%s changed", cg_state_dict_name_at(before, i));
        free(av), free(bv);
    }
    cg_state_dict_free(before), cg_state_dict_free(after);
    free(cpu), free(gpu), free(ref);
    cg_tensor_release(x);
    cg_model_free(m);
}
END_TEST

/* A label out of range during fit: on the GPU the kernel's report waits for the step log's
 * read (or for the gradient-norm check's read, on an epoch's first step); either way fit
 * fails with CG_E_INVALID naming the label, after the same optimizer steps as the CPU, which
 * fails at the step itself, and with the same weights. */
START_TEST(fit_bad_label_like_cpu) {
    cgt_rand r = cgt_rand_make("fit bad label");
    int64_t n = 60, shape[2] = {60, 6};
    double *xv = randn_arr(&r, n * 6, 0, 1), *yv = malloc((size_t)n * sizeof *yv);
    for (int hook = 0; hook < 2; hook++) {
        for (int64_t i = 0; i < n; i++) yv[i] = (double)(i % 3);
        yv[hook ? 2 : 20] = 7; /* batch 1 (the norm check reads there) or batch 4 of epoch 1 */
        int64_t steps[2];
        double *w[2];
        for (int dv = 0; dv < 2; dv++) {
            cg_tensor *x = cgt_tensor(xv, shape, 2, CG_F32, CG_CPU), *y = cgt_tensor(yv, &n, 1, CG_I64, CG_CPU);
            cg_model *m = fit_model(dv ? GPU : CG_CPU, CG_F32, 8, 0.0);
            cg_fit_config fc = cg_fit_config_default();
            fc.epochs = 2;
            fc.batch_size = 6;
            fc.shuffle = 0;
            FILE *sink = fopen("/dev/null", "w");
            fc.out = sink;
            fc.verbose = hook ? CG_VERBOSE_EPOCH : CG_VERBOSE_QUIET;
            cg_history *h = NULL;
            CGT_FAILS(cg_model_fit(m, x, y, &fc, &h), CG_E_INVALID, "label 7 at row 2 is outside [0, 3)");
            fclose(sink);
            steps[dv] = cg_optimizer_steps(cg_model_optimizer(m));
            w[dv] = cgt_read(cg_model_flat_params(m));
            int64_t nw = cg_tensor_numel(cg_model_flat_params(m));
            ck_assert(cgt_all_finite(w[dv], nw));
            if (dv) CGT_ASSERT_CLOSE_ARR(w[1], w[0], nw, gpu_tol(CG_F32, 100), "weights at the failure");
            cg_model_free(m);
            cg_tensor_release(x), cg_tensor_release(y);
        }
        ck_assert_int_eq(steps[0], steps[1]);
        ck_assert_int_eq(steps[0], hook ? 0 : 3);
        free(w[0]), free(w[1]);
    }
    free(xv), free(yv);
}
END_TEST

/* ---------------------------------------------------------------- recorded training steps */

/* 12 -> Linear (no bias) -> BatchNorm -> ReLU -> Dropout 0.25 -> 5 classes; AdamW with a
 * clipped norm or Nesterov SGD with weight decay, both with a step schedule (the learning
 * rate changes every second step: a replay must not reuse the recorded one) */
static cg_model *graph_model(cg_device dev, int sgd) {
    cg_model *m;
    CGT_OK(cg_model_create(dev, CG_F32, 11, &m));
    CGT_OK(cg_model_add_linear(m, 12, 32, 0, CG_INIT_AUTO));
    CGT_OK(cg_model_add_batchnorm1d(m, 32, 0, 0));
    CGT_OK(cg_model_add_activation(m, CG_ACT_RELU, 0));
    CGT_OK(cg_model_add_dropout(m, 0.25));
    CGT_OK(cg_model_add_dense(m, 32, 5, CG_ACT_NONE));
    cg_optim_config o = sgd ? cg_optim_sgd(0.05, 0.9, 1, 1e-3) : cg_optim_adamw(1e-2, 0.01);
    o.clip_norm = sgd ? 0.0 : 0.5;
    o.schedule.kind = CG_SCHED_STEP;
    o.schedule.step_size = 2;
    o.schedule.gamma = 0.7;
    cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    CGT_OK(cg_model_compile(m, &o, &l, 0));
    return m;
}

/* every state-dict tensor, the optimizer's step count and the dropout stream: equal bits */
static void assert_same_model(cg_model *a, cg_model *b, const char *what) {
    cgt_assert_same_state(a, b, what);
    ck_assert_int_eq(cg_optimizer_steps(cg_model_optimizer(a)), cg_optimizer_steps(cg_model_optimizer(b)));
    ck_assert_uint_eq(cg_model_rng(a).offset, cg_model_rng(b).offset);
}

/* Batches b0 .. b1-1 through g (model m) and through cg_model_train_step (ref), then a sync:
 * the same last loss, the same model. */
static void steps_match(cg_step_graph *g, cg_model *ref, cg_model *m, cg_tensor **x, cg_tensor **y, int b0, int b1,
                        const char *what) {
    double lref = 0, lg = 0;
    for (int b = b0; b < b1; b++) {
        CGT_OK(cg_step_graph_run(g, x[b], y[b]));
        CGT_OK(cg_model_train_step(ref, x[b], y[b], &lref));
    }
    CGT_OK(cg_step_graph_sync(g, &lg));
    ck_assert_msg(lg == lref, "%s: last loss %.17g, cg_model_train_step's %.17g", what, lg, lref);
    assert_same_model(ref, m, what);
}

/* cg_step_graph computes what cg_model_train_step computes, bit for bit: on the GPU one
 * ordinary step, then a recorded CUDA graph replayed with each step's learning rate, bias
 * corrections and dropout stream (and an ordinary step for a last, shorter batch); on the
 * CPU every step is an ordinary one. A NaN in batch 6 of 7 queued steps: the sync names
 * step 6, and the model is the reference's after 5 steps (the failing step and the one
 * queued after it took back: parameters, BatchNorm statistics and counters, optimizer,
 * dropout stream); the steps after the sync match again, and so do those after both
 * models were compiled again (a new optimizer: one ordinary step, then a new recording, also
 * when a step failed before the new optimizer's first update).
 * With CGEMU_CAPTURE_REFUSE set (the emulator's ctests test_gpu_emu_lt_half and
 * test_gpu_emu_refuse_end) every recording fails, and every step is an ordinary one, with the
 * same bits. */
START_TEST(step_graph_matches_train_step) {
    cgt_rand r = cgt_rand_make("step graph");
    enum { NB = 9 };
    int64_t rows[NB] = {16, 16, 16, 16, 16, 16, 16, 16, 7};
    double *xv[NB], *yv[NB];
    for (int b = 0; b < NB; b++) {
        xv[b] = randn_arr(&r, rows[b] * 12, 0, 1);
        yv[b] = malloc((size_t)rows[b] * sizeof *yv[b]);
        for (int64_t i = 0; i < rows[b]; i++) yv[b][i] = (double)((i * 7 + b) % 5), xv[b][i * 12 + i % 5] += 1.5;
    }
    for (int dv = 0; dv < 2; dv++)
        for (int sgd = 0; sgd < 2; sgd++)
            for (int bad = 0; bad < 2; bad++) {
                cg_device dev = dv ? GPU : CG_CPU;
                const char *refuse = getenv("CGEMU_CAPTURE_REFUSE");
                int graphs = cg__backend(dev)->graph_begin != NULL, refused = graphs && refuse && *refuse;
                double nan_at = xv[5][3];
                if (bad) xv[5][3] = NAN;
                cg_tensor *x[NB], *y[NB];
                for (int b = 0; b < NB; b++) {
                    int64_t s[2] = {rows[b], 12};
                    x[b] = cgt_tensor(xv[b], s, 2, CG_F32, CG_CPU); /* uploaded by each step, as fit's would be */
                    y[b] = cgt_tensor(yv[b], &rows[b], 1, CG_I64, dev);
                }
                cg_model *ref = graph_model(dev, sgd), *m = graph_model(dev, sgd);
                cg_step_graph *g;
                CGT_OK(cg_step_graph_create(m, &g));
                if (bad) {
                    double lref = 0, lg = 0;
                    for (int b = 0; b < 7; b++) {
                        CGT_OK(cg_step_graph_run(g, x[b], y[b]));
                        if (b < 5) CGT_OK(cg_model_train_step(ref, x[b], y[b], &lref));
                        if (b == 5)
                            CGT_FAILS(cg_model_train_step(ref, x[b], y[b], &lref), CG_E_NUMERIC, "nothing was updated");
                    }
                    CGT_FAILS(cg_step_graph_sync(g, &lg), CG_E_NUMERIC, "step 6 of 7 since the last sync");
                    assert_same_model(ref, m, "after the failed sync");
                    steps_match(g, ref, m, x, y, 6, NB, "after the short batch");
                } else {
                    steps_match(g, ref, m, x, y, 0, 7, "after 7 steps");
                    steps_match(g, ref, m, x, y, 7, NB, "after the short batch");
                }
                cg_step_graph_stats st;
                CGT_OK(cg_step_graph_stats_get(g, &st));
                ck_assert_int_eq(st.steps, bad ? 10 : 9);
                if (graphs && !refused) { /* the first and the short batch ran as ordinary steps */
                    ck_assert_msg(st.recorded && st.replays == st.steps - 2, "replays %lld of %lld steps (%s)",
                                  (long long)st.replays, (long long)st.steps, st.why_not);
                } else {
                    ck_assert_int_eq(st.replays, 0);
                    ck_assert(!st.recorded);
                    ck_assert_msg(graphs ? st.why_not[0] != 0 : strstr(st.why_not, "has no graphs") != NULL,
                                  "why not: %s", st.why_not);
                }
                /* labels that do not match the batch: both fail before the update and take back what the
                   forward changed (BatchNorm statistics and counter, dropout stream) */
                int64_t wrong = 15;
                cg_tensor *yw = cgt_tensor(yv[0], &wrong, 1, CG_I64, dev);
                CGT_FAILS(cg_step_graph_run(g, x[0], yw), CG_E_SHAPE, "15");
                CGT_FAILS(cg_model_train_step(ref, x[0], yw, NULL), CG_E_SHAPE, "15");
                cg_tensor_release(yw);
                assert_same_model(ref, m, "after a failed step");
                /* then a good step and a NaN one: the sync names the NaN step, the failed one not counted */
                double *nanv = malloc(16 * 12 * sizeof *nanv);
                memcpy(nanv, xv[2], 16 * 12 * sizeof *nanv);
                nanv[7] = NAN;
                int64_t s16[2] = {16, 12};
                cg_tensor *xnan = cgt_tensor(nanv, s16, 2, CG_F32, CG_CPU);
                CGT_OK(cg_step_graph_run(g, x[1], y[1]));
                CGT_OK(cg_model_train_step(ref, x[1], y[1], NULL));
                CGT_OK(cg_step_graph_run(g, xnan, y[2]));
                CGT_FAILS(cg_model_train_step(ref, xnan, y[2], NULL), CG_E_NUMERIC, "nothing was updated");
                CGT_FAILS(cg_step_graph_sync(g, NULL), CG_E_NUMERIC, "step 2 of 2 since the last sync");
                assert_same_model(ref, m, "after a failed, a good and a NaN step");
                cg_tensor_release(xnan);
                free(nanv);
                /* a new dropout seed: one ordinary step, then recorded again (the kernels take the seed) */
                cg_model_set_rng(m, cg_rng_make(99));
                cg_model_set_rng(ref, cg_rng_make(99));
                steps_match(g, ref, m, x, y, 0, 3, "after a new dropout seed");
                /* compiled again: a new optimizer; its first step is ordinary, then recorded again */
                cg_optim_config o = *cg_optimizer_config(cg_model_optimizer(m));
                cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
                CGT_OK(cg_model_compile(m, &o, &l, 0));
                CGT_OK(cg_model_compile(ref, &o, &l, 0));
                /* a step that fails before the new optimizer's first update: still no state to record
                   with, so the next step is an ordinary one too */
                yw = cgt_tensor(yv[0], &wrong, 1, CG_I64, dev);
                CGT_FAILS(cg_step_graph_run(g, x[0], yw), CG_E_SHAPE, "15");
                CGT_FAILS(cg_model_train_step(ref, x[0], yw, NULL), CG_E_SHAPE, "15");
                cg_tensor_release(yw);
                steps_match(g, ref, m, x, y, 0, 4, "after compiling again");
                cg_step_graph_stats st2;
                CGT_OK(cg_step_graph_stats_get(g, &st2));
                /* 2 (the good and the NaN step) + 2 (new seed) + 3 (compiled again) */
                ck_assert_int_eq(st2.replays - st.replays, graphs && !refused ? 7 : 0);
                cg_step_graph_free(g);
                cg_model_free(ref), cg_model_free(m);
                for (int b = 0; b < NB; b++) cg_tensor_release(x[b]), cg_tensor_release(y[b]);
                xv[5][3] = nan_at;
            }
    for (int b = 0; b < NB; b++) free(xv[b]), free(yv[b]);
}
END_TEST

/* Batches written into the step graph's own inputs (cg_step_graph_inputs) and run from
 * there, without a copy, train as batches passed in: the same bits as cg_model_train_step;
 * on the GPU every step after the first replays. Steps with other tensors in between still
 * copy into the inputs, and the inputs keep what was written into them. A first step that
 * fails fixes no shapes. */
START_TEST(step_graph_static_inputs) {
    cgt_rand r = cgt_rand_make("step graph inputs");
    enum { NB = 6 };
    int64_t s16[2] = {16, 12}, n16 = 16;
    double *xv[NB], *yv[NB];
    for (int b = 0; b < NB; b++) {
        xv[b] = randn_arr(&r, 16 * 12, 0, 1);
        yv[b] = malloc(16 * sizeof *yv[b]);
        for (int64_t i = 0; i < 16; i++) yv[b][i] = (double)((i * 3 + b) % 5), xv[b][i * 12 + i % 5] += 1.5;
    }
    for (int dv = 0; dv < 2; dv++) {
        cg_device dev = dv ? GPU : CG_CPU;
        const char *refuse = getenv("CGEMU_CAPTURE_REFUSE");
        int graphs = cg__backend(dev)->graph_begin != NULL && !(refuse && *refuse);
        cg_tensor *x[NB], *y[NB];
        for (int b = 0; b < NB; b++) {
            x[b] = cgt_tensor(xv[b], s16, 2, CG_F32, CG_CPU);
            y[b] = cgt_tensor(yv[b], &n16, 1, CG_I64, CG_CPU);
        }
        cg_model *ref = graph_model(dev, 0), *m = graph_model(dev, 0);
        cg_step_graph *g;
        CGT_OK(cg_step_graph_create(m, &g));
        cg_tensor *xs = NULL, *ys = NULL;
        CGT_FAILS(cg_step_graph_inputs(g, &xs, &ys), CG_E_STATE, "run one step first");
        ck_assert(xs == NULL && ys == NULL);
        /* a first step that fails (labels for 15 rows) fixes no shapes: the inputs still wait
           for one that succeeds, and the batches of 16 are recorded */
        int64_t n15 = 15;
        cg_tensor *y15 = cgt_tensor(yv[0], &n15, 1, CG_I64, CG_CPU);
        CGT_FAILS(cg_step_graph_run(g, x[0], y15), CG_E_SHAPE, "15");
        CGT_FAILS(cg_model_train_step(ref, x[0], y15, NULL), CG_E_SHAPE, "15");
        cg_tensor_release(y15);
        CGT_FAILS(cg_step_graph_inputs(g, &xs, &ys), CG_E_STATE, "the first that succeeds");
        double lref = 0, lg = 0;
        CGT_OK(cg_step_graph_run(g, x[0], y[0]));
        CGT_OK(cg_model_train_step(ref, x[0], y[0], &lref));
        CGT_OK(cg_step_graph_inputs(g, &xs, &ys));
        ck_assert(xs && ys);
        ck_assert_int_eq(cg_tensor_ndim(xs), 2);
        ck_assert_int_eq(cg_tensor_shape(xs)[0], 16);
        ck_assert_int_eq(cg_tensor_shape(xs)[1], 12);
        ck_assert_int_eq(cg_tensor_dtype(xs), CG_F32);
        ck_assert_int_eq(cg_tensor_dtype(ys), CG_I64);
        ck_assert(cg__same_device(cg_tensor_device(xs), dev) && cg__same_device(cg_tensor_device(ys), dev));
        for (int b = 1; b < NB; b++) {
            if (b == 3) { /* passed in: copied into the inputs */
                CGT_OK(cg_step_graph_run(g, x[b], y[b]));
            } else {
                CGT_OK(cg_tensor_copy_(xs, x[b]));
                CGT_OK(cg_tensor_copy_(ys, y[b]));
                CGT_OK(cg_step_graph_run(g, xs, ys));
            }
            CGT_OK(cg_model_train_step(ref, x[b], y[b], &lref));
        }
        CGT_OK(cg_step_graph_sync(g, &lg));
        ck_assert_msg(lg == lref, "last loss %.17g, cg_model_train_step's %.17g", lg, lref);
        assert_same_model(ref, m, "after steps on the static inputs");
        double *got = cgt_read(xs); /* the last batch written, untouched by the steps */
        for (int64_t i = 0; i < 16 * 12; i++)
            ck_assert_msg(got[i] == cgt_round_to(xv[NB - 1][i], CG_F32), "static x[%lld] = %.9g, written %.9g",
                          (long long)i, got[i], xv[NB - 1][i]);
        free(got);
        cg_step_graph_stats st;
        CGT_OK(cg_step_graph_stats_get(g, &st));
        ck_assert_int_eq(st.steps, NB);
        ck_assert_int_eq(st.replays, graphs ? NB - 1 : 0);
        cg_step_graph_free(g);
        cg_model_free(ref), cg_model_free(m);
        for (int b = 0; b < NB; b++) cg_tensor_release(x[b]), cg_tensor_release(y[b]);
    }
    for (int b = 0; b < NB; b++) free(xv[b]), free(yv[b]);
}
END_TEST

/* fit on the GPU replays its recorded step (cg_epoch_logs.replayed) and computes what it
 * computes without graphs (cg_fit_config.no_graphs): the same bits in every state-dict
 * tensor, loss and accuracy, with BatchNorm, dropout, AdamW with clipping and a schedule,
 * shuffled batches and a short last batch. */
START_TEST(fit_graphs_match_ordinary_steps) {
    cgt_rand r = cgt_rand_make("fit graphs");
    int64_t n = 100, shape[2] = {100, 12};
    double *xv = randn_arr(&r, n * 12, 0, 1), *yv = malloc((size_t)n * sizeof *yv);
    for (int64_t i = 0; i < n; i++) yv[i] = (double)(i % 5), xv[i * 12 + i % 5] += 1.5;
    cg_tensor *x = cgt_tensor(xv, shape, 2, CG_F32, CG_CPU), *y = cgt_tensor(yv, &n, 1, CG_I64, CG_CPU);
    const char *refuse = getenv("CGEMU_CAPTURE_REFUSE");
    int graphs = cg__backend(GPU)->graph_begin != NULL && !(refuse && *refuse);
    cg_model *m[2];
    cg_epoch_logs logs[2][2];
    for (int off = 0; off < 2; off++) {
        m[off] = graph_model(GPU, 0);
        cg_optim_config o = *cg_optimizer_config(cg_model_optimizer(m[off]));
        cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
        CGT_OK(cg_model_compile(m[off], &o, &l, CG_METRIC_ACCURACY));
        cg_fit_config fc = cg_fit_config_default();
        fc.epochs = 2;
        fc.batch_size = 16;
        fc.verbose = CG_VERBOSE_QUIET;
        fc.no_graphs = off;
        cg_history *h = NULL;
        CGT_OK(cg_model_fit(m[off], x, y, &fc, &h));
        for (int e = 0; e < 2; e++) logs[off][e] = *cg_history_at(h, e);
        cg_history_free(h);
    }
    for (int e = 0; e < 2; e++) {
        ck_assert_msg(logs[0][e].loss == logs[1][e].loss, "epoch %d loss %.17g, without graphs %.17g", e,
                      logs[0][e].loss, logs[1][e].loss);
        ck_assert(logs[0][e].accuracy == logs[1][e].accuracy);
        ck_assert_int_eq(logs[1][e].replayed, 0);
        /* 6 batches of 16 and one of 4: all but the first step and the short batches replay */
        ck_assert_int_eq(logs[0][e].replayed, graphs ? 5 + e : 0);
    }
    cgt_assert_same_state(m[0], m[1], "fit with and without graphs");
    cg_model_free(m[0]), cg_model_free(m[1]);
    cg_tensor_release(x), cg_tensor_release(y);
    free(xv), free(yv);
}
END_TEST

void gpu_add_training(TCase *ops, TCase *large) {
    (void)large;
    tcase_add_test(ops, optimizers_match_cpu);
    tcase_add_test(ops, gated_optimizer_matches_cpu);
    tcase_add_test(ops, accuracy_count_matches_cpu);
    tcase_add_test(ops, fit_matches_cpu_and_rolls_back);
    tcase_add_test(ops, fit_restores_batchnorm_like_cpu);
    tcase_add_test(ops, predict_threads_match_one_thread);
    tcase_add_test(ops, fit_bad_label_like_cpu);
    tcase_add_test(ops, step_graph_matches_train_step);
    tcase_add_test(ops, step_graph_static_inputs);
    tcase_add_test(ops, fit_graphs_match_ordinary_steps);
}
