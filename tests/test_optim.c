/* Optimizers against hand-computed steps (SGD, momentum, Nesterov, Adam bias correction,
 * Adam L2 vs AdamW decoupled decay), a float64 reference over random multi-step runs,
 * learning-rate schedules, clipping, and the model optimizer's single flat update. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cgrad/optim.h"
#include "cgt.h"

/* one f64 parameter vector with a fixed gradient buffer */
typedef struct fixture {
    cg_tensor *p, *g;
    cg_optimizer *o;
} fixture;

static fixture make(const double *p0, const double *g0, int64_t n, cg_dtype dt, const cg_optim_config *cfg) {
    fixture f;
    f.p = cgt_tensor(p0, &n, 1, dt, CG_CPU);
    f.g = cgt_tensor(g0, &n, 1, dt, CG_CPU);
    CGT_OK(cg_tensor_set_requires_grad(f.p, 1));
    CGT_OK(cg_tensor_set_grad(f.p, f.g));
    CGT_OK(cg_optimizer_create_params(&f.p, 1, cfg, &f.o));
    return f;
}

static void done(fixture *f) {
    cg_optimizer_free(f->o);
    cg_tensor_release(f->p);
    cg_tensor_release(f->g);
}

static double val(const cg_tensor *t, int i) {
    double *v = cgt_read(t);
    double r = v[i];
    free(v);
    return r;
}

START_TEST(sgd_plain_and_weight_decay) {
    double p0 = 1.0, g0 = 0.5;
    cg_optim_config c = cg_optim_sgd(0.1, 0, 0, 0);
    fixture f = make(&p0, &g0, 1, CG_F64, &c);
    CGT_OK(cg_optimizer_step(f.o));
    CGT_ASSERT_CLOSE(val(f.p, 0), 0.95, 1e-15); /* 1 - 0.1*0.5 */
    done(&f);
    c = cg_optim_sgd(0.1, 0, 0, 0.1); /* g = 0.5 + 0.1*1 = 0.6 */
    f = make(&p0, &g0, 1, CG_F64, &c);
    CGT_OK(cg_optimizer_step(f.o));
    CGT_ASSERT_CLOSE(val(f.p, 0), 0.94, 1e-15);
    done(&f);
}
END_TEST

START_TEST(sgd_momentum_two_steps) {
    double p0 = 1.0, g0 = 0.5;
    cg_optim_config c = cg_optim_sgd(0.1, 0.9, 0, 0);
    fixture f = make(&p0, &g0, 1, CG_F64, &c);
    CGT_OK(cg_optimizer_step(f.o)); /* buf = 0.5, p = 0.95 */
    CGT_ASSERT_CLOSE(val(f.p, 0), 0.95, 1e-15);
    CGT_OK(cg_optimizer_step(f.o)); /* buf = 0.9*0.5 + 0.5 = 0.95, p = 0.95 - 0.095 */
    CGT_ASSERT_CLOSE(val(f.p, 0), 0.855, 1e-15);
    ck_assert_int_eq(cg_optimizer_steps(f.o), 2);
    done(&f);
}
END_TEST

START_TEST(sgd_nesterov_two_steps) {
    double p0 = 1.0, g0 = 0.5;
    cg_optim_config c = cg_optim_sgd(0.1, 0.9, 1, 0);
    fixture f = make(&p0, &g0, 1, CG_F64, &c);
    CGT_OK(cg_optimizer_step(f.o)); /* buf = 0.5, g = 0.5 + 0.9*0.5 = 0.95, p = 0.905 */
    CGT_ASSERT_CLOSE(val(f.p, 0), 0.905, 1e-15);
    CGT_OK(cg_optimizer_step(f.o)); /* buf = 0.95, g = 0.5 + 0.855 = 1.355, p = 0.7695 */
    CGT_ASSERT_CLOSE(val(f.p, 0), 0.7695, 1e-15);
    done(&f);
    /* Nesterov without momentum is refused, as in PyTorch */
    cg_optimizer *o = NULL;
    c = cg_optim_sgd(0.1, 0, 1, 0);
    cg_tensor *p = f.p;
    (void)p;
    int64_t n = 1;
    cg_tensor *t = cgt_tensor(&p0, &n, 1, CG_F64, CG_CPU);
    CGT_OK(cg_tensor_set_requires_grad(t, 1));
    CGT_FAILS(cg_optimizer_create_params(&t, 1, &c, &o), CG_E_INVALID, "Nesterov");
    cg_tensor_release(t);
}
END_TEST

START_TEST(adam_bias_correction) {
    /* step 1: m = 0.05, v = 0.00025, m^ = 0.5, v^ = 0.25: p = 1 - 0.1 * 0.5 / (0.5 + 1e-8) */
    double p0 = 1.0, g0 = 0.5;
    cg_optim_config c = cg_optim_adam(0.1);
    fixture f = make(&p0, &g0, 1, CG_F64, &c);
    CGT_OK(cg_optimizer_step(f.o));
    double p1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8);
    CGT_ASSERT_CLOSE(val(f.p, 0), p1, 1e-15);
    /* step 2, same gradient: m = 0.095, v = 0.00049975; m^ = 0.095/0.19 = 0.5, v^ = 0.00049975/0.001999 = 0.25 */
    CGT_OK(cg_optimizer_step(f.o));
    double m2 = 0.095, v2 = 0.999 * 0.00025 + 0.001 * 0.25;
    double p2 = p1 - 0.1 * (m2 / (1 - 0.81)) / (sqrt(v2 / (1 - 0.998001)) + 1e-8);
    CGT_ASSERT_CLOSE(val(f.p, 0), p2, 1e-15);
    CGT_ASSERT_CLOSE(val(f.p, 0), 0.8, 1e-7);
    done(&f);
}
END_TEST

START_TEST(adam_l2_versus_adamw_decoupled) {
    double p0 = 1.0, g0 = 0.5;
    /* Adam with weight decay adds wd*p to the gradient: g = 0.6, the first bias-corrected step is still lr */
    cg_optim_config c = cg_optim_adam(0.1);
    c.weight_decay = 0.1;
    fixture f = make(&p0, &g0, 1, CG_F64, &c);
    CGT_OK(cg_optimizer_step(f.o));
    CGT_ASSERT_CLOSE(val(f.p, 0), 1.0 - 0.1 * 0.6 / (0.6 + 1e-8), 1e-15);
    done(&f);
    /* AdamW: p *= 1 - lr*wd = 0.99 first, then the Adam step of the raw gradient */
    c = cg_optim_adamw(0.1, 0.1);
    f = make(&p0, &g0, 1, CG_F64, &c);
    CGT_OK(cg_optimizer_step(f.o));
    CGT_ASSERT_CLOSE(val(f.p, 0), 0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-15);
    done(&f);
    /* the chapter's worked decay (14.12): w = 4, lr 0.1, wd 0.01, zero gradient -> 3.996 */
    double w = 4.0, zero = 0.0;
    c = cg_optim_adamw(0.1, 0.01);
    f = make(&w, &zero, 1, CG_F64, &c);
    CGT_OK(cg_optimizer_step(f.o));
    CGT_ASSERT_CLOSE(val(f.p, 0), 3.996, 1e-12);
    done(&f);
}
END_TEST

/* float64 reference of all three over 5 steps with changing random gradients */
static void reference(const cg_optim_config *c, double *p, const double *g, double *m, double *v, int64_t n, int step,
                      double lr) {
    for (int64_t i = 0; i < n; i++) {
        double gi = g[i];
        if (c->type == CG_SGD) {
            gi += c->weight_decay * p[i];
            if (c->momentum != 0) {
                m[i] = step == 1 ? gi : c->momentum * m[i] + (1 - c->dampening) * gi;
                gi = c->nesterov ? gi + c->momentum * m[i] : m[i];
            }
            p[i] -= lr * gi;
        } else {
            if (c->type == CG_ADAMW) p[i] *= 1 - lr * c->weight_decay;
            else gi += c->weight_decay * p[i];
            m[i] = c->beta1 * m[i] + (1 - c->beta1) * gi;
            v[i] = c->beta2 * v[i] + (1 - c->beta2) * gi * gi;
            double mh = m[i] / (1 - pow(c->beta1, step)), vh = v[i] / (1 - pow(c->beta2, step));
            p[i] -= lr * mh / (sqrt(vh) + c->eps);
        }
    }
}

static void random_run(cg_optim_config c, cg_dtype dt, const char *tag) {
    cgt_rand r = cgt_rand_make(tag);
    enum { N = 37 };
    double p[N], g[N], m[N] = {0}, v[N] = {0};
    for (int i = 0; i < N; i++) p[i] = cgt_normal(&r), g[i] = cgt_normal(&r);
    cgt_round_array(p, N, dt);
    cgt_round_array(g, N, dt);
    fixture f = make(p, g, N, dt, &c);
    for (int s = 1; s <= 5; s++) {
        for (int i = 0; i < N; i++) g[i] = cgt_round_to(cgt_normal(&r), dt);
        int64_t n = N;
        cg_tensor *gt = cgt_tensor(g, &n, 1, dt, CG_CPU);
        CGT_OK(cg_tensor_copy_(f.g, gt));
        cg_tensor_release(gt);
        double lr = cg_optimizer_lr(f.o);
        CGT_OK(cg_optimizer_step(f.o));
        reference(&c, p, g, m, v, N, s, lr);
        if (dt == CG_F32) cgt_round_array(p, N, dt); /* the kernel stores parameters in f32 each step */
    }
    double *got = cgt_read(f.p);
    CGT_ASSERT_CLOSE_ARR(got, p, N, cgt_tol_scaled(cgt_tol_for(dt), dt == CG_F32 ? 10 : 1), tag);
    ck_assert(cgt_all_finite(got, N));
    free(got);
    done(&f);
}

START_TEST(random_steps_match_reference) {
    cg_optim_config c = cg_optim_sgd(0.05, 0.9, 0, 1e-2);
    random_run(c, CG_F64, "sgd-momentum");
    c.nesterov = 1;
    random_run(c, CG_F64, "sgd-nesterov");
    c = cg_optim_sgd(0.05, 0.8, 0, 0);
    c.dampening = 0.3;
    random_run(c, CG_F64, "sgd-dampening");
    c = cg_optim_adam(1e-2);
    c.weight_decay = 1e-2;
    random_run(c, CG_F64, "adam");
    random_run(cg_optim_adamw(1e-2, 0.05), CG_F64, "adamw");
    random_run(cg_optim_adamw(1e-2, 0.05), CG_F32, "adamw-f32");
    c = cg_optim_sgd(0.1, 0.9, 1, 0);
    c.schedule.kind = CG_SCHED_COSINE;
    c.schedule.total = 5;
    random_run(c, CG_F64, "sgd-cosine");
}
END_TEST

/* PyTorch counts Adam's steps per tensor: a tensor whose first gradient arrives on the
 * optimizer's third step gets the bias correction of step 1, and its step survives a
 * state-dict round trip. */
START_TEST(late_tensor_gets_its_own_step_count) {
    double a0 = 1.0, b0 = 2.0, ga = 0.5, gb = -0.25, lr = 0.1;
    int64_t one = 1;
    cg_tensor *a = cgt_tensor(&a0, &one, 1, CG_F64, CG_CPU), *b = cgt_tensor(&b0, &one, 1, CG_F64, CG_CPU);
    cg_tensor *gat = cgt_tensor(&ga, &one, 1, CG_F64, CG_CPU), *gbt = cgt_tensor(&gb, &one, 1, CG_F64, CG_CPU);
    CGT_OK(cg_tensor_set_requires_grad(a, 1));
    CGT_OK(cg_tensor_set_requires_grad(b, 1));
    CGT_OK(cg_tensor_set_grad(a, gat));
    cg_tensor *ps[2] = {a, b};
    cg_optim_config cfg = cg_optim_adam(lr);
    cg_optimizer *o;
    CGT_OK(cg_optimizer_create_params(ps, 2, &cfg, &o));
    CGT_OK(cg_optimizer_step(o)); /* b has no gradient yet: skipped */
    CGT_OK(cg_optimizer_step(o));
    ck_assert_double_eq(val(b, 0), b0);
    /* move the state through a state dict into a fresh optimizer, then b's first update */
    cg_state_dict *sd;
    CGT_OK(cg_state_dict_create(&sd));
    CGT_OK(cg_optimizer_state_dict(o, sd));
    cg_optimizer *o2;
    CGT_OK(cg_optimizer_create_params(ps, 2, &cfg, &o2));
    CGT_OK(cg_optimizer_load_state_dict(o2, sd));
    CGT_OK(cg_tensor_set_grad(b, gbt));
    CGT_OK(cg_optimizer_step(o2));
    /* Adam's first step: m = (1-b1) g, v = (1-b2) g^2, bias-corrected to g and g^2 */
    double want = b0 - lr * gb / (sqrt(gb * gb) + 1e-8);
    CGT_ASSERT_CLOSE(val(b, 0), want, 1e-12);
    ck_assert_int_eq(cg_optimizer_steps(o2), 3);
    cg_state_dict_free(sd);
    cg_optimizer_free(o);
    cg_optimizer_free(o2);
    cg_tensor *all[4] = {a, b, gat, gbt};
    for (int i = 0; i < 4; i++) cg_tensor_release(all[i]);
}
END_TEST

START_TEST(schedules) {
    cg_lr_schedule s = {.kind = CG_SCHED_STEP, .step_size = 2, .gamma = 0.5};
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 0), 0.1, 1e-15);
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 1), 0.1, 1e-15);
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 2), 0.05, 1e-15);
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 5), 0.025, 1e-15);
    s = (cg_lr_schedule){.kind = CG_SCHED_COSINE, .total = 10, .min_lr = 0};
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 0), 0.1, 1e-15);
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 5), 0.05, 1e-15);
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 10), 0.0, 1e-15);
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 20), 0.0, 1e-15);
    s.min_lr = 0.01; /* 0.01 + 0.09 * (1 + cos(pi/2)) / 2 */
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 5), 0.055, 1e-15);
    /* linear warmup over 4 units, then the schedule from its own t = 0 */
    s = (cg_lr_schedule){.kind = CG_SCHED_COSINE, .warmup = 4, .total = 10};
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 0), 0.025, 1e-15);
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 3), 0.1, 1e-15);
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 4), 0.1, 1e-15);
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.1, 9), 0.05, 1e-15);
    s = (cg_lr_schedule){.kind = CG_SCHED_CONSTANT};
    CGT_ASSERT_CLOSE(cg_lr_at(&s, 0.3, 1000), 0.3, 0);
    /* the optimizer applies it per step */
    double p0 = 0, g0 = 1;
    cg_optim_config c = cg_optim_sgd(0.1, 0, 0, 0);
    c.schedule = (cg_lr_schedule){.kind = CG_SCHED_STEP, .step_size = 1, .gamma = 0.5};
    fixture f = make(&p0, &g0, 1, CG_F64, &c);
    for (int i = 0; i < 3; i++) CGT_OK(cg_optimizer_step(f.o)); /* 0.1 + 0.05 + 0.025 */
    CGT_ASSERT_CLOSE(val(f.p, 0), -0.175, 1e-15);
    CGT_ASSERT_CLOSE(cg_optimizer_last_lr(f.o), 0.025, 1e-15);
    CGT_ASSERT_CLOSE(cg_optimizer_lr(f.o), 0.0125, 1e-15);
    done(&f);
}
END_TEST

START_TEST(clip_grad_norm_global) {
    double p0[2] = {0, 0}, g0[2] = {3, 4};
    int64_t n = 2;
    cg_tensor *p = cgt_tensor(p0, &n, 1, CG_F64, CG_CPU), *g = cgt_tensor(g0, &n, 1, CG_F64, CG_CPU);
    CGT_OK(cg_tensor_set_requires_grad(p, 1));
    CGT_OK(cg_tensor_set_grad(p, g));
    double total = 0;
    CGT_OK(cg_clip_grad_norm(&p, 1, 1.0, &total));
    CGT_ASSERT_CLOSE(total, 5.0, 1e-15);
    double k = 1.0 / (5.0 + 1e-6);
    CGT_ASSERT_CLOSE(val(g, 0), 3 * k, 1e-15);
    CGT_ASSERT_CLOSE(val(g, 1), 4 * k, 1e-15);
    /* below the threshold nothing changes */
    CGT_OK(cg_clip_grad_norm(&p, 1, 10.0, &total));
    CGT_ASSERT_CLOSE(val(g, 0), 3 * k, 1e-15);
    /* through the optimizer: clip_norm then SGD */
    cg_tensor *g_again = cgt_tensor(g0, &n, 1, CG_F64, CG_CPU);
    CGT_OK(cg_tensor_copy_(g, g_again));
    cg_tensor_release(g_again);
    cg_optim_config c = cg_optim_sgd(1.0, 0, 0, 0);
    c.clip_norm = 1.0;
    cg_optimizer *o;
    CGT_OK(cg_optimizer_create_params(&p, 1, &c, &o));
    CGT_OK(cg_optimizer_step(o));
    CGT_ASSERT_CLOSE(val(p, 1), -4 * k, 1e-15);
    CGT_ASSERT_CLOSE(cg_optimizer_last_grad_norm(o), 5.0, 1e-15);
    double gn = 0;
    CGT_OK(cg_optimizer_get_last_grad_norm(o, &gn));
    CGT_ASSERT_CLOSE(gn, 5.0, 1e-15);
    CGT_FAILS(cg_optimizer_get_last_grad_norm(o, NULL), CG_E_INVALID, "NULL");
    /* a NaN gradient is reported and leaves the parameters alone */
    double bad[2] = {NAN, 1};
    cg_tensor *bt = cgt_tensor(bad, &n, 1, CG_F64, CG_CPU);
    CGT_OK(cg_tensor_copy_(g, bt));
    CGT_FAILS(cg_optimizer_step(o), CG_E_NUMERIC, "norm");
    CGT_ASSERT_CLOSE(val(p, 1), -4 * k, 1e-15);
    cg_optimizer_free(o);
    cg_tensor_release(bt);
    cg_tensor_release(p);
    cg_tensor_release(g);
}
END_TEST

START_TEST(model_optimizer_updates_every_parameter_in_one_flat_call) {
    cg_model *m;
    CGT_OK(cg_model_create(CG_CPU, CG_F64, 7, &m));
    CGT_OK(cg_model_add_dense(m, 3, 4, CG_ACT_RELU));
    CGT_OK(cg_model_add_batchnorm1d(m, 0, 0, 0));
    CGT_OK(cg_model_add_dense(m, 4, 2, CG_ACT_NONE));
    cg_tensor *params[8];
    int np = 0;
    CGT_OK(cg_model_parameters(m, params, NULL, 8, &np));
    ck_assert_int_eq(np, 6);
    /* every gradient is a view of the flat gradient buffer: fill it, step, compare */
    cg_tensor *flat = cg_model_flat_params(m), *gflat = cg_model_flat_grads(m);
    int64_t n = cg_tensor_numel(flat);
    double *before = cgt_read(flat);
    double *g = malloc((size_t)n * sizeof *g);
    for (int64_t i = 0; i < n; i++) g[i] = 0.01 * (double)(i % 13) - 0.05;
    cg_tensor *gt = cgt_tensor(g, &n, 1, CG_F64, CG_CPU);
    CGT_OK(cg_tensor_copy_(gflat, gt));
    for (int k = 0; k < np; k++) ck_assert_ptr_nonnull(cg_tensor_grad(params[k]));
    cg_optim_config c = cg_optim_sgd(0.5, 0, 0, 0);
    cg_optimizer *o;
    CGT_OK(cg_optimizer_create(m, &c, &o));
    CGT_OK(cg_optimizer_step(o));
    double *after = cgt_read(flat);
    for (int64_t i = 0; i < n; i++) CGT_ASSERT_CLOSE(after[i], before[i] - 0.5 * g[i], 1e-15);
    /* and the views see it */
    double *w0 = cgt_read(params[0]);
    CGT_ASSERT_CLOSE(w0[0], after[0], 0);
    CGT_OK(cg_optimizer_zero_grad(o));
    double *gz = cgt_read(gflat);
    for (int64_t i = 0; i < n; i++) ck_assert(gz[i] == 0.0);
    free(before), free(after), free(g), free(w0), free(gz);
    cg_tensor_release(gt);
    cg_optimizer_free(o);
    cg_model_free(m);
}
END_TEST

START_TEST(state_dict_roundtrip) {
    double p0[3] = {1, 2, 3}, g0[3] = {0.1, -0.2, 0.3};
    cg_optim_config c = cg_optim_adam(0.01);
    fixture a = make(p0, g0, 3, CG_F64, &c), b = make(p0, g0, 3, CG_F64, &c);
    CGT_OK(cg_optimizer_step(a.o));
    CGT_OK(cg_optimizer_step(a.o));
    cg_state_dict *sd;
    CGT_OK(cg_state_dict_create(&sd));
    CGT_OK(cg_optimizer_state_dict(a.o, sd));
    ck_assert_ptr_nonnull(cg_state_dict_get(sd, "optimizer.0.exp_avg"));
    ck_assert_str_eq(cg_state_dict_get_meta(sd, "optimizer.step"), "2");
    CGT_OK(cg_optimizer_load_state_dict(b.o, sd));
    cg_no_grad_begin();
    CGT_OK(cg_tensor_copy_(b.p, a.p));
    cg_no_grad_end();
    CGT_OK(cg_optimizer_step(a.o));
    CGT_OK(cg_optimizer_step(b.o));
    double *x = cgt_read(a.p), *y = cgt_read(b.p);
    ck_assert(memcmp(x, y, 3 * sizeof *x) == 0);
    free(x), free(y);
    /* another kind is refused */
    cg_optim_config s = cg_optim_sgd(0.1, 0.9, 0, 0);
    fixture d = make(p0, g0, 3, CG_F64, &s);
    CGT_FAILS(cg_optimizer_load_state_dict(d.o, sd), CG_E_FORMAT, "adam");
    cg_state_dict_free(sd);
    done(&a), done(&b), done(&d);
}
END_TEST

/* a bad dict (negative step, a state tensor of the right size but another shape) is refused and
 * leaves the optimizer as it was: it keeps stepping exactly like an untouched twin */
START_TEST(bad_state_dict_leaves_optimizer_unchanged) {
    double p0[4] = {1, 2, 3, 4}, g0[4] = {0.1, -0.2, 0.3, -0.4}, g1[4] = {-0.5, 0.25, 0.125, 1};
    cg_optim_config c = cg_optim_adam(0.01);
    fixture a = make(p0, g0, 4, CG_F64, &c), b = make(p0, g0, 4, CG_F64, &c), o = make(p0, g1, 4, CG_F64, &c);
    for (int i = 0; i < 2; i++) {
        CGT_OK(cg_optimizer_step(a.o));
        CGT_OK(cg_optimizer_step(b.o));
    }
    for (int i = 0; i < 5; i++) CGT_OK(cg_optimizer_step(o.o)); /* different state to (not) load */
    cg_state_dict *sd;
    CGT_OK(cg_state_dict_create(&sd));
    CGT_OK(cg_optimizer_state_dict(o.o, sd));
    CGT_OK(cg_state_dict_set_meta(sd, "optimizer.step", "-3"));
    CGT_FAILS(cg_optimizer_load_state_dict(b.o, sd), CG_E_FORMAT, "negative");
    CGT_OK(cg_state_dict_set_meta(sd, "optimizer.step", "5"));
    /* exp_avg fine, exp_avg_sq 2x2 instead of 4: nothing may be replaced */
    double z[4] = {0, 0, 0, 0};
    int64_t s22[2] = {2, 2};
    cg_tensor *bad = cgt_tensor(z, s22, 2, CG_F64, CG_CPU);
    CGT_OK(cg_state_dict_set(sd, "optimizer.0.exp_avg_sq", bad));
    CGT_FAILS(cg_optimizer_load_state_dict(b.o, sd), CG_E_SHAPE, "exp_avg_sq", "(2, 2)");
    ck_assert_int_eq(cg_optimizer_steps(b.o), 2);
    for (int i = 0; i < 3; i++) {
        CGT_OK(cg_optimizer_step(a.o));
        CGT_OK(cg_optimizer_step(b.o));
    }
    double *x = cgt_read(a.p), *y = cgt_read(b.p);
    ck_assert(memcmp(x, y, 4 * sizeof *x) == 0);
    ck_assert(x[0] != p0[0]);
    free(x), free(y);
    cg_tensor_release(bad);
    cg_state_dict_free(sd);
    done(&a), done(&b), done(&o);
}
END_TEST

/* The device-side gate of an optimizer call (backend.h, cg_optim_call): a non-finite gate or
 * squared norm skips the update (nothing written); clipping inside the kernel equals clipping
 * by a separate scaling pass (cg_clip_grad_norm) and then the plain update, bit for bit, in
 * f32 and f64, for SGD with momentum and for Adam; under the threshold nothing is scaled. */
START_TEST(gated_update_skips_and_clips_like_a_separate_pass) {
    cgt_rand r = cgt_rand_make("gate");
    const cg_backend *be = cg__backend(CG_CPU);
    int64_t n = 37, one = 1;
    for (int k = 0; k < 4; k++) {
        cg_dtype dt = k % 2 ? CG_F64 : CG_F32;
        cg_optim_kind kind = k < 2 ? CG_OPTIM_SGD : CG_OPTIM_ADAM;
        double *p0 = malloc((size_t)n * sizeof *p0), *g0 = malloc((size_t)n * sizeof *g0), ss = 0;
        for (int64_t i = 0; i < n; i++) p0[i] = cgt_normal(&r), g0[i] = 3 * cgt_normal(&r);
        for (int64_t i = 0; i < n; i++) {
            double gi = dt == CG_F32 ? (double)(float)g0[i] : g0[i];
            ss += gi * gi;
        }
        double norm = sqrt(ss);
        for (int mode = 0; mode < 5; mode++) { /* 0 gate NaN, 1 norm inf, 2 clip, 3 under threshold, 4 no gate */
            double gate_v = mode == 0 ? NAN : 0.0, sq_v = mode == 1 ? INFINITY : ss;
            double clip = mode == 3 ? 2 * norm : 0.5 * norm;
            double *res[2];
            for (int way = 0; way < 2; way++) { /* 0: gated call; 1: reference */
                cg_tensor *p = cgt_tensor(p0, &n, 1, dt, CG_CPU), *g = cgt_tensor(g0, &n, 1, dt, CG_CPU);
                cg_tensor *m = cgt_tensor(g0, &n, 1, dt, CG_CPU), *v = cgt_tensor(g0, &n, 1, dt, CG_CPU);
                CGT_OK(cg_tensor_fill(m, 0.1));
                CGT_OK(cg_tensor_fill(v, 0.2));
                cg_tensor *gate = cgt_tensor(&gate_v, &one, 1, CG_F64, CG_CPU), *sq = cgt_tensor(&sq_v, &one, 1, CG_F64, CG_CPU);
                cg_optim_call c = {.kind = kind, .param = p, .grad = g, .m = m, .v = v, .lr = 0.1, .momentum = 0.9,
                                   .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = 2};
                if (way == 0) {
                    c.gate = mode == 4 ? NULL : gate;
                    c.clip_sumsq = mode == 4 ? NULL : sq;
                    c.clip_max = clip;
                    CGT_OK(be->optim(&c));
                } else if (mode >= 2) { /* the two-pass way: clip in place, then the plain update */
                    if (mode != 4) {
                        CGT_OK(cg_tensor_set_requires_grad(p, 1));
                        CGT_OK(cg_tensor_set_grad(p, g));
                        double total;
                        CGT_OK(cg_clip_grad_norm(&p, 1, clip, &total));
                        CGT_ASSERT_CLOSE(total, norm, 1e-12);
                    }
                    CGT_OK(be->optim(&c));
                }
                res[way] = cgt_read(p);
                cg_tensor *all[6] = {p, g, m, v, gate, sq};
                for (int i = 0; i < 6; i++) cg_tensor_release(all[i]);
            }
            char what[64];
            snprintf(what, sizeof what, "case %d mode %d", k, mode);
            CGT_ASSERT_CLOSE_ARR(res[0], res[1], n, ((cgt_tol){0, 0}), what); /* modes 0, 1: untouched */
            if (mode >= 2) ck_assert_msg(memcmp(res[0], p0, (size_t)n * sizeof *p0) != 0, "%s: not updated", what);
            free(res[0]), free(res[1]);
        }
        free(p0), free(g0);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("optim");
    tcase_add_test(tc, gated_update_skips_and_clips_like_a_separate_pass);
    tcase_add_test(tc, sgd_plain_and_weight_decay);
    tcase_add_test(tc, sgd_momentum_two_steps);
    tcase_add_test(tc, sgd_nesterov_two_steps);
    tcase_add_test(tc, adam_bias_correction);
    tcase_add_test(tc, adam_l2_versus_adamw_decoupled);
    tcase_add_test(tc, random_steps_match_reference);
    tcase_add_test(tc, late_tensor_gets_its_own_step_count);
    tcase_add_test(tc, schedules);
    tcase_add_test(tc, clip_grad_norm_global);
    tcase_add_test(tc, model_optimizer_updates_every_parameter_in_one_flat_call);
    tcase_add_test(tc, state_dict_roundtrip);
    tcase_add_test(tc, bad_state_dict_leaves_optimizer_unchanged);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
