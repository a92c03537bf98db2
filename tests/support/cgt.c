/* cgrad test support: see cgt.h. */
#define _POSIX_C_SOURCE 200809L /* mkstemp */
#include "cgt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t g_seed;
static int g_seed_set;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t cgt_seed(void) {
    if (!g_seed_set) {
        const char *env = getenv("CG_TEST_SEED");
        if (env && *env) {
            g_seed = strtoull(env, NULL, 0);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t x = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
            g_seed = splitmix64(&x) & 0xFFFFFFFFFFFFull; /* short enough to type back */
        }
        g_seed_set = 1;
    }
    return g_seed;
}

cgt_rand cgt_rand_make(const char *tag) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the tag */
    for (const char *p = tag ? tag : ""; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    uint64_t x = cgt_seed() ^ h;
    cgt_rand r;
    for (int i = 0; i < 4; i++) r.s[i] = splitmix64(&x);
    return r;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t cgt_next(cgt_rand *r) { /* xoshiro256** */
    uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

double cgt_uniform(cgt_rand *r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(cgt_next(r) >> 11) * (1.0 / 9007199254740992.0));
}

double cgt_normal(cgt_rand *r) {
    double u1 = ((double)(cgt_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = cgt_uniform(r, 0, 1);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}

int64_t cgt_randint(cgt_rand *r, int64_t lo, int64_t hi) {
    return lo + (int64_t)(cgt_next(r) % (uint64_t)(hi - lo));
}

cg_rng cgt_lib_rng(cgt_rand *r) {
    cg_rng g = cg_rng_make(cgt_next(r));
    g.offset = cgt_next(r) & 0xFFFF;
    return g;
}

/* ---- tensors ---- */

static int64_t numel(const int64_t *shape, int ndim) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

cg_tensor *cgt_tensor(const double *v, const int64_t *shape, int ndim, cg_dtype dt, cg_device dev) {
    cg_tensor *h = NULL, *t = NULL;
    int64_t n = numel(shape, ndim);
    CGT_OK(cg_tensor_from_host(n ? v : NULL, shape, ndim, CG_F64, CG_CPU, &h));
    if (dt == CG_F64 && dev.type == CG_DEVICE_CPU) return h;
    CGT_OK(cg_tensor_empty(shape, ndim, dt, dev, &t));
    CGT_OK(cg_tensor_copy_(t, h));
    cg_tensor_release(h);
    return t;
}

cg_tensor *cgt_randn(cgt_rand *r, const int64_t *shape, int ndim, cg_dtype dt, cg_device dev) {
    int64_t n = numel(shape, ndim);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = cgt_normal(r);
    cg_tensor *t = cgt_tensor(v, shape, ndim, dt, dev);
    free(v);
    return t;
}

cg_tensor *cgt_randu(cgt_rand *r, const int64_t *shape, int ndim, double lo, double hi, cg_dtype dt,
                     cg_device dev) {
    int64_t n = numel(shape, ndim);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = cgt_uniform(r, lo, hi);
    cg_tensor *t = cgt_tensor(v, shape, ndim, dt, dev);
    free(v);
    return t;
}

double *cgt_read(const cg_tensor *t) {
    ck_assert_ptr_nonnull(t);
    int64_t n = cg_tensor_numel(t);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    cgt_poison_host(v, n);
    cg_tensor *c = NULL;
    CGT_OK(cg_tensor_empty(cg_tensor_shape(t), cg_tensor_ndim(t), CG_F64, CG_CPU, &c));
    CGT_OK(cg_tensor_copy_(c, t));
    CGT_OK(cg_tensor_to_host(c, v, (size_t)n * sizeof *v));
    cg_tensor_release(c);
    return v;
}

double *cgt_gelu_tanh_grads(const double *xs, int64_t n, cg_dtype dt, cg_device dev, int via_linear) {
    int64_t xshape[2] = {n, 1}, ws[2] = {1, 1};
    cg_tensor *x = cgt_tensor(xs, xshape, 2, dt, dev), *w = cgt_tensor((double[]){1.0}, ws, 2, dt, dev);
    CGT_OK(cg_tensor_set_requires_grad(x, 1));
    CGT_OK(cg_scope_begin());
    cg_tensor *y, *l;
    if (via_linear) CGT_OK(cg_linear(x, w, NULL, CG_LINEAR_GELU_TANH, &y));
    else CGT_OK(cg_gelu(x, CG_GELU_TANH, &y));
    CGT_OK(cg_sum(y, -1, 0, &l));
    CGT_OK(cg_sum(l, -1, 0, &l));
    CGT_OK(cg_backward(l));
    cg_scope_end();
    double *g = cgt_read(cg_tensor_grad(x));
    cg_tensor_release(x), cg_tensor_release(w);
    return g;
}

double cgt_item(const cg_tensor *t) {
    double v = NAN;
    CGT_OK(cg_tensor_item(t, &v));
    return v;
}

double cgt_round_to(double v, cg_dtype dt) { return dt == CG_F32 ? (double)(float)v : v; }

void cgt_round_array(double *v, int64_t n, cg_dtype dt) {
    for (int64_t i = 0; i < n; i++) v[i] = cgt_round_to(v[i], dt);
}

void cgt_poison_host(double *v, int64_t n) {
    for (int64_t i = 0; i < n; i++) v[i] = NAN;
}

void cgt_poison(cg_tensor *t) { CGT_OK(cg_tensor_fill(t, NAN)); }

/* ---- tolerance ---- */

cgt_tol cgt_tol_for(cg_dtype dt) {
    if (dt == CG_F64) return (cgt_tol){1e-12, 1e-12};
    if (dt == CG_F32) return (cgt_tol){1e-5, 1e-5};
    return (cgt_tol){1e-2, 1e-2}; /* f16 / bf16 storage */
}

cgt_tol cgt_tol_scaled(cgt_tol t, double k) { return (cgt_tol){t.abs * k, t.rel * k}; }

int cgt_close(double got, double ref, cgt_tol tol) {
    if (isnan(got) || isnan(ref)) return 0;
    if (isinf(ref) || isinf(got)) return got == ref;
    return fabs(got - ref) <= tol.abs + tol.rel * fabs(ref);
}

int64_t cgt_first_mismatch(const double *got, const double *ref, int64_t n, cgt_tol tol) {
    for (int64_t i = 0; i < n; i++)
        if (!cgt_close(got[i], ref[i], tol)) return i;
    return -1;
}

int cgt_all_finite(const double *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

int cgt_run_suite(Suite *s) {
    uint64_t seed = cgt_seed(); /* fixed before Check forks the tests */
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (failed)
        fprintf(stderr, "%d test(s) failed; replay this run with CG_TEST_SEED=%llu\n", failed,
                (unsigned long long)seed);
    else
        printf("seed %llu (set CG_TEST_SEED to replay)\n", (unsigned long long)seed);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

const char *cgt_data_dir(void) {
    const char *d = getenv("CG_TEST_DATA");
    return d && *d ? d : "data";
}

uint8_t *cgt_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    ck_assert(b != NULL);
    ck_assert((long)fread(b, 1, (size_t)len, f) == len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

void cgt_temp_file(char buf[32]) {
    strcpy(buf, "/tmp/cg_test_XXXXXX");
    int fd = mkstemp(buf);
    ck_assert_int_ge(fd, 0);
    close(fd);
}

void cgt_assert_same_state(cg_model *a, cg_model *b, const char *what) {
    cg_state_dict *sa, *sb;
    CGT_OK(cg_model_state_dict(a, &sa));
    CGT_OK(cg_model_state_dict(b, &sb));
    ck_assert_uint_eq(cg_state_dict_count(sa), cg_state_dict_count(sb));
    for (size_t i = 0; i < cg_state_dict_count(sa); i++) {
        const char *name = cg_state_dict_name_at(sa, i);
        cg_tensor *ta = cg_state_dict_tensor_at(sa, i), *tb = cg_state_dict_get(sb, name);
        ck_assert_ptr_nonnull(tb);
        int64_t n = cg_tensor_numel(ta);
        ck_assert_int_eq(n, cg_tensor_numel(tb));
        double *va = cgt_read(ta), *vb = cgt_read(tb);
        ck_assert_msg(cgt_all_finite(va, n) && cgt_all_finite(vb, n), "%s: %s is not finite", what, name);
        ck_assert_msg(memcmp(va, vb, (size_t)n * sizeof *va) == 0, "%s: %s differs", what, name);
        free(va), free(vb);
    }
    cg_state_dict_free(sa), cg_state_dict_free(sb);
}
