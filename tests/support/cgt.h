/* cgrad test support: seeds, host random numbers, tensor <-> host double arrays,
 * tolerance comparison (NaN never passes), poisoning, and a Check suite runner.
 *
 * Seeds: every process draws a fresh base seed (time ^ pid) unless CG_TEST_SEED is set;
 * each test derives its own stream from the base seed and a tag, so a failure can be
 * replayed with CG_TEST_SEED=<printed seed> whatever the test order. */
#ifndef CGT_H
#define CGT_H

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cgrad.h"

/* ---- seeds and host random numbers ---- */
uint64_t cgt_seed(void); /* base seed of this process (chosen on first call) */

typedef struct cgt_rand {
    uint64_t s[4];
} cgt_rand;

cgt_rand cgt_rand_make(const char *tag); /* stream for one test: base seed mixed with tag */
uint64_t cgt_next(cgt_rand *r);
double cgt_uniform(cgt_rand *r, double lo, double hi);
double cgt_normal(cgt_rand *r);
int64_t cgt_randint(cgt_rand *r, int64_t lo, int64_t hi); /* [lo, hi) */
/* A library rng (Philox) seeded from the test stream. */
cg_rng cgt_lib_rng(cgt_rand *r);

/* ---- status checks ---- */
#define CGT_OK(expr)                                                                                          \
    do {                                                                                                      \
        cg_status cgt__s = (expr);                                                                            \
        ck_assert_msg(cgt__s == CG_OK, "%s -> %s: %s [seed %llu]", #expr, cg_status_str(cgt__s), cg_last_error(), \
                      (unsigned long long)cgt_seed());                                                        \
    } while (0)

/* Status must be `want` and cg_last_error() must contain every given keyword. */
#define CGT_FAILS(expr, want, ...)                                                                            \
    do {                                                                                                      \
        cg_clear_error();                                                                                     \
        cg_status cgt__s = (expr);                                                                            \
        ck_assert_msg(cgt__s == (want), "%s -> %s, want %s (message: %s)", #expr, cg_status_str(cgt__s),       \
                      cg_status_str(want), cg_last_error());                                                  \
        const char *cgt__kw[] = {__VA_ARGS__};                                                                \
        for (size_t cgt__i = 0; cgt__i < sizeof cgt__kw / sizeof cgt__kw[0]; cgt__i++)                        \
            ck_assert_msg(cgt__kw[cgt__i] == NULL || strstr(cg_last_error(), cgt__kw[cgt__i]) != NULL,         \
                          "%s: message \"%s\" lacks \"%s\"", #expr, cg_last_error(), cgt__kw[cgt__i]);          \
    } while (0)

/* ---- tensors and host arrays ---- */
/* New tensor from host doubles converted to dt (asserts success). */
cg_tensor *cgt_tensor(const double *v, const int64_t *shape, int ndim, cg_dtype dt, cg_device dev);
/* Random tensors made on the host (independent of the library's generator). */
cg_tensor *cgt_randn(cgt_rand *r, const int64_t *shape, int ndim, cg_dtype dt, cg_device dev);
cg_tensor *cgt_randu(cgt_rand *r, const int64_t *shape, int ndim, double lo, double hi, cg_dtype dt,
                     cg_device dev);
/* Creates an empty temporary file and writes its path into buf (asserts); unlink it after. */
void cgt_temp_file(char buf[32]);
/* All elements of t (any dtype, strides, device) as a malloc'd double array (asserts). */
double *cgt_read(const cg_tensor *t);
double cgt_item(const cg_tensor *t);
/* Round a double to the nearest value representable in dt (f32: (float) rounding). */
double cgt_round_to(double v, cg_dtype dt);
void cgt_round_array(double *v, int64_t n, cg_dtype dt);

/* d sum(gelu_tanh(x)) / dx for x of shape (n, 1) in dt on dev, through cg_gelu or (via_linear)
 * the fused linear with a weight of 1: a malloc'd array of n (asserts). */
double *cgt_gelu_tanh_grads(const double *xs, int64_t n, cg_dtype dt, cg_device dev, int via_linear);

/* ---- poisoning ---- */
void cgt_poison_host(double *v, int64_t n); /* fill with NaN */
void cgt_poison(cg_tensor *t);              /* fill a float tensor with NaN (asserts) */

/* ---- tolerance: |got - ref| <= abs + rel * |ref|; NaN in either never passes ---- */
typedef struct cgt_tol {
    double abs, rel;
} cgt_tol;

cgt_tol cgt_tol_for(cg_dtype dt); /* f32: 1e-5 / 1e-5, f64: 1e-12 / 1e-12 */
cgt_tol cgt_tol_scaled(cgt_tol t, double k);
int cgt_close(double got, double ref, cgt_tol tol);
/* Index of the first element out of tolerance, or -1. */
int64_t cgt_first_mismatch(const double *got, const double *ref, int64_t n, cgt_tol tol);
int cgt_all_finite(const double *v, int64_t n);
/* Every tensor of two models' state dicts (parameters, BatchNorm running statistics,
 * num_batches_tracked) is bit-identical and finite; what names the moment in messages. */
void cgt_assert_same_state(cg_model *a, cg_model *b, const char *what);

#define CGT_ASSERT_CLOSE_ARR(got, ref, n, tol, what)                                                          \
    do {                                                                                                      \
        int64_t cgt__k = cgt_first_mismatch((got), (ref), (n), (tol));                                       \
        ck_assert_msg(cgt__k < 0, "%s: element %lld is %.17g, want %.17g (tol %g + %g*|ref|) [seed %llu]",     \
                      (what), (long long)cgt__k, cgt__k >= 0 ? (got)[cgt__k] : 0.0,                            \
                      cgt__k >= 0 ? (ref)[cgt__k] : 0.0, (tol).abs, (tol).rel,                                \
                      (unsigned long long)cgt_seed());                                                        \
    } while (0)

#define CGT_ASSERT_CLOSE(got, ref, tol_abs)                                                                   \
    do {                                                                                                      \
        double cgt__g = (got), cgt__r = (ref);                                                                \
        ck_assert_msg(cgt__g == cgt__g && fabs(cgt__g - cgt__r) <= (tol_abs), "%s = %.17g, want %.17g +- %g",  \
                      #got, cgt__g, cgt__r, (double)(tol_abs));                                               \
    } while (0)

/* ---- test data files ---- */
/* Folder of crafted test files: $CG_TEST_DATA (set by ctest) or ./data. */
const char *cgt_data_dir(void);
/* Whole file into a malloc'd buffer (one spare byte); fails the test if unreadable. */
uint8_t *cgt_slurp(const char *path, size_t *n);
/* A crafted bad file, the status loading it must return and up to 3 words its message holds. */
typedef struct cgt_bad_file {
    const char *file;
    cg_status status;
    const char *kw[3];
} cgt_bad_file;

/* ---- running a suite: prints the seed, runs, returns the process exit code ---- */
int cgt_run_suite(Suite *s);

#endif
