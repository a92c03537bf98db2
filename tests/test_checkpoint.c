/* Checkpoints: weights + optimizer state + RNG + epoch/step in one safetensors file; resuming
 * continues exactly (bit-identical on the CPU to an uninterrupted run), by steps and by fit
 * epochs; a different architecture is refused. */
#define _POSIX_C_SOURCE 200809L /* unlink */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgrad/train.h"
#include "cgt.h"

static cg_model *net(uint64_t seed, cg_optim_type kind) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, seed, &m));
    CGT_OK(cg_model_add_dense(m, 10, 24, CG_ACT_RELU));
    CGT_OK(cg_model_add_batchnorm1d(m, 24, 0, 0));
    CGT_OK(cg_model_add_dropout(m, 0.3));
    CGT_OK(cg_model_add_dense(m, 24, 4, CG_ACT_NONE));
    cg_optim_config o = kind == CG_SGD ? cg_optim_sgd(0.05, 0.9, 1, 1e-3) : cg_optim_adamw(3e-3, 1e-2);
    o.schedule = (cg_lr_schedule){.kind = CG_SCHED_COSINE, .warmup = 3, .total = 20};
    o.clip_norm = 5.0;
    cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    l.label_smoothing = 0.1;
    CGT_OK(cg_model_compile(m, &o, &l, CG_METRIC_ACCURACY));
    return m;
}

static void data(cg_tensor **x, cg_tensor **y) {
    cgt_rand r = cgt_rand_make("ckpt-data");
    int64_t s[2] = {160, 10};
    *x = cgt_randn(&r, s, 2, CG_F32, CG_CPU);
    double yv[160];
    for (int i = 0; i < 160; i++) yv[i] = (double)cgt_randint(&r, 0, 4);
    int64_t n = 160;
    *y = cgt_tensor(yv, &n, 1, CG_I64, CG_CPU);
}

static void steps(cg_model *m, const cg_tensor *x, const cg_tensor *y, int from, int to) {
    for (int s = from; s < to; s++) {
        cg_tensor *xb, *yb;
        int64_t a = (s * 32) % 160;
        CGT_OK(cg_slice_rows(x, a, a + 32, &xb));
        CGT_OK(cg_slice_rows(y, a, a + 32, &yb));
        double loss;
        CGT_OK(cg_model_train_step(m, xb, yb, &loss));
        ck_assert(isfinite(loss));
        cg_tensor_release(xb), cg_tensor_release(yb);
    }
}

static void assert_same_state(cg_model *a, cg_model *b) {
    cg_state_dict *sa, *sb;
    CGT_OK(cg_model_state_dict(a, &sa));
    CGT_OK(cg_model_state_dict(b, &sb));
    ck_assert_int_eq(cg_state_dict_count(sa), cg_state_dict_count(sb));
    for (size_t i = 0; i < cg_state_dict_count(sa); i++) {
        cg_tensor *ta = cg_state_dict_tensor_at(sa, i), *tb = cg_state_dict_get(sb, cg_state_dict_name_at(sa, i));
        ck_assert_ptr_nonnull(tb);
        double *u = cgt_read(ta), *v = cgt_read(tb);
        ck_assert_msg(memcmp(u, v, (size_t)cg_tensor_numel(ta) * sizeof *u) == 0, "%s differs",
                      cg_state_dict_name_at(sa, i));
        free(u), free(v);
    }
    cg_state_dict_free(sa), cg_state_dict_free(sb);
}

static void resume_by_steps(cg_optim_type kind) {
    cg_tensor *x, *y;
    data(&x, &y);
    enum { N = 7, M = 6 };
    cg_model *ref = net(5, kind);
    steps(ref, x, y, 0, N + M);

    cg_model *a = net(5, kind);
    steps(a, x, y, 0, N);
    char path[64];
    cgt_temp_file(path);
    cg_checkpoint_info info = {.epoch = 0, .step = N};
    const char *extra[2] = {"run", "resume-test"};
    CGT_OK(cg_checkpoint_save(path, a, &info, extra, 1));
    cg_model_free(a);

    cg_model *b = net(999, kind); /* another seed: everything must come from the file */
    cg_checkpoint_info got = {0};
    CGT_OK(cg_checkpoint_load(path, b, &got));
    ck_assert_int_eq(got.step, N);
    ck_assert_int_eq(cg_optimizer_steps(cg_model_optimizer(b)), N);
    steps(b, x, y, N, N + M);
    assert_same_state(ref, b);
    ck_assert(cg_model_rng(ref).offset == cg_model_rng(b).offset);

    /* the file is plain safetensors with the documented names and metadata */
    cg_state_dict *sd;
    CGT_OK(cg_safetensors_load(path, CG_CPU, &sd));
    ck_assert_ptr_nonnull(cg_state_dict_get(sd, "0.weight"));
    ck_assert_ptr_nonnull(cg_state_dict_get(sd, "2.num_batches_tracked"));
    ck_assert_ptr_nonnull(cg_state_dict_get(sd, kind == CG_SGD ? "optimizer.momentum_buffer" : "optimizer.exp_avg"));
    ck_assert_str_eq(cg_state_dict_get_meta(sd, "run"), "resume-test");
    ck_assert_str_eq(cg_state_dict_get_meta(sd, "train.step"), "7");
    ck_assert_ptr_nonnull(cg_state_dict_get_meta(sd, "rng.offset"));
    ck_assert_ptr_nonnull(cg_state_dict_get_meta(sd, "cgrad.arch"));
    cg_state_dict_free(sd);
    unlink(path);
    cg_model_free(ref), cg_model_free(b);
    cg_tensor_release(x), cg_tensor_release(y);
}

START_TEST(resume_by_steps_adamw) { resume_by_steps(CG_ADAMW); }
END_TEST

START_TEST(resume_by_steps_sgd_nesterov) { resume_by_steps(CG_SGD); }
END_TEST

START_TEST(resume_fit_by_epochs) {
    cg_tensor *x, *y;
    data(&x, &y);
    cg_fit_config fc = cg_fit_config_default();
    fc.batch_size = 24;
    fc.validation_split = 0.2;
    fc.verbose = CG_VERBOSE_QUIET;
    fc.epochs = 5;
    cg_model *ref = net(8, CG_ADAMW);
    CGT_OK(cg_model_fit(ref, x, y, &fc, NULL));

    char path[64];
    cgt_temp_file(path);
    cg_model *a = net(8, CG_ADAMW);
    fc.epochs = 2;
    fc.checkpoint_path = path; /* written after every epoch */
    CGT_OK(cg_model_fit(a, x, y, &fc, NULL));
    cg_model_free(a);

    cg_model *b = net(1, CG_ADAMW);
    cg_checkpoint_info info;
    CGT_OK(cg_checkpoint_load(path, b, &info));
    ck_assert_int_eq(info.epoch, 2);
    fc.epochs = 5;
    fc.initial_epoch = info.epoch;
    fc.checkpoint_path = NULL;
    cg_history *h;
    CGT_OK(cg_model_fit(b, x, y, &fc, &h));
    ck_assert_int_eq(cg_history_count(h), 3);
    ck_assert_int_eq(cg_history_at(h, 0)->epoch, 2);
    assert_same_state(ref, b);
    cg_history_free(h);
    unlink(path);
    cg_model_free(ref), cg_model_free(b);
    cg_tensor_release(x), cg_tensor_release(y);
}
END_TEST

START_TEST(wrong_architecture_or_file_is_refused) {
    cg_model *a = net(1, CG_ADAMW);
    char path[64];
    cgt_temp_file(path);
    CGT_OK(cg_checkpoint_save(path, a, NULL, NULL, 0));
    cg_model *b;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 1, &b));
    CGT_OK(cg_model_add_dense(b, 10, 4, CG_ACT_NONE));
    CGT_FAILS(cg_checkpoint_load(path, b, NULL), CG_E_FORMAT, "architecture", path);
    /* plain weights are not a checkpoint */
    CGT_OK(cg_model_save(b, path));
    CGT_FAILS(cg_checkpoint_load(path, b, NULL), CG_E_FORMAT, "not a cgrad checkpoint");
    /* an optimizer of another kind is refused before anything changes */
    CGT_OK(cg_checkpoint_save(path, a, NULL, NULL, 0));
    cg_model *c = net(1, CG_SGD);
    double *before = cgt_read(cg_model_flat_params(c));
    CGT_FAILS(cg_checkpoint_load(path, c, NULL), CG_E_FORMAT, "adamw");
    double *after = cgt_read(cg_model_flat_params(c));
    ck_assert(memcmp(before, after, (size_t)cg_tensor_numel(cg_model_flat_params(c)) * sizeof *before) == 0);
    free(before), free(after);
    unlink(path);
    cg_model_free(a), cg_model_free(b), cg_model_free(c);
}
END_TEST

/* the architecture string of a deep model does not fit a fixed buffer: it is sized to fit */
START_TEST(deep_model_saves_loads_and_checkpoints) {
    cg_model *a;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 5, &a));
    for (int i = 0; i < 60; i++) {
        CGT_OK(cg_model_add_linear(a, 16, 16, 1, CG_INIT_AUTO));
        CGT_OK(cg_model_add_activation(a, CG_ACT_RELU, 0));
    }
    CGT_OK(cg_model_build(a));
    char small[16];
    CGT_FAILS(cg_model_arch(a, small, sizeof small), CG_E_INVALID, "buffer too small");
    char path[64];
    cgt_temp_file(path);
    CGT_OK(cg_model_save(a, path));
    cg_model *b;
    CGT_OK(cg_model_load(path, CG_CPU, &b));
    assert_same_state(a, b);
    CGT_OK(cg_checkpoint_save(path, a, NULL, NULL, 0));
    cg_model *c;
    CGT_OK(cg_model_create(CG_CPU, CG_F32, 99, &c));
    for (int i = 0; i < 60; i++) {
        CGT_OK(cg_model_add_linear(c, 16, 16, 1, CG_INIT_AUTO));
        CGT_OK(cg_model_add_activation(c, CG_ACT_RELU, 0));
    }
    CGT_OK(cg_model_build(c));
    CGT_OK(cg_checkpoint_load(path, c, NULL));
    assert_same_state(a, c);
    unlink(path);
    cg_model_free(a), cg_model_free(b), cg_model_free(c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("checkpoint");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, resume_by_steps_adamw);
    tcase_add_test(tc, resume_by_steps_sgd_nesterov);
    tcase_add_test(tc, resume_fit_by_epochs);
    tcase_add_test(tc, wrong_architecture_or_file_is_refused);
    tcase_add_test(tc, deep_model_saves_loads_and_checkpoints);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
