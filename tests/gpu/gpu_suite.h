/* Shared by the GPU numerics suite's files (the .c files of tests/gpu, assembled by
 * tests/test_gpu_numerics.c): the device under test, tolerances, cache poisoning and the
 * generic CPU-vs-GPU runner (runner.c), and each file's gpu_add_<area>, which adds its tests
 * to the "ops" and "large" test cases. */
#ifndef CG_TESTS_GPU_SUITE_H
#define CG_TESTS_GPU_SUITE_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cgrad/cuda.h"
#include "cgt.h"
#include "op_cases.h"

/* CG_GPU_SUITE_ON_CPU (the test_gpu_harness build, tests/CMakeLists.txt): the "GPU" side is
 * the CPU backend, so CI runs the suite's own logic (sizing runs, seeds, poisoning, the
 * comparisons) everywhere; the tests that only mean something on a device are left out. */
#ifdef CG_GPU_SUITE_ON_CPU
#define GPU CG_CPU
#pragma GCC diagnostic ignored "-Wunused-variable" /* the device-only tests are not added */
#else
#define GPU CG_CUDA(0)
#endif

/* f32: the GPU sums in float (the CPU in double) and uses float libm: wider than the
 * CPU-vs-float64 tolerance (scaled by mul when > 0). f64: both sides in double, different
 * summation orders. */
cgt_tol gpu_tol(cg_dtype dt, double mul);
/* stocks the device cache with NaN blocks of these k (<= 8) element counts, so an output a
 * kernel forgets to write comes back NaN */
void poison_cache(const int64_t *counts, int k, cg_dtype dt);
/* the process-wide CUDA settings back to their defaults (the fixture after every test) */
void reset_settings(void);

/* ---- generic CPU-vs-GPU runner: one op, given as an apply_fn, on described inputs */

typedef cg_status (*apply_fn)(cg_tensor *const *in, cg_tensor **out, const void *arg);

typedef struct spec {
    int n_in;
    const double *v[CGT_MAX_IN]; /* NULL: the op gets NULL */
    int ndim[CGT_MAX_IN];
    int64_t shape[CGT_MAX_IN][4];
    cg_dtype kind[CGT_MAX_IN]; /* CG_F32 means "the float dtype under test"; else as given */
    int diff[CGT_MAX_IN];
} spec;

typedef struct result {
    double *out;
    int64_t nout;
    double *g[CGT_MAX_IN];
    int64_t ng[CGT_MAX_IN];
} result;

void result_free(result *r);
/* runs f on s's inputs on dev; with gseed (gseed_n >= the output's size) also backward */
void run_spec(const spec *s, apply_fn f, const void *arg, cg_dtype dt, cg_device dev, const double *gseed,
              int64_t gseed_n, result *r);
/* CPU against GPU on the same inputs and output gradient, values and gradients within tol;
 * *max_dev (may be NULL) gets the largest |gpu - cpu| of the forward output */
void compare_spec_tol(const char *what, const spec *s, apply_fn f, const void *arg, cg_dtype dt, cgt_tol tol,
                      double *max_dev);
/* compare_spec_tol with gpu_tol(dt, tol_mul) */
void compare_spec(const char *what, const spec *s, apply_fn f, const void *arg, cg_dtype dt, double tol_mul);
/* n normal draws (malloc'd, caller frees) */
double *randn_arr(cgt_rand *r, int64_t n, double mean, double std);
/* same class: both NaN, or equal infinities, or close */
int same_class(double g, double c, cgt_tol tol);

/* each file's tests, added to the two test cases */
void gpu_add_ops(TCase *ops, TCase *large);
void gpu_add_bitwise(TCase *ops, TCase *large);
void gpu_add_special_values(TCase *ops, TCase *large);
void gpu_add_linear(TCase *ops, TCase *large);
void gpu_add_training(TCase *ops, TCase *large);
void gpu_add_device(TCase *ops, TCase *large);
/* the "devices" test case: behaviour across two devices or more (device.c) */
void gpu_add_devices(TCase *devices);

#endif
