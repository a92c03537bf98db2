/* Dataset, loader and standardisation: every sample exactly once per epoch, x/y rows stay
 * paired, seeded permutations reproducible and different across epochs and seeds, partial
 * last batch kept or dropped, standardisation against a float64 reference; the prefetch
 * state machine against the synchronous loader through an emulated asynchronous backend. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cgrad/data.h"
#include "cgt.h"

/* x row i = (i, 10i + j...), y[i] = i: lets a test recover which sample it got. */
static void make_data(int64_t n, int64_t f, cg_tensor **x, cg_tensor **y) {
    double *xv = malloc((size_t)(n * f) * sizeof *xv), *yv = malloc((size_t)n * sizeof *yv);
    for (int64_t i = 0; i < n; i++) {
        yv[i] = (double)i;
        for (int64_t j = 0; j < f; j++) xv[i * f + j] = (double)(i * 100 + j);
    }
    int64_t xs[2] = {n, f}, ys[1] = {n};
    *x = cgt_tensor(xv, xs, 2, CG_F32, CG_CPU);
    *y = cgt_tensor(yv, ys, 1, CG_I64, CG_CPU);
    free(xv);
    free(yv);
}

START_TEST(test_epochs_cover_everything) {
    cgt_rand r = cgt_rand_make("loader_cover");
    for (int trial = 0; trial < 6; trial++) {
        int64_t n = cgt_randint(&r, 1, 300), f = cgt_randint(&r, 1, 5), bs = cgt_randint(&r, 1, 40);
        int drop = trial % 2;
        cg_tensor *x, *y;
        make_data(n, f, &x, &y);
        cg_dataset *ds;
        CGT_OK(cg_dataset_from_tensors(x, y, &ds));
        ck_assert_int_eq(cg_dataset_len(ds), n);
        cg_loader_opts o = {.batch_size = bs, .shuffle = 1, .seed = cgt_next(&r), .drop_last = drop, .device = CG_CPU};
        cg_loader *l;
        CGT_OK(cg_loader_create(ds, &o, &l));
        int64_t want_batches = drop ? n / bs : (n + bs - 1) / bs;
        ck_assert_int_eq(cg_loader_num_batches(l), want_batches);
        int64_t *order[2];
        for (int e = 0; e < 2; e++) {
            ck_assert_int_eq((int64_t)cg_loader_epoch(l), e);
            order[e] = malloc((size_t)n * sizeof(int64_t));
            int *seen = calloc((size_t)n, sizeof *seen);
            int64_t got = 0, batches = 0;
            for (;;) {
                cg_tensor *bx, *by;
                CGT_OK(cg_loader_next(l, &bx, &by));
                if (!bx) {
                    ck_assert_ptr_null(by);
                    break;
                }
                batches++;
                int64_t b = cg_tensor_shape(bx)[0];
                ck_assert_int_eq(cg_tensor_shape(bx)[1], f);
                ck_assert(b == bs || (!drop && b == n % bs && batches == want_batches));
                const float *px = cg_tensor_data(bx);
                const int64_t *py = cg_tensor_data(by);
                for (int64_t i = 0; i < b; i++) {
                    int64_t s = py[i];
                    ck_assert(s >= 0 && s < n);
                    ck_assert_int_eq(seen[s]++, 0);
                    for (int64_t j = 0; j < f; j++) ck_assert_float_eq(px[i * f + j], (float)(s * 100 + j));
                    order[e][got++] = s;
                }
                cg_tensor_release(bx);
                cg_tensor_release(by);
            }
            ck_assert_int_eq(batches, want_batches);
            ck_assert_int_eq(got, drop ? (n / bs) * bs : n);
            /* the order follows the documented permutation */
            int64_t *perm = malloc((size_t)n * sizeof *perm);
            CGT_OK(cg_permutation(o.seed, (uint64_t)e, n, perm));
            for (int64_t i = 0; i < got; i++) ck_assert_int_eq(order[e][i], perm[i]);
            free(perm);
            free(seen);
        }
        if (n >= 20 && !drop) ck_assert(memcmp(order[0], order[1], (size_t)n * sizeof(int64_t)) != 0);
        /* set_epoch replays epoch 0 */
        CGT_OK(cg_loader_set_epoch(l, 0));
        cg_tensor *bx, *by;
        CGT_OK(cg_loader_next(l, &bx, &by));
        if (bx) {
            ck_assert_int_eq(((int64_t *)cg_tensor_data(by))[0], order[0][0]);
            cg_tensor_release(bx);
            cg_tensor_release(by);
        }
        free(order[0]);
        free(order[1]);
        cg_loader_free(l);
        cg_dataset_free(ds);
        cg_tensor_release(x);
        cg_tensor_release(y);
    }
}
END_TEST

START_TEST(test_permutation_properties) {
    cgt_rand r = cgt_rand_make("loader_perm");
    uint64_t seed = cgt_next(&r);
    int64_t n = 1000;
    int64_t *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    CGT_OK(cg_permutation(seed, 3, n, a));
    CGT_OK(cg_permutation(seed, 3, n, b));
    ck_assert(memcmp(a, b, (size_t)n * sizeof *a) == 0); /* reproducible */
    CGT_OK(cg_permutation(seed + 1, 3, n, b));
    ck_assert(memcmp(a, b, (size_t)n * sizeof *a) != 0); /* seed matters */
    int64_t fixed = 0;
    for (int64_t i = 0; i < n; i++) fixed += a[i] == i;
    ck_assert_int_lt(fixed, 10); /* a uniform permutation has ~1 fixed point */
    /* position of element 0 over many epochs is roughly uniform over 4 slots */
    int64_t cnt[4] = {0};
    int64_t p4[4];
    for (uint64_t e = 0; e < 4000; e++) {
        CGT_OK(cg_permutation(seed, e, 4, p4));
        for (int i = 0; i < 4; i++)
            if (p4[i] == 0) cnt[i]++;
    }
    for (int i = 0; i < 4; i++) ck_assert_msg(cnt[i] > 850 && cnt[i] < 1150, "slot %d: %lld of 4000", i, (long long)cnt[i]);
    free(a);
    free(b);
}
END_TEST

START_TEST(test_no_shuffle_and_errors) {
    cg_tensor *x, *y;
    make_data(10, 2, &x, &y);
    cg_dataset *ds;
    CGT_OK(cg_dataset_from_tensors(x, NULL, &ds));
    cg_loader_opts o = {.batch_size = 4, .device = CG_CPU};
    cg_loader *l;
    CGT_OK(cg_loader_create(ds, &o, &l));
    int64_t next = 0;
    cg_tensor *bx, *by = (cg_tensor *)(uintptr_t)1;
    for (;;) {
        CGT_OK(cg_loader_next(l, &bx, &by));
        ck_assert_ptr_null(by);
        if (!bx) break;
        const float *p = cg_tensor_data(bx);
        for (int64_t i = 0; i < cg_tensor_shape(bx)[0]; i++) ck_assert_float_eq(p[2 * i], (float)(100 * next++));
        cg_tensor_release(bx);
    }
    ck_assert_int_eq(next, 10);
    cg_loader_free(l);
    cg_dataset_free(ds);
    int64_t s3[1] = {3};
    cg_tensor *y3;
    CGT_OK(cg_tensor_zeros(s3, 1, CG_I64, CG_CPU, &y3));
    CGT_FAILS(cg_dataset_from_tensors(x, y3, &ds), CG_E_SHAPE, "10 samples", "3");
    CGT_OK(cg_dataset_from_tensors(x, y, &ds));
    o.batch_size = 0;
    CGT_FAILS(cg_loader_create(ds, &o, &l), CG_E_INVALID, "batch_size");
    cg_dataset_free(ds);
    cg_tensor_release(y3);
    cg_tensor_release(x);
    cg_tensor_release(y);
}
END_TEST

START_TEST(test_standardize) {
    cgt_rand r = cgt_rand_make("standardize");
    int64_t n = cgt_randint(&r, 2, 100), f = cgt_randint(&r, 1, 6);
    int64_t shape[2] = {n, f};
    double *v = malloc((size_t)(n * f) * sizeof *v);
    for (int64_t i = 0; i < n * f; i++) v[i] = (i % f == 0) ? 42.0 : cgt_normal(&r) * 7 + 3 * (double)(i % f);
    cg_tensor *x = cgt_tensor(v, shape, 2, CG_F64, CG_CPU), *mean, *std;
    CGT_OK(cg_standardize_fit(x, &mean, &std));
    ck_assert_int_eq(cg_tensor_ndim(mean), 1);
    ck_assert_int_eq(cg_tensor_shape(mean)[0], f);
    double *m = cgt_read(mean), *s = cgt_read(std);
    for (int64_t j = 0; j < f; j++) {
        double rm = 0, rv = 0;
        for (int64_t i = 0; i < n; i++) rm += v[i * f + j];
        rm /= (double)n;
        for (int64_t i = 0; i < n; i++) rv += (v[i * f + j] - rm) * (v[i * f + j] - rm);
        double rs = j == 0 ? 1.0 : sqrt(rv / (double)n); /* constant column gets std 1 */
        CGT_ASSERT_CLOSE(m[j], rm, 1e-12 * (1 + fabs(rm)));
        CGT_ASSERT_CLOSE(s[j], rs, 1e-12 * (1 + rs));
    }
    CGT_OK(cg_standardize_apply(x, mean, std));
    double *z = cgt_read(x);
    for (int64_t i = 0; i < n * f; i++) CGT_ASSERT_CLOSE(z[i], (v[i] - m[i % f]) / s[i % f], 1e-12);
    free(z);
    free(m);
    free(s);
    v[1 % (n * f)] = NAN;
    cg_tensor *bad = cgt_tensor(v, shape, 2, CG_F64, CG_CPU), *m2, *s2;
    CGT_FAILS(cg_standardize_fit(bad, &m2, &s2), CG_E_NUMERIC, "NaN");
    int64_t wrong[1] = {f + 1};
    cg_tensor *wm;
    CGT_OK(cg_tensor_zeros(wrong, 1, CG_F64, CG_CPU, &wm));
    CGT_FAILS(cg_standardize_apply(x, wm, wm), CG_E_SHAPE, "does not match");
    cg_tensor_release(wm);
    cg_tensor_release(bad);
    cg_tensor_release(mean);
    cg_tensor_release(std);
    cg_tensor_release(x);
    free(v);
}
END_TEST

START_TEST(test_scope_handoff) {
    /* batches handed out inside a scope are released by the scope, not twice */
    cg_tensor *x, *y;
    make_data(8, 3, &x, &y);
    cg_dataset *ds;
    CGT_OK(cg_dataset_from_tensors(x, y, &ds));
    cg_loader_opts o = {.batch_size = 3, .shuffle = 1, .seed = 7, .device = CG_CPU};
    cg_loader *l;
    CGT_OK(cg_loader_create(ds, &o, &l));
    for (int step = 0; step < 5; step++) {
        CGT_OK(cg_scope_begin());
        cg_tensor *bx, *by;
        CGT_OK(cg_loader_next(l, &bx, &by));
        CGT_OK(cg_scope_end());
    }
    cg_loader_free(l);
    cg_dataset_free(ds);
    cg_tensor_release(x);
    cg_tensor_release(y);
}
END_TEST

/* ---------------------------------------------------------------- prefetch logic on the CPU
 * An emulated asynchronous backend: uploads are queued on a fake copy stream and carried
 * out only when an event covering them is waited on (wait_event: the compute stream's
 * view; event_sync: the host's). A loader that hands out a batch before waiting on its
 * event gets wrong data; one that gathers into a staging buffer (the next upload from it)
 * or frees it while an earlier upload from it has not been host-waited fails an assertion.
 * fake_fail_at makes that upload fail. */

#define FAKE_Q 64
typedef struct fake_copy {
    void *dst;
    const void *src;
    size_t n;
} fake_copy;
static fake_copy fake_q[FAKE_Q];
static long fake_issued, fake_done, fake_hsync, fake_fail_at = -1;
static int fake_pinned, fake_events;

static void fake_run_until(long seq) {
    for (; fake_done < seq; fake_done++) {
        fake_copy *c = &fake_q[fake_done % FAKE_Q];
        if (c->n) memcpy(c->dst, c->src, c->n);
    }
}
/* no upload from staging buffer p that the host has not waited for */
static void fake_check_idle(const void *p, const char *what) {
    ck_assert_msg(fake_issued - fake_hsync < FAKE_Q, "too many uploads not host-waited");
    for (long i = fake_hsync; i < fake_issued; i++)
        ck_assert_msg(fake_q[i % FAKE_Q].src != p || !fake_q[i % FAKE_Q].n, "%s: staging buffer still being uploaded", what);
}
static cg_status fake_pinned_alloc(int dev, size_t n, void **p) {
    (void)dev;
    *p = NULL;
    if (!n) return CG_OK;
    *p = malloc(n);
    ck_assert_ptr_nonnull(*p);
    memset(*p, 0xA5, n);
    fake_pinned++;
    return CG_OK;
}
static void fake_pinned_free(int dev, void *p) {
    (void)dev;
    if (!p) return;
    fake_check_idle(p, "pinned_free");
    free(p);
    fake_pinned--;
}
static cg_status fake_event_create(int dev, void **ev) {
    (void)dev;
    *ev = calloc(1, sizeof(long)); /* the copy count the event covers */
    ck_assert_ptr_nonnull(*ev);
    fake_events++;
    return CG_OK;
}
static void fake_event_free(int dev, void *ev) {
    (void)dev;
    if (!ev) return;
    ck_assert_msg(*(long *)ev <= fake_hsync, "event freed before the host waited for it");
    free(ev);
    fake_events--;
}
static cg_status fake_upload(int dev, void *dst, const void *src, size_t n, void *ev) {
    (void)dev;
    if (fake_issued == fake_fail_at) {
        fake_fail_at = -1;
        return CG_FAIL(CG_E_CUDA, "fake upload failure");
    }
    if (n) fake_check_idle(src, "upload_async");
    fake_q[fake_issued % FAKE_Q] = (fake_copy){dst, src, n};
    *(long *)ev = ++fake_issued;
    return CG_OK;
}
static cg_status fake_wait(int dev, void *ev) {
    (void)dev;
    fake_run_until(*(long *)ev);
    return CG_OK;
}
static cg_status fake_sync(int dev, void *ev) {
    (void)dev;
    long seq = *(long *)ev;
    fake_run_until(seq);
    if (seq > fake_hsync) fake_hsync = seq;
    return CG_OK;
}

static cg_backend fake_backend(void) {
    cg_backend b = cg_cpu_backend;
    b.pinned_alloc = fake_pinned_alloc;
    b.pinned_free = fake_pinned_free;
    b.event_create = fake_event_create;
    b.event_free = fake_event_free;
    b.upload_async = fake_upload;
    b.wait_event = fake_wait;
    b.event_sync = fake_sync;
    return b;
}

static int same_tensor(cg_tensor *a, cg_tensor *b) {
    if (!a || !b) return a == b;
    if (cg_tensor_ndim(a) != cg_tensor_ndim(b) || cg_tensor_dtype(a) != cg_tensor_dtype(b)) return 0;
    for (int d = 0; d < cg_tensor_ndim(a); d++)
        if (cg_tensor_shape(a)[d] != cg_tensor_shape(b)[d]) return 0;
    return memcmp(cg_tensor_data(a), cg_tensor_data(b), cg_tensor_nbytes(a)) == 0;
}

START_TEST(test_prefetch_logic_matches_sync) {
    cgt_rand r = cgt_rand_make("loader_prefetch");
    cg_backend fb = fake_backend();
    for (int trial = 0; trial < 16; trial++) {
        int64_t n = cgt_randint(&r, 1, 120), f = cgt_randint(&r, 1, 4), bs = cgt_randint(&r, 1, 30);
        int drop = trial & 1, with_y = (trial >> 1) & 1, set_ep = (trial >> 2) & 1, fail = (trial >> 3) & 1;
        cg_tensor *x, *y;
        make_data(n, f, &x, &y);
        cg_dataset *ds;
        CGT_OK(cg_dataset_from_tensors(x, with_y ? y : NULL, &ds));
        cg_loader_opts o = {.batch_size = bs, .shuffle = trial % 3 != 0, .seed = cgt_next(&r), .drop_last = drop,
                            .device = CG_CPU};
        cg_loader *ref, *pf;
        CGT_OK(cg_loader_create(ds, &o, &ref));
        CGT_OK(cg_loader_create(ds, &o, &pf));
        CGT_OK(cg__loader_use_backend(pf, &fb));
        if (fail) fake_fail_at = fake_issued + cgt_randint(&r, 0, 6); /* one upload fails: redone next call */
        int64_t calls = 3 * (cg_loader_num_batches(ref) + 1) + 2;
        for (int64_t c = 0; c < calls; c++) {
            if (set_ep && c % 7 == 3) { /* jumps: mid-epoch restarts drop the prefetched batch */
                uint64_t e = cg_loader_epoch(ref) + (uint64_t)(c % 2);
                CGT_OK(cg_loader_set_epoch(ref, e));
                CGT_OK(cg_loader_set_epoch(pf, e));
            }
            cg_tensor *ax, *ay, *bx, *by;
            CGT_OK(cg_loader_next(ref, &ax, &ay));
            cg__restore_error("earlier message");
            cg_status st = cg_loader_next(pf, &bx, &by);
            /* a failed prefetch is dropped silently: it must not overwrite the last message */
            if (st == CG_OK) ck_assert_str_eq(cg_last_error(), "earlier message");
            if (st != CG_OK) { /* the injected failure hit an on-demand upload: reported, state kept */
                ck_assert_int_eq(st, CG_E_CUDA);
                ck_assert(fail);
                CGT_OK(cg_loader_next(pf, &bx, &by));
            }
            ck_assert_msg(same_tensor(ax, bx), "trial %d call %lld: x differs", trial, (long long)c);
            ck_assert_msg(same_tensor(ay, by), "trial %d call %lld: y differs", trial, (long long)c);
            ck_assert_int_eq((int64_t)cg_loader_epoch(ref), (int64_t)cg_loader_epoch(pf));
            cg_tensor_release(ax);
            cg_tensor_release(ay);
            cg_tensor_release(bx);
            cg_tensor_release(by);
        }
        fake_fail_at = -1;
        cg_loader_free(pf); /* usually with a batch prefetched: waits, frees everything */
        ck_assert_int_eq(fake_pinned, 0);
        ck_assert_int_eq(fake_events, 0);
        ck_assert_int_eq(fake_hsync, fake_issued);
        cg_loader_free(ref);
        cg_dataset_free(ds);
        cg_tensor_release(x);
        cg_tensor_release(y);
    }
}
END_TEST

/* The fit loop's pattern (set_epoch(e), then next() to the end of the epoch, from
 * initial_epoch on) draws each epoch's permutation once, and it is exactly
 * cg_permutation(seed, e): the batches are those of a loader that draws it eagerly. Used to
 * draw it twice (create or the end of the previous epoch, then set_epoch again). With
 * prefetch the end of the last epoch also draws the next one, to upload its first batch. */
START_TEST(test_each_epoch_permuted_once) {
    cg_backend fb = fake_backend();
    const int64_t n = 53, bs = 8, epochs = 5;
    cg_tensor *x, *y;
    make_data(n, 3, &x, &y);
    cg_dataset *ds;
    CGT_OK(cg_dataset_from_tensors(x, y, &ds));
    int64_t want[53], got[53];
    for (int prefetch = 0; prefetch < 2; prefetch++) {
        for (int64_t initial = 0; initial <= 2; initial += 2) {
            for (int use_set = 0; use_set < 2; use_set++) {
                if (!use_set && initial) continue; /* without set_epoch the loader starts at epoch 0 */
                cg_loader_opts o = {.batch_size = bs, .shuffle = 1, .seed = 0x5eed + (uint64_t)initial, .device = CG_CPU};
                cg_loader *l;
                CGT_OK(cg_loader_create(ds, &o, &l));
                if (prefetch) CGT_OK(cg__loader_use_backend(l, &fb));
                for (int64_t e = initial; e < epochs; e++) {
                    if (use_set) CGT_OK(cg_loader_set_epoch(l, (uint64_t)e));
                    ck_assert_int_eq((int64_t)cg_loader_epoch(l), e);
                    CGT_OK(cg_permutation(o.seed, (uint64_t)e, n, want));
                    int64_t k = 0;
                    for (;;) {
                        cg_tensor *bx, *by;
                        CGT_OK(cg_loader_next(l, &bx, &by));
                        if (!bx) break;
                        const int64_t *py = cg_tensor_data(by);
                        for (int64_t i = 0; i < cg_tensor_shape(by)[0]; i++) got[k++] = py[i];
                        cg_tensor_release(bx);
                        cg_tensor_release(by);
                    }
                    ck_assert_int_eq(k, n);
                    ck_assert_msg(!memcmp(got, want, sizeof want), "epoch %lld: batches are not cg_permutation's order",
                                  (long long)e);
                }
                ck_assert_msg(cg__loader_permutations(l) == epochs - initial + prefetch,
                              "prefetch %d, initial epoch %lld, set_epoch %d: %lld permutations for %lld epochs",
                              prefetch, (long long)initial, use_set, (long long)cg__loader_permutations(l),
                              (long long)(epochs - initial));
                cg_loader_free(l);
            }
        }
    }
    /* restarting the current epoch, or returning to it, reuses its permutation */
    cg_loader_opts o = {.batch_size = bs, .shuffle = 1, .seed = 7, .device = CG_CPU};
    cg_loader *l;
    CGT_OK(cg_loader_create(ds, &o, &l));
    cg_tensor *bx, *by;
    CGT_OK(cg_loader_next(l, &bx, &by));
    cg_tensor_release(bx);
    cg_tensor_release(by);
    CGT_OK(cg_loader_set_epoch(l, 0));
    CGT_OK(cg_loader_next(l, &bx, &by));
    CGT_OK(cg_permutation(7, 0, n, want));
    ck_assert_int_eq(((const int64_t *)cg_tensor_data(by))[0], want[0]);
    cg_tensor_release(bx);
    cg_tensor_release(by);
    ck_assert_int_eq(cg__loader_permutations(l), 1);
    cg_loader_free(l);
    /* no shuffling: nothing to draw */
    o.shuffle = 0;
    CGT_OK(cg_loader_create(ds, &o, &l));
    CGT_OK(cg_loader_set_epoch(l, 3));
    CGT_OK(cg_loader_next(l, &bx, &by));
    ck_assert_int_eq(((const int64_t *)cg_tensor_data(by))[0], 0);
    cg_tensor_release(bx);
    cg_tensor_release(by);
    ck_assert_int_eq(cg__loader_permutations(l), 0);
    cg_loader_free(l);
    ck_assert_int_eq(fake_pinned, 0);
    ck_assert_int_eq(fake_events, 0);
    cg_dataset_free(ds);
    cg_tensor_release(x);
    cg_tensor_release(y);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("loader");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_epochs_cover_everything);
    tcase_add_test(tc, test_permutation_properties);
    tcase_add_test(tc, test_no_shuffle_and_errors);
    tcase_add_test(tc, test_standardize);
    tcase_add_test(tc, test_scope_handoff);
    tcase_add_test(tc, test_prefetch_logic_matches_sync);
    tcase_add_test(tc, test_each_epoch_permuted_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
