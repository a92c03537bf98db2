/* Errors: every misuse returns the right status and a message naming what went wrong
 * (checked with strstr), and the library never aborts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cgt.h"

START_TEST(status_names) {
    ck_assert_str_eq(cg_status_str(CG_OK), "CG_OK");
    ck_assert_str_eq(cg_status_str(CG_E_SHAPE), "CG_E_SHAPE");
    ck_assert_str_eq(cg_status_str(CG_E_DTYPE), "CG_E_DTYPE");
    ck_assert_str_eq(cg_status_str(CG_E_STATE), "CG_E_STATE");
    ck_assert_str_eq(cg_status_str(CG_E_INTERNAL), "CG_E_INTERNAL");
    for (int s = 0; s < CG_STATUS_COUNT; s++) {
        ck_assert_ptr_nonnull(cg_status_str((cg_status)s));
        ck_assert(strncmp(cg_status_str((cg_status)s), "CG_", 3) == 0);
        for (int t = 0; t < s; t++) ck_assert_str_ne(cg_status_str((cg_status)s), cg_status_str((cg_status)t));
    }
    ck_assert_ptr_nonnull(cg_status_str((cg_status)-1));
    ck_assert_ptr_nonnull(cg_status_str(CG_STATUS_COUNT));
    cg_clear_error();
    ck_assert_str_eq(cg_last_error(), "");
    ck_assert_str_eq(cg_dtype_name(CG_BF16), "bf16");
    ck_assert_str_eq(cg_dtype_name((cg_dtype)99), "invalid");
    ck_assert_int_eq(cg_dtype_size((cg_dtype)99), 0);
}
END_TEST

START_TEST(shape_mismatches) {
    int64_t sa[2] = {64, 784}, sb[2] = {512, 256}, s3[2] = {3, 4}, s5 = 5, s6 = 6;
    cg_tensor *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL, *out = (cg_tensor *)1;
    CGT_OK(cg_tensor_zeros(sa, 2, CG_F32, CG_CPU, &a));
    CGT_OK(cg_tensor_zeros(sb, 2, CG_F32, CG_CPU, &b));
    CGT_OK(cg_tensor_zeros(s3, 2, CG_F32, CG_CPU, &c));
    CGT_OK(cg_tensor_zeros(&s5, 1, CG_F32, CG_CPU, &d));
    CGT_OK(cg_tensor_zeros(&s6, 1, CG_F32, CG_CPU, &e));
    CGT_FAILS(cg_matmul(a, b, 0, 0, &out), CG_E_SHAPE, "matmul", "(64, 784)", "(512, 256)", "784 != 512");
    ck_assert_ptr_null(out); /* out is cleared on failure */
    CGT_FAILS(cg_matmul(a, d, 0, 0, &out), CG_E_SHAPE, "matmul", "2-d");
    CGT_FAILS(cg_add(c, d, &out), CG_E_SHAPE, "add", "(3, 4)", "(5)", "broadcast");
    CGT_FAILS(cg_mul(d, e, &out), CG_E_SHAPE, "mul", "broadcast");
    CGT_FAILS(cg_mse_loss(d, e, CG_REDUCE_MEAN, &out), CG_E_SHAPE, "mse", "same shape");
    CGT_FAILS(cg_sum(c, 2, 0, &out), CG_E_SHAPE, "sum", "axis");
    CGT_FAILS(cg_mean(c, -3, 0, &out), CG_E_SHAPE, "mean", "axis");
    int64_t bad[2] = {5, -1};
    CGT_FAILS(cg_reshape(c, bad, 2, &out), CG_E_SHAPE, "reshape");
    int64_t bad2[1] = {13};
    CGT_FAILS(cg_reshape(c, bad2, 1, &out), CG_E_SHAPE, "reshape", "12", "13");
    /* a product that wraps around to the element count must not pass: 7 * this == 1 mod 2^64,
       which an unchecked multiply accepts for a 1-element tensor */
    int64_t wrap[2] = {7, 7905747460161236407LL}, n1 = 1;
    cg_tensor *single = NULL;
    CGT_OK(cg_tensor_zeros(&n1, 1, CG_F32, CG_CPU, &single));
    CGT_FAILS(cg_reshape(single, wrap, 2, &out), CG_E_SHAPE, "reshape", "too large");
    cg_tensor_release(single);
    CGT_FAILS(cg_transpose(c, 0, 2, &out), CG_E_SHAPE, "transpose");
    CGT_FAILS(cg_slice_rows(c, 2, 4, &out), CG_E_SHAPE, "slice_rows", "[2, 4)");
    CGT_FAILS(cg_layernorm(c, d, NULL, 1e-5, &out), CG_E_SHAPE, "layernorm", "gamma");
    CGT_FAILS(cg_batchnorm(c, NULL, NULL, d, NULL, 1, 0.1, 1e-5, &out), CG_E_SHAPE, "batchnorm", "running_mean");
    int64_t one[2] = {1, 4};
    cg_tensor *row = NULL;
    CGT_OK(cg_tensor_zeros(one, 2, CG_F32, CG_CPU, &row));
    CGT_FAILS(cg_batchnorm(row, NULL, NULL, NULL, NULL, 1, 0.1, 1e-5, &out), CG_E_SHAPE, "batchnorm", "1 row");
    CGT_FAILS(cg_tensor_copy_(c, d), CG_E_SHAPE, "cg_tensor_copy_", "(3, 4)", "(5)");
    /* logits without classes: refused before any backend sees them */
    int64_t s30[2] = {3, 0}, n3 = 3;
    cg_tensor *l30 = NULL, *lab3 = NULL;
    CGT_OK(cg_tensor_zeros(s30, 2, CG_F32, CG_CPU, &l30));
    CGT_OK(cg_tensor_zeros(&n3, 1, CG_I64, CG_CPU, &lab3));
    CGT_FAILS(cg_softmax_cross_entropy(l30, lab3, CG_REDUCE_MEAN, 0, &out), CG_E_SHAPE, "softmax_cross_entropy",
              "(3, 0)", "no classes");
    cg_tensor_release(l30);
    cg_tensor_release(lab3);
    /* a strided gradient buffer would be accumulated as if dense: refused */
    int64_t s43[2] = {4, 3};
    cg_tensor *g43 = NULL, *gt = NULL;
    CGT_OK(cg_tensor_zeros(s43, 2, CG_F32, CG_CPU, &g43));
    CGT_OK(cg_transpose(g43, 0, 1, &gt));
    CGT_FAILS(cg_tensor_set_grad(c, gt), CG_E_INVALID, "cg_tensor_set_grad", "contiguous");
    ck_assert_ptr_null(cg_tensor_grad(c));
    cg_tensor_release(gt);
    cg_tensor_release(g43);
    cg_tensor *list[6] = {a, b, c, d, e, row};
    for (int i = 0; i < 6; i++) cg_tensor_release(list[i]);
}
END_TEST

START_TEST(wrong_dtypes) {
    int64_t s[2] = {4, 3}, n = 4;
    cg_tensor *i = NULL, *x = NULL, *x64 = NULL, *lf = NULL, *out = NULL;
    CGT_OK(cg_tensor_zeros(s, 2, CG_I32, CG_CPU, &i));
    CGT_OK(cg_tensor_zeros(s, 2, CG_F32, CG_CPU, &x));
    CGT_OK(cg_tensor_zeros(s, 2, CG_F64, CG_CPU, &x64));
    CGT_OK(cg_tensor_zeros(&n, 1, CG_F32, CG_CPU, &lf));
    CGT_FAILS(cg_relu(i, &out), CG_E_DTYPE, "relu", "i32");
    CGT_FAILS(cg_softmax_cross_entropy(x, lf, CG_REDUCE_MEAN, 0.0, &out), CG_E_DTYPE, "labels", "f32");
    CGT_FAILS(cg_add(x, x64, &out), CG_E_DTYPE, "add", "f32", "f64", "cg_tensor_cast");
    CGT_FAILS(cg_tensor_set_requires_grad(i, 1), CG_E_DTYPE, "i32");
    cg_tensor *u = NULL;
    int64_t big = 4;
    CGT_FAILS(cg_tensor_rand_uniform(&big, 1, CG_I64, CG_CPU, 0, 1, &(cg_rng){1, 0}, &u), CG_E_DTYPE, "i64");
    CGT_FAILS(cg_tensor_empty(&big, 1, (cg_dtype)42, CG_CPU, &u), CG_E_DTYPE, "dtype");
    cg_tensor_release(i), cg_tensor_release(x), cg_tensor_release(x64), cg_tensor_release(lf);
}
END_TEST

START_TEST(backward_misuse) {
    cgt_rand r = cgt_rand_make("backward misuse");
    int64_t s[2] = {2, 3};
    cg_tensor *x = cgt_randn(&r, s, 2, CG_F32, CG_CPU), *y = NULL, *g = NULL, *c = NULL;
    CGT_OK(cg_tensor_set_requires_grad(x, 1));
    CGT_OK(cg_tanh(x, &y));
    CGT_FAILS(cg_backward(y), CG_E_SHAPE, "(2, 3)", "one-element", "cg_backward_ex");
    CGT_FAILS(cg_backward(NULL), CG_E_INVALID, "NULL");
    CGT_FAILS(cg_backward_ex(y, NULL, 0), CG_E_INVALID, "NULL");
    int64_t s2 = 6;
    CGT_OK(cg_tensor_zeros(&s2, 1, CG_F32, CG_CPU, &g));
    CGT_FAILS(cg_backward_ex(y, g, 0), CG_E_SHAPE, "gradient", "(6)", "(2, 3)");
    CGT_OK(cg_tensor_zeros(s, 2, CG_F32, CG_CPU, &c));
    cg_tensor *l = NULL;
    CGT_OK(cg_sum(c, CG_ALL_AXES, 0, &l));
    CGT_FAILS(cg_backward(l), CG_E_STATE, "require"); /* nothing in its graph requires grad */
    cg_tensor_release(l), cg_tensor_release(c), cg_tensor_release(g), cg_tensor_release(y), cg_tensor_release(x);
}
END_TEST

START_TEST(null_arguments) {
    int64_t s = 3;
    cg_tensor *x = NULL, *out = NULL;
    CGT_OK(cg_tensor_ones(&s, 1, CG_F32, CG_CPU, &x));
    CGT_FAILS(cg_relu(NULL, &out), CG_E_INVALID, "relu", "NULL");
    CGT_FAILS(cg_relu(x, NULL), CG_E_INVALID, "relu", "NULL");
    CGT_FAILS(cg_add(x, NULL, &out), CG_E_INVALID, "add", "NULL");
    CGT_FAILS(cg_matmul(NULL, x, 0, 0, &out), CG_E_INVALID, "matmul", "NULL");
    CGT_FAILS(cg_sum(NULL, 0, 0, &out), CG_E_INVALID, "sum", "NULL");
    CGT_FAILS(cg_softmax(NULL, &out), CG_E_INVALID, "softmax", "NULL");
    CGT_FAILS(cg_layernorm(NULL, NULL, NULL, 1e-5, &out), CG_E_INVALID, "layernorm", "NULL");
    CGT_FAILS(cg_batchnorm(NULL, NULL, NULL, NULL, NULL, 1, 0.1, 1e-5, &out), CG_E_INVALID, "batchnorm", "NULL");
    CGT_FAILS(cg_dropout(NULL, 0.5, 1, NULL, &out), CG_E_INVALID, "dropout", "NULL");
    CGT_FAILS(cg_mse_loss(x, NULL, CG_REDUCE_MEAN, &out), CG_E_INVALID, "mse", "NULL");
    CGT_FAILS(cg_softmax_cross_entropy(NULL, x, CG_REDUCE_MEAN, 0, &out), CG_E_INVALID, "softmax_cross_entropy", "NULL");
    CGT_FAILS(cg_reshape(NULL, &s, 1, &out), CG_E_INVALID, "reshape", "NULL");
    CGT_FAILS(cg_transpose(NULL, 0, 1, &out), CG_E_INVALID, "transpose", "NULL");
    CGT_FAILS(cg_slice_rows(NULL, 0, 1, &out), CG_E_INVALID, "slice_rows", "NULL");
    CGT_FAILS(cg_contiguous(NULL, &out), CG_E_INVALID, "contiguous", "NULL");
    CGT_FAILS(cg_add_(x, 1.0, NULL), CG_E_INVALID, "cg_add_", "NULL");
    CGT_FAILS(cg_scale_(NULL, 1.0), CG_E_INVALID, "cg_scale_", "NULL");
    double v;
    CGT_FAILS(cg_sumsq(NULL, &v), CG_E_INVALID, "cg_sumsq", "NULL");
    CGT_FAILS(cg_tensor_zeros(&s, 1, CG_F32, CG_CPU, NULL), CG_E_INVALID, "NULL");
    CGT_FAILS(cg_tensor_from_host(NULL, &s, 1, CG_F32, CG_CPU, &out), CG_E_INVALID, "data", "NULL");
    CGT_FAILS(cg_tensor_zeros(NULL, 2, CG_F32, CG_CPU, &out), CG_E_INVALID, "shape", "NULL");
    CGT_FAILS(cg_tensor_to_host(x, NULL, 12), CG_E_INVALID, "dst", "NULL");
    CGT_FAILS(cg_tensor_item(NULL, &v), CG_E_INVALID, "NULL");
    CGT_FAILS(cg_tensor_clone(NULL, &out), CG_E_INVALID, "NULL");
    CGT_FAILS(cg_tensor_cast(x, CG_F64, NULL), CG_E_INVALID, "NULL");
    CGT_FAILS(cg_tensor_detach(NULL, &out), CG_E_INVALID, "NULL");
    CGT_FAILS(cg_tensor_set_grad(NULL, x), CG_E_INVALID, "NULL");
    CGT_FAILS(cg_zero_grad(NULL, 2), CG_E_INVALID, "NULL");
    CGT_FAILS(cg_tensor_fill_uniform(x, 0, 1, NULL), CG_E_INVALID, "rng", "NULL");
    /* property getters tolerate NULL */
    ck_assert_int_eq(cg_tensor_numel(NULL), 0);
    ck_assert_int_eq(cg_tensor_ndim(NULL), 0);
    ck_assert_ptr_null(cg_tensor_grad(NULL));
    ck_assert_int_eq(cg_tensor_has_grad_fn(NULL), 0);
    cg_tensor_release(x);
}
END_TEST

START_TEST(bad_values_and_options) {
    int64_t s[2] = {3, 4}, n = 3;
    cg_tensor *x = NULL, *lab = NULL, *out = NULL, *h = NULL;
    CGT_OK(cg_tensor_ones(s, 2, CG_F32, CG_CPU, &x));
    CGT_OK(cg_tensor_zeros(&n, 1, CG_I64, CG_CPU, &lab));
    cg_rng rng = cg_rng_make(1);
    CGT_FAILS(cg_dropout(x, 1.0, 1, &rng, &out), CG_E_INVALID, "dropout", "p");
    CGT_FAILS(cg_dropout(x, -0.1, 1, &rng, &out), CG_E_INVALID, "dropout", "p");
    CGT_FAILS(cg_dropout(x, 0.5, 1, NULL, &out), CG_E_INVALID, "dropout", "rng");
    CGT_FAILS(cg_gelu(x, (cg_gelu_approx)7, &out), CG_E_INVALID, "gelu", "approx");
    CGT_FAILS(cg_mse_loss(x, x, (cg_reduction)9, &out), CG_E_INVALID, "reduction");
    CGT_FAILS(cg_softmax_cross_entropy(x, lab, CG_REDUCE_MEAN, 1.5, &out), CG_E_INVALID, "label_smoothing");
    CGT_FAILS(cg_layernorm(x, NULL, NULL, -1, &out), CG_E_INVALID, "eps");
    CGT_FAILS(cg_batchnorm(x, NULL, NULL, NULL, NULL, 0, 0.1, 1e-5, &out), CG_E_INVALID, "eval", "running");
    CGT_FAILS(cg_batchnorm(x, NULL, NULL, NULL, NULL, 1, 1.5, 1e-5, &out), CG_E_INVALID, "momentum");
    CGT_FAILS(cg_tensor_rand_normal(s, 2, CG_F32, CG_CPU, 0, -1, &rng, &h), CG_E_INVALID, "std");
    CGT_FAILS(cg_tensor_rand_uniform(s, 2, CG_F32, CG_CPU, 2, 1, &rng, &h), CG_E_INVALID, "lo");
    int64_t neg[1] = {-2};
    CGT_FAILS(cg_tensor_zeros(neg, 1, CG_F32, CG_CPU, &h), CG_E_SHAPE, "negative");
    CGT_FAILS(cg_tensor_zeros(s, 9, CG_F32, CG_CPU, &h), CG_E_SHAPE, "ndim");
    CGT_FAILS(cg_tensor_arange(0, 1, -1, CG_F32, CG_CPU, &h), CG_E_SHAPE, "n");
    float buf[5];
    CGT_FAILS(cg_tensor_to_host(x, buf, sizeof buf), CG_E_INVALID, "bytes");
    double v;
    CGT_FAILS(cg_tensor_item(x, &v), CG_E_SHAPE, "12 elements");
    /* device: CUDA tensors in a CPU-only build (or beyond the device count) */
    CGT_FAILS(cg_tensor_zeros(s, 2, CG_F32, CG_CUDA(cg_device_count() + 3), &h), CG_E_DEVICE, "cuda");
    ck_assert_str_eq(cg_device_str(CG_CPU), "cpu");
    ck_assert_str_eq(cg_device_str(CG_CUDA(1)), "cuda:1");
    cg_tensor_release(x), cg_tensor_release(lab);
}
END_TEST

START_TEST(in_place_rules) {
    cgt_rand r = cgt_rand_make("in place");
    int64_t s[2] = {3, 4};
    cg_tensor *w = cgt_randn(&r, s, 2, CG_F32, CG_CPU), *y = NULL, *t = NULL, *w64 = NULL, *i = NULL;
    CGT_OK(cg_tensor_set_requires_grad(w, 1));
    CGT_FAILS(cg_add_(w, 1.0, w), CG_E_STATE, "cg_add_", "no_grad");
    CGT_FAILS(cg_scale_(w, 2.0), CG_E_STATE, "cg_scale_", "no_grad");
    CGT_FAILS(cg_tensor_fill(w, 0.0), CG_E_STATE, "no_grad");
    CGT_OK(cg_sigmoid(w, &y));
    CGT_FAILS(cg_scale_(y, 2.0), CG_E_STATE, "sigmoid", "graph");
    cg_no_grad_begin();
    CGT_OK(cg_transpose(w, 0, 1, &t));
    CGT_FAILS(cg_scale_(t, 2.0), CG_E_INVALID, "contiguous");
    CGT_OK(cg_tensor_cast(w, CG_F64, &w64));
    CGT_FAILS(cg_add_(w, 1.0, w64), CG_E_SHAPE, "cg_add_", "dtype");
    CGT_OK(cg_tensor_zeros(s, 2, CG_I32, CG_CPU, &i));
    CGT_FAILS(cg_scale_(i, 2.0), CG_E_DTYPE, "i32");
    cg_no_grad_end();
    cg_tensor_release(w), cg_tensor_release(y), cg_tensor_release(t), cg_tensor_release(w64), cg_tensor_release(i);
}
END_TEST

START_TEST(failures_leave_no_partial_state) {
    /* after a failing op the thread keeps working and the error is replaced by the next one */
    int64_t s[2] = {2, 2};
    cg_tensor *a = NULL, *b = NULL, *out = NULL;
    CGT_OK(cg_tensor_ones(s, 2, CG_F32, CG_CPU, &a));
    CGT_OK(cg_tensor_set_requires_grad(a, 1));
    CGT_FAILS(cg_matmul(a, a, 0, 0, NULL), CG_E_INVALID, "out");
    CGT_OK(cg_matmul(a, a, 0, 0, &b));
    CGT_OK(cg_sum(b, CG_ALL_AXES, 0, &out));
    CGT_OK(cg_backward(out));
    CGT_ASSERT_CLOSE(cgt_item(out), 8.0, 0);
    cg_tensor_release(a), cg_tensor_release(b), cg_tensor_release(out);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("errors");
    TCase *t = tcase_create("errors");
    tcase_add_test(t, status_names);
    tcase_add_test(t, shape_mismatches);
    tcase_add_test(t, wrong_dtypes);
    tcase_add_test(t, backward_misuse);
    tcase_add_test(t, null_arguments);
    tcase_add_test(t, bad_values_and_options);
    tcase_add_test(t, in_place_rules);
    tcase_add_test(t, failures_leave_no_partial_state);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
