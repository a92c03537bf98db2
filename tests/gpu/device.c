/* GPU suite, device behaviour only (not in the CPU harness): the sticky device error for a
 * bad softmax-CE label, the caching allocator (stats, reuse, OOM status, caching off), the
 * data loader's prefetching uploads against the CPU loader, and (with two devices or more)
 * the device guard (a call on cuda:N leaves the caller's thread on its own device) and
 * copies between devices. */
#include "gpu_suite.h"

#if defined(CG_HAVE_CUDA) && !defined(CG_GPU_SUITE_ON_CPU)
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <pthread.h>
#endif

/* ---------------------------------------------------------------- sticky device error */

/* A label outside [0, C) cannot be checked on the GPU without a host wait: the CE kernel
 * records it in the context's sticky error word (NaN for that row as before), the CE call
 * itself returns CG_OK, and the next host wait (item, to_host, cg_cuda_synchronize)
 * returns CG_E_INVALID naming label and row like the CPU message. The word is then clear:
 * a sync passes and a valid call gives the CPU's value. Warp (C 10) and block (C 1500)
 * paths, i64 and i32 labels, label C and -1. */
START_TEST(ce_bad_label_reported_at_next_sync) {
    cgt_rand r = cgt_rand_make("ce bad label");
    for (int k = 0; k < 8; k++) {
        /* 10: warp rows; 1500: register rows (f32, C % 4 == 0); 1501: block rows */
        int64_t N = 6, C = k & 1 ? (k & 4 ? 1501 : 1500) : 10, xs[2] = {N, C};
        cg_dtype ldt = k & 2 ? CG_I32 : CG_I64;
        long long bad = k & 4 ? -1 : (long long)C;
        int how = k % 3; /* 0: item of the mean, 1: to_host of the rows, 2: cg_cuda_synchronize */
        cg_reduction red = how == 1 ? CG_REDUCE_NONE : CG_REDUCE_MEAN;
        double lab[6];
        for (int i = 0; i < N; i++) lab[i] = (double)cgt_randint(&r, 0, C);
        cg_tensor *x = cgt_randn(&r, xs, 2, CG_F32, GPU);
        double *xh = cgt_read(x);
        cg_tensor *good = cgt_tensor(lab, &N, 1, ldt, GPU);
        cg_tensor *xc = cgt_tensor(xh, xs, 2, CG_F32, CG_CPU), *goodc = cgt_tensor(lab, &N, 1, ldt, CG_CPU);
        lab[3] = (double)bad;
        cg_tensor *badl = cgt_tensor(lab, &N, 1, ldt, GPU), *badc = cgt_tensor(lab, &N, 1, ldt, CG_CPU);
        char want[96];
        snprintf(want, sizeof want, "label %lld at row 3 is outside [0, %lld)", bad, (long long)C);
        cg_tensor *loss = NULL, *lc = NULL;
        CGT_FAILS(cg_softmax_cross_entropy(xc, badc, red, 0.1, &lc), CG_E_INVALID, want); /* the CPU's words */
        CGT_OK(cg_softmax_cross_entropy(x, badl, red, 0.1, &loss)); /* no host wait: nothing known yet */
        if (how == 0) {
            double v = 0;
            CGT_FAILS(cg_tensor_item(loss, &v), CG_E_INVALID, want, "softmax_cross_entropy", "synchronisation");
        } else if (how == 1) {
            float h[6];
            CGT_FAILS(cg_tensor_to_host(loss, h, sizeof h), CG_E_INVALID, want);
            for (int i = 0; i < N; i++) /* the data still comes back: NaN only for the bad row */
                ck_assert_msg(i == 3 ? isnan(h[i]) : isfinite(h[i]), "case %d row %d: %g", k, i, (double)h[i]);
        } else {
            CGT_FAILS(cg_cuda_synchronize(0), CG_E_INVALID, want);
        }
        CGT_OK(cg_cuda_synchronize(0)); /* reported once, then clear */
        cg_tensor_release(loss);
        loss = NULL;
        CGT_OK(cg_softmax_cross_entropy(x, good, CG_REDUCE_MEAN, 0.1, &loss));
        CGT_OK(cg_softmax_cross_entropy(xc, goodc, CG_REDUCE_MEAN, 0.1, &lc));
        double g = cgt_item(loss), c = cgt_item(lc);
        ck_assert_msg(cgt_close(g, c, gpu_tol(CG_F32, 10)), "case %d after the error: cpu %.9g cuda %.9g", k, c, g);
        cg_tensor_release(loss);
        cg_tensor_release(lc);
        cg_tensor_release(x);
        cg_tensor_release(xc);
        cg_tensor_release(good);
        cg_tensor_release(goodc);
        cg_tensor_release(badl);
        cg_tensor_release(badc);
        free(xh);
    }
}
END_TEST

/* ---------------------------------------------------------------- allocator */

START_TEST(allocator_stats_reuse_and_oom) {
    cg_cuda_mem_stats s0, s1, s2, s3;
    int caching_before; /* the suite may run with CG_CUDA_NO_CACHING=1: put it back after */
    CGT_OK(cg_cuda_get_caching(0, &caching_before));
    CGT_OK(cg_cuda_set_caching(0, 1));
    CGT_OK(cg_cuda_empty_cache(0));
    CGT_OK(cg_cuda_memory_stats(0, &s0));
    ck_assert_uint_eq(s0.cached, 0);
    int64_t n = 1 << 20;
    cg_tensor *t = NULL;
    CGT_OK(cg_tensor_zeros(&n, 1, CG_F32, GPU, &t));
    CGT_OK(cg_cuda_memory_stats(0, &s1));
    ck_assert_msg(s1.in_use >= s0.in_use + (size_t)n * 4, "in_use did not grow");
    ck_assert(s1.peak_in_use >= s1.in_use);
    cg_tensor_release(t);
    CGT_OK(cg_cuda_memory_stats(0, &s2));
    ck_assert_msg(s2.cached >= (size_t)n * 4, "a freed block was not cached");
    CGT_OK(cg_tensor_zeros(&n, 1, CG_F32, GPU, &t));
    CGT_OK(cg_cuda_memory_stats(0, &s3));
    ck_assert_msg(s3.n_cache_hit > s2.n_cache_hit, "same-size allocation was not served from the cache");
    ck_assert_msg(s3.n_cuda_malloc == s2.n_cuda_malloc, "a cache hit called cudaMalloc");
    cg_tensor_release(t);
    CGT_OK(cg_cuda_empty_cache(0));
    CGT_OK(cg_cuda_memory_stats(0, &s3));
    ck_assert_uint_eq(s3.cached, 0);
    /* far beyond any device: a status, not a crash */
    int64_t huge[2] = {(int64_t)1 << 22, (int64_t)1 << 22};
    int64_t small = 1000;
    CGT_OK(cg_tensor_zeros(&small, 1, CG_F32, GPU, &t));
    cg_tensor_release(t); /* one cached block for the OOM path to give back */
    cg_cuda_mem_stats s4, s5;
    CGT_OK(cg_cuda_memory_stats(0, &s4));
    ck_assert(s4.cached > 0);
    CGT_FAILS(cg_tensor_empty(huge, 2, CG_F32, GPU, &t), CG_E_OOM, "bytes", "free");
    CGT_OK(cg_cuda_memory_stats(0, &s5));
    ck_assert_msg(s5.n_oom_retry == s4.n_oom_retry + 1, "the OOM path did not retry once (%llu -> %llu)",
                  (unsigned long long)s4.n_oom_retry, (unsigned long long)s5.n_oom_retry);
    ck_assert_msg(s5.cached == 0, "the OOM path kept %llu cached bytes", (unsigned long long)s5.cached);
    cg_cuda_device_info info;
    CGT_OK(cg_cuda_device_info_get(0, &info));
    ck_assert(info.sm_count > 0);
    CGT_FAILS(cg_cuda_device_info_get(999, &info), CG_E_DEVICE, "cuda:999");
    CGT_OK(cg_cuda_synchronize(0));
    CGT_OK(cg_cuda_set_caching(0, caching_before));
}
END_TEST

/* Caching off: exact-size blocks from cudaMalloc, handed back at their free; kernels that
 * run in between still see their data (the free waits for the stream). */
START_TEST(allocator_without_caching) {
    int64_t small = 1000;
    cg_tensor *t = NULL;
    int caching_before, on;
    CGT_OK(cg_cuda_get_caching(0, &caching_before));
    const char *env = getenv("CG_CUDA_NO_CACHING"); /* test_gpu_emu_nocache sets it to 1 */
    if (env && strcmp(env, "1") == 0) ck_assert_msg(!caching_before, "CG_CUDA_NO_CACHING=1 left caching on");
    CGT_OK(cg_cuda_set_caching(0, 1));
    CGT_OK(cg_tensor_zeros(&small, 1, CG_F32, GPU, &t));
    cg_tensor_release(t); /* a cached block that switching off must give back */
    cg_cuda_mem_stats s0, s1, s2, s3;
    CGT_OK(cg_cuda_set_caching(0, 0));
    CGT_OK(cg_cuda_get_caching(0, &on));
    ck_assert_int_eq(on, 0);
    CGT_OK(cg_cuda_memory_stats(0, &s0));
    ck_assert_uint_eq(s0.cached, 0);
    int64_t n = 1003; /* 4012 bytes: a size class would round it to 4096 */
    CGT_OK(cg_tensor_zeros(&n, 1, CG_F32, GPU, &t));
    CGT_OK(cg_cuda_memory_stats(0, &s1));
    ck_assert_uint_eq(s1.in_use, s0.in_use + (size_t)n * 4);
    ck_assert_uint_eq(s1.reserved, s0.reserved + (size_t)n * 4);
    ck_assert_uint_eq(s1.n_cuda_malloc, s0.n_cuda_malloc + 1);
    ck_assert_uint_eq(s1.n_cache_hit, s0.n_cache_hit);
    /* work on the block, queued before its free, still reads the right data */
    cgt_rand r = cgt_rand_make("allocator_without_caching");
    float *h = malloc((size_t)n * sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (int64_t i = 0; i < n; i++) h[i] = (float)cgt_uniform(&r, -2, 2);
    cg_tensor *x = NULL, *y = NULL, *yc = NULL;
    CGT_OK(cg_tensor_from_host(h, &n, 1, CG_F32, GPU, &x));
    CGT_OK(cg_relu(x, &y));
    cg_tensor_release(x);
    CGT_OK(cg_tensor_to(y, CG_CPU, &yc));
    const float *yd = cg_tensor_data(yc);
    for (int64_t i = 0; i < n; i++) ck_assert_float_eq(yd[i], h[i] > 0 ? h[i] : 0.0f);
    cg_tensor_release(yc);
    cg_tensor_release(y);
    cg_tensor_release(t);
    CGT_OK(cg_cuda_memory_stats(0, &s2));
    ck_assert_uint_eq(s2.cached, 0);
    ck_assert_uint_eq(s2.in_use, s0.in_use);
    ck_assert_uint_eq(s2.reserved, s0.reserved);
    ck_assert_uint_eq(s2.n_cuda_free - s0.n_cuda_free, s2.n_cuda_malloc - s0.n_cuda_malloc);
    ck_assert_uint_eq(s2.n_cache_hit, s0.n_cache_hit);
    /* back on: a freed block is cached again */
    CGT_OK(cg_cuda_set_caching(0, 1));
    CGT_OK(cg_tensor_zeros(&n, 1, CG_F32, GPU, &t));
    cg_tensor_release(t);
    CGT_OK(cg_cuda_memory_stats(0, &s3));
    ck_assert_msg(s3.cached >= 4096, "caching back on: the freed block was not cached");
    CGT_OK(cg_cuda_get_caching(0, &on));
    ck_assert_int_eq(on, 1);
    CGT_FAILS(cg_cuda_set_caching(999, 0), CG_E_DEVICE, "cuda:999");
    CGT_FAILS(cg_cuda_get_caching(0, NULL), CG_E_INVALID, "enabled");
    CGT_OK(cg_cuda_set_caching(0, caching_before));
    free(h);
}
END_TEST

/* ---------------------------------------------------------------- data loader prefetch */

/* A CPU copy of t (caller releases); NULL stays NULL. */
static cg_tensor *to_host(const cg_tensor *t) {
    if (!t) return NULL;
    cg_tensor *h = NULL;
    CGT_OK(cg_tensor_to(t, CG_CPU, &h));
    return h;
}

static void assert_same_batch(cg_tensor *ref, cg_tensor *got, const char *what, int call) {
    if (!ref || !got) {
        ck_assert_msg(ref == got, "%s, call %d: one loader ended the epoch, the other did not", what, call);
        return;
    }
    ck_assert_msg(cg_tensor_device(got).type == CG_DEVICE_CUDA, "%s, call %d: batch not on the GPU", what, call);
    cg_tensor *h = to_host(got);
    ck_assert_int_eq(cg_tensor_ndim(h), cg_tensor_ndim(ref));
    for (int d = 0; d < cg_tensor_ndim(h); d++) ck_assert_int_eq(cg_tensor_shape(h)[d], cg_tensor_shape(ref)[d]);
    ck_assert_int_eq(cg_tensor_dtype(h), cg_tensor_dtype(ref));
    ck_assert_msg(memcmp(cg_tensor_data(h), cg_tensor_data(ref), cg_tensor_nbytes(ref)) == 0,
                  "%s, call %d: batch differs from the CPU loader's", what, call);
    cg_tensor_release(h);
}

/* Two epochs (plus the end-of-epoch returns) on cuda:0, prefetching and not, against the
 * CPU loader bit for bit. Between calls the batch is used on the compute stream (x * 2,
 * checked too) so uploads really overlap queued work; the allocator cache is stocked with
 * NaN blocks of the batch sizes so a batch read before its upload landed shows up. */
START_TEST(loader_prefetch_matches_cpu) {
    cgt_rand r = cgt_rand_make("gpu_loader");
    for (int trial = 0; trial < 8; trial++) {
        int64_t n = trial == 0 ? 1 : cgt_randint(&r, 2, 3000), f = cgt_randint(&r, 1, 300);
        int64_t bs = cgt_randint(&r, 1, trial < 4 ? 64 : 1024);
        if (trial == 7) bs = n / 4 > 0 ? n / 4 : 1; /* at least 4 batches: a restart inside the epoch */
        int drop = trial & 1, no_pf = trial == 6, with_y = trial != 3;
        double *xv = randn_arr(&r, n * f, 0, 1);
        double *yv = malloc((size_t)n * sizeof *yv);
        for (int64_t i = 0; i < n; i++) yv[i] = (double)(i % 10);
        int64_t xs[2] = {n, f}, ys[1] = {n};
        cg_tensor *x = cgt_tensor(xv, xs, 2, CG_F32, CG_CPU), *y = cgt_tensor(yv, ys, 1, CG_I64, CG_CPU);
        cg_dataset *ds;
        CGT_OK(cg_dataset_from_tensors(x, with_y ? y : NULL, &ds));
        cg_loader_opts o = {.batch_size = bs, .shuffle = trial % 3 != 2, .seed = cgt_next(&r), .drop_last = drop,
                            .device = CG_CPU};
        cg_loader *ref, *gl;
        CGT_OK(cg_loader_create(ds, &o, &ref));
        o.device = GPU;
        o.no_prefetch = no_pf;
        CGT_OK(cg_loader_create(ds, &o, &gl));
        int64_t full = (bs < n ? bs : n) * f, part = (n % bs) * f;
        int64_t pc[4] = {full, full, part, part};
        poison_cache(pc, 4, CG_F32);
        char what[96];
        snprintf(what, sizeof what, "trial %d (n %lld, f %lld, bs %lld, drop %d, y %d, prefetch %d)", trial,
                 (long long)n, (long long)f, (long long)bs, drop, with_y, !no_pf);
        int64_t nb = cg_loader_num_batches(ref);
        int calls = 2 * (int)(nb + 1) + 1; /* two epochs and a bit */
        /* trial 5: fit's restart at the end of epoch 0 (the prefetched first batch of epoch 1
         * is kept); trial 7: a jump to epoch 1 from the middle of epoch 0, which drops the
         * prefetched batch of epoch 0 */
        int restart_at = trial == 5 ? (int)nb + 1 : trial == 7 ? (int)(nb / 2) : -1;
        for (int c = 0; c < calls; c++) {
            if (c == restart_at) {
                CGT_OK(cg_loader_set_epoch(ref, 1));
                CGT_OK(cg_loader_set_epoch(gl, 1));
            }
            cg_tensor *ax, *ay, *gx, *gy;
            CGT_OK(cg_loader_next(ref, &ax, &ay));
            CGT_OK(cg_loader_next(gl, &gx, &gy));
            ck_assert_int_eq((int64_t)cg_loader_epoch(ref), (int64_t)cg_loader_epoch(gl));
            if (gx) { /* queue work on the batch before reading it back */
                cg_tensor *g2 = NULL, *a2 = NULL;
                CGT_OK(cg_scale(gx, 2.0, 0.0, &g2));
                CGT_OK(cg_scale(ax, 2.0, 0.0, &a2));
                assert_same_batch(a2, g2, what, c);
                cg_tensor_release(g2);
                cg_tensor_release(a2);
            }
            assert_same_batch(ax, gx, what, c);
            assert_same_batch(ay, gy, what, c);
            cg_tensor_release(ax);
            cg_tensor_release(ay);
            cg_tensor_release(gx);
            cg_tensor_release(gy);
        }
        cg_loader_free(gl); /* with a batch in flight */
        cg_loader_free(ref);
        cg_dataset_free(ds);
        cg_tensor_release(x);
        cg_tensor_release(y);
        free(xv);
        free(yv);
    }
    CGT_OK(cg_cuda_synchronize(0));
}
END_TEST

/* ---------------------------------------------------------------- the device guard */

#if defined(CG_HAVE_CUDA) && !defined(CG_GPU_SUITE_ON_CPU) && CUDART_VERSION >= 12050
#define HAVE_GUARD_TESTS 1

static int thread_device(void) {
    int d = -1;
    ck_assert_int_eq(cudaGetDevice(&d), cudaSuccess);
    return d;
}

/* whether device `dev` has a primary context, asked of the driver as the library asks it */
static int has_primary_context(int dev) {
    void *get = NULL, *state = NULL;
    enum cudaDriverEntryPointQueryResult q1 = cudaDriverEntryPointSymbolNotFound, q2 = q1;
    ck_assert_int_eq(cudaGetDriverEntryPointByVersion("cuDeviceGet", &get, 12000, cudaEnableDefault, &q1), cudaSuccess);
    ck_assert_int_eq(
        cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &state, 12000, cudaEnableDefault, &q2),
        cudaSuccess);
    ck_assert_msg(q1 == cudaDriverEntryPointSuccess && q2 == cudaDriverEntryPointSuccess && get && state,
                  "the driver does not give cuDeviceGet / cuDevicePrimaryCtxGetState");
    CUdevice d;
    unsigned int flags = 0;
    int active = -1;
    ck_assert_int_eq(((CUresult(*)(CUdevice *, int))get)(&d, dev), CUDA_SUCCESS);
    ck_assert_int_eq(((CUresult(*)(CUdevice, unsigned int *, int *))state)(d, &flags, &active), CUDA_SUCCESS);
    return active;
}

static int need_two_devices(const char *test) {
    if (cg_device_count() >= 2) return 1;
    printf("%s: skipped, it needs two CUDA devices (%d here; the emulator: CGEMU_DEVICES=2)\n", test,
           cg_device_count());
    return 0;
}

/* expr succeeds and leaves the calling thread on cuda:want */
#define KEEPS(want, expr)                                                                                     \
    do {                                                                                                      \
        CGT_OK(expr);                                                                                         \
        int keeps_now_ = thread_device();                                                                     \
        ck_assert_msg(keeps_now_ == (want), "%s left the thread on cuda:%d, not cuda:%d", #expr, keeps_now_,   \
                      (want));                                                                                \
    } while (0)

/* Public calls on cuda:dev, each checked to leave the thread on cuda:caller, with their
 * results checked against host arithmetic and the CPU: tensors from and to the host, ops
 * forward and backward, a model's fit (optimizer, prefetching loader) and predict, the
 * allocator and device controls, a failing call, and the frees. On the emulator every
 * kernel, copy and library call is also checked to run while dev is current. */
static void work_on(int dev, int caller, cgt_rand *r) {
    cg_device g = CG_CUDA(dev);
    int64_t shape[2] = {37, 9}, n = 37 * 9;
    double *xv = randn_arr(r, n, 0, 1);
    float xf[37 * 9];
    for (int64_t i = 0; i < n; i++) xf[i] = (float)xv[i];
    cg_tensor *x = NULL, *y = NULL, *loss = NULL, *gh = NULL;
    KEEPS(caller, cg_tensor_from_host(xf, shape, 2, CG_F32, g, &x));
    KEEPS(caller, cg_tensor_set_requires_grad(x, 1));
    KEEPS(caller, cg_relu(x, &y));
    KEEPS(caller, cg_sum(y, CG_ALL_AXES, 0, &loss));
    KEEPS(caller, cg_backward(loss));
    double got = 0, want = 0;
    KEEPS(caller, cg_tensor_item(loss, &got));
    for (int64_t i = 0; i < n; i++) want += xf[i] > 0 ? xf[i] : 0;
    ck_assert_msg(cgt_close(got, want, gpu_tol(CG_F32, 0)), "sum(relu(x)) on cuda:%d: %.9g, want %.9g", dev, got,
                  want);
    KEEPS(caller, cg_tensor_to(cg_tensor_grad(x), CG_CPU, &gh));
    float gv[37 * 9];
    KEEPS(caller, cg_tensor_to_host(gh, gv, sizeof gv));
    for (int64_t i = 0; i < n; i++) ck_assert_msg(gv[i] == (xf[i] > 0 ? 1.0f : 0.0f), "grad[%lld]", (long long)i);

    cg_cuda_mem_stats ms;
    cg_cuda_device_info info;
    int caching = 0;
    KEEPS(caller, cg_cuda_memory_stats(dev, &ms));
    ck_assert_msg(ms.in_use > 0, "cuda:%d reports nothing in use", dev);
    KEEPS(caller, cg_cuda_reset_peak(dev));
    KEEPS(caller, cg_cuda_get_caching(dev, &caching));
    KEEPS(caller, cg_cuda_set_caching(dev, caching));
    KEEPS(caller, cg_cuda_empty_cache(dev));
    KEEPS(caller, cg_cuda_device_info_get(dev, &info));
    KEEPS(caller, cg_cuda_synchronize(dev));

    /* a 9 -> 12 -> 3 classifier fitted on cuda:dev from host data (the loader uploads ahead),
     * then its predictions against the same weights on the CPU */
    double *lv = malloc(37 * sizeof *lv);
    for (int64_t i = 0; i < 37; i++) lv[i] = (double)(i % 3), xv[i * 9 + i % 3] += 2;
    cg_tensor *hx = cgt_tensor(xv, shape, 2, CG_F32, CG_CPU), *hl = cgt_tensor(lv, shape, 1, CG_I64, CG_CPU);
    cg_model *m = NULL;
    KEEPS(caller, cg_model_create(g, CG_F32, 11, &m));
    KEEPS(caller, cg_model_add_dense(m, 9, 12, CG_ACT_RELU));
    KEEPS(caller, cg_model_add_dense(m, 12, 3, CG_ACT_NONE));
    cg_optim_config o = cg_optim_adam(1e-2);
    cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    KEEPS(caller, cg_model_compile(m, &o, &l, CG_METRIC_ACCURACY));
    cg_fit_config fc = cg_fit_config_default();
    fc.epochs = 2;
    fc.batch_size = 8;
    fc.verbose = CG_VERBOSE_QUIET;
    KEEPS(caller, cg_model_fit(m, hx, hl, &fc, NULL));
    ck_assert_int_eq(cg_optimizer_steps(cg_model_optimizer(m)), 2 * 5);
    cg_tensor *p_gpu = NULL, *p_cpu = NULL;
    KEEPS(caller, cg_model_predict(m, hx, &p_gpu));
    double *pg = cgt_read(p_gpu);
    KEEPS(caller, cg_model_to(m, CG_CPU));
    KEEPS(caller, cg_model_predict(m, hx, &p_cpu));
    double *pc = cgt_read(p_cpu);
    CGT_ASSERT_CLOSE_ARR(pg, pc, 37 * 3, gpu_tol(CG_F32, 0), "predictions on cuda vs cpu");

    /* a failure on cuda:dev: its status and message, and the caller's device */
    int64_t huge[2] = {(int64_t)1 << 22, (int64_t)1 << 22};
    cg_tensor *t = NULL;
    CGT_FAILS(cg_tensor_empty(huge, 2, CG_F32, g, &t), CG_E_OOM, "bytes", "free");
    ck_assert_int_eq(thread_device(), caller);

    cg_tensor_release(x); /* the frees: the allocator may hand blocks back to the device */
    cg_tensor_release(y);
    cg_tensor_release(loss);
    KEEPS(caller, cg_cuda_empty_cache(dev));
    cg_model_free(m);
    ck_assert_int_eq(thread_device(), caller);
    cg_tensor_release(p_gpu), cg_tensor_release(p_cpu), cg_tensor_release(gh);
    cg_tensor_release(hx), cg_tensor_release(hl);
    free(pg), free(pc), free(lv), free(xv);
}

/* First in its test case, in a fresh process (ctest test_gpu_emu_2dev): a thread that never
 * used CUDA calls cgrad on cuda:1 only. Going back to cuda:0 would create a context on cuda:0
 * (every process of a one-process-per-GPU service would then hold memory on GPU 0), so the
 * guard leaves the thread on cuda:1 instead, as PyTorch's does, and cuda:0 stays untouched. */
START_TEST(guard_creates_no_context_elsewhere) {
    if (!need_two_devices("guard_creates_no_context_elsewhere")) return;
    if (has_primary_context(0)) {
        const char *only = getenv("CK_RUN_CASE");
        /* run on its own (ctest test_gpu_emu_2dev), the process is fresh: then it must not be */
        ck_assert_msg(!only || strcmp(only, "devices") != 0, "cuda:0 has a context before the first test");
        printf("guard_creates_no_context_elsewhere: skipped, cuda:0 already has a context in this process (run "
               "CK_RUN_CASE=devices on its own for it)\n");
        return;
    }
    cgt_rand r = cgt_rand_make("guard fresh");
    int64_t n = 1000;
    cg_tensor *x = cgt_randn(&r, &n, 1, CG_F32, CG_CUDA(1)), *y = NULL;
    CGT_OK(cg_relu(x, &y));
    double *xv = cgt_read(x), *yv = cgt_read(y);
    for (int64_t i = 0; i < n; i++) ck_assert(yv[i] == (xv[i] > 0 ? xv[i] : 0));
    ck_assert_msg(!has_primary_context(0), "cgrad created a context on cuda:0 for work on cuda:1");
    ck_assert(has_primary_context(1));
    ck_assert_int_eq(thread_device(), 1);
    cg_tensor_release(x), cg_tensor_release(y);
    free(xv), free(yv);
}
END_TEST

/* a thread that never set a device (so it is on cuda:0, whose context another thread made)
 * runs an op on cuda:1: it must be back on cuda:0 after */
typedef struct fresh_job {
    const double *x;
    int64_t n;
    cg_status st;
    int dev_before, dev_after, relu_ok;
} fresh_job;

static void *fresh_thread(void *arg) {
    fresh_job *j = arg;
    cudaGetDevice(&j->dev_before);
    float xf[64];
    for (int64_t i = 0; i < j->n; i++) xf[i] = (float)j->x[i];
    cg_tensor *x = NULL, *y = NULL;
    j->st = cg_tensor_from_host(xf, &j->n, 1, CG_F32, CG_CUDA(1), &x);
    if (j->st == CG_OK) j->st = cg_relu(x, &y);
    float yf[64];
    if (j->st == CG_OK) j->st = cg_tensor_to_host(y, yf, (size_t)j->n * sizeof *yf);
    j->relu_ok = j->st == CG_OK;
    for (int64_t i = 0; j->relu_ok && i < j->n; i++) j->relu_ok = yf[i] == fmaxf(xf[i], 0.0f);
    cg_tensor_release(x), cg_tensor_release(y);
    cudaGetDevice(&j->dev_after);
    return NULL;
}

/* The caller's device is cuda:0 and the work on cuda:1, then the other way round; then a
 * thread that never chose a device. */
START_TEST(guard_restores_the_callers_device) {
    if (!need_two_devices("guard_restores_the_callers_device")) return;
    cgt_rand r = cgt_rand_make("guard restore");
    for (int caller = 0; caller < 2; caller++) {
        ck_assert_int_eq(cudaSetDevice(caller), cudaSuccess); /* the embedding program's own device */
        work_on(1 - caller, caller, &r);
        ck_assert_int_eq(thread_device(), caller);
    }
    ck_assert_int_eq(cudaSetDevice(0), cudaSuccess); /* where the rest of the suite expects it */
    ck_assert(has_primary_context(0));
    double *xv = randn_arr(&r, 64, 0, 1);
    fresh_job j = {.x = xv, .n = 64, .st = CG_E_INTERNAL, .dev_before = -1, .dev_after = -1};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, fresh_thread, &j), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(j.st == CG_OK && j.relu_ok, "relu on cuda:1 from a new thread: %s", cg_status_str(j.st));
    ck_assert_int_eq(j.dev_before, 0);
    ck_assert_msg(j.dev_after == 0, "a new thread was left on cuda:%d", j.dev_after);
    free(xv);
}
END_TEST
/* Tensors and a model moved between two devices, both ways, each call leaving the caller on
 * cuda:0: cg_tensor_to of a result still queued on the source (the copy must wait for it),
 * used at once by a kernel on the destination (which must wait for the copy: on the
 * emulator work runs only when the host needs it, so a missing wait reads the destination's
 * fresh garbage), also into a block recycled from a tensor that a queued kernel still
 * reads; a transposed view; a dtype change into a strided destination through
 * cg_tensor_copy_; a model fitted on one device, moved with its optimizer state, predicting
 * the same on the other (from an input on the first) and fitting on there. */
START_TEST(copies_between_devices) {
    if (!need_two_devices("copies_between_devices")) return;
    cgt_rand r = cgt_rand_make("peer copies");
    ck_assert_int_eq(cudaSetDevice(0), cudaSuccess);
    int64_t shape[2] = {33, 17}, n = 33 * 17;
    for (int dir = 0; dir < 2; dir++) {
        cg_device a = CG_CUDA(dir), b = CG_CUDA(1 - dir);
        double *xv = randn_arr(&r, n, 0, 1);
        cg_tensor *x = cgt_tensor(xv, shape, 2, CG_F32, a), *y = NULL, *yb = NULL, *z = NULL;
        KEEPS(0, cg_relu(x, &y));
        KEEPS(0, cg_tensor_to(y, b, &yb));
        ck_assert(cg_tensor_device(yb).type == CG_DEVICE_CUDA && cg_tensor_device(yb).index == b.index);
        KEEPS(0, cg_relu(yb, &z)); /* relu(relu(x)) == relu(x), bit for bit */
        char want0[16], want1[16];
        snprintf(want0, sizeof want0, "on cuda:%d", a.index);
        snprintf(want1, sizeof want1, "on cuda:%d", b.index);
        cg_tensor *bad = NULL;
        CGT_FAILS(cg_add(x, yb, &bad), CG_E_DEVICE, want0, want1, "cg_tensor_to"); /* ops do not mix devices */
        ck_assert_int_eq(thread_device(), 0);
        double *yv = cgt_read(y), *zv = cgt_read(z);
        for (int64_t i = 0; i < n; i++)
            ck_assert_msg(zv[i] == yv[i] && yv[i] == (double)fmaxf((float)xv[i], 0.0f), "element %lld", (long long)i);

        /* the destination's block recycled from a tensor a kernel queued on b still reads: the
         * copy (queued on a, run when the host reads y) must wait for that kernel */
        double *qv = randn_arr(&r, n, 0, 1);
        cg_tensor *q = cgt_tensor(qv, shape, 2, CG_F32, b), *w = NULL, *yb2 = NULL;
        KEEPS(0, cg_relu(q, &w));
        cg_tensor_release(q); /* its block goes back to b's cache, for the next tensor of its size */
        KEEPS(0, cg_tensor_to(y, b, &yb2));
        double *y2 = cgt_read(y), *wv = cgt_read(w), *yb2v = cgt_read(yb2);
        for (int64_t i = 0; i < n; i++) {
            ck_assert_msg(wv[i] == (double)fmaxf((float)qv[i], 0.0f), "relu(q)[%lld] saw the copy", (long long)i);
            ck_assert_msg(yb2v[i] == y2[i], "i %lld: %g vs %g (q %g)", (long long)i, yb2v[i], y2[i], qv[i]);
        }
        cg_tensor_release(w), cg_tensor_release(yb2);
        free(qv), free(y2), free(wv), free(yb2v);

        cg_tensor *xt = NULL, *xtb = NULL, *d = NULL, *dt = NULL;
        KEEPS(0, cg_transpose(x, 0, 1, &xt));
        KEEPS(0, cg_tensor_to(xt, b, &xtb));
        ck_assert(cg_tensor_is_contiguous(xtb) && cg_tensor_dim(xtb, 0) == 17);
        double *tv = cgt_read(xtb);
        for (int64_t i = 0; i < 33; i++)
            for (int64_t j = 0; j < 17; j++) ck_assert(tv[j * 33 + i] == (double)(float)xv[i * 17 + j]);
        KEEPS(0, cg_tensor_zeros(shape, 2, CG_F64, b, &d));
        KEEPS(0, cg_transpose(d, 0, 1, &dt));
        KEEPS(0, cg_tensor_copy_(dt, xt)); /* f32 (17, 33) view on a -> f64 (17, 33) view on b */
        double *dv = cgt_read(d);
        for (int64_t i = 0; i < n; i++) ck_assert(dv[i] == (double)(float)xv[i]);

        double *lv = malloc(33 * sizeof *lv);
        for (int64_t i = 0; i < 33; i++) lv[i] = (double)(i % 3);
        cg_tensor *hl = cgt_tensor(lv, shape, 1, CG_I64, CG_CPU), *hx = cgt_tensor(xv, shape, 2, CG_F32, CG_CPU);
        cg_model *m = NULL;
        KEEPS(0, cg_model_create(a, CG_F32, 5, &m));
        KEEPS(0, cg_model_add_dense(m, 17, 8, CG_ACT_RELU));
        KEEPS(0, cg_model_add_dense(m, 8, 3, CG_ACT_NONE));
        cg_optim_config o = cg_optim_adam(1e-2);
        cg_loss_config l = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
        KEEPS(0, cg_model_compile(m, &o, &l, 0));
        cg_fit_config fc = cg_fit_config_default();
        fc.epochs = 1;
        fc.batch_size = 11;
        fc.verbose = CG_VERBOSE_QUIET;
        KEEPS(0, cg_model_fit(m, hx, hl, &fc, NULL));
        cg_tensor *pa = NULL, *pb = NULL;
        KEEPS(0, cg_model_predict(m, hx, &pa));
        KEEPS(0, cg_model_to(m, b));
        KEEPS(0, cg_model_predict(m, x, &pb)); /* x is on a: moved to the model's device */
        ck_assert(cg_tensor_device(pb).index == b.index);
        double *pav = cgt_read(pa), *pbv = cgt_read(pb);
        CGT_ASSERT_CLOSE_ARR(pbv, pav, 33 * 3, gpu_tol(CG_F32, 0), "predictions after cg_model_to");
        KEEPS(0, cg_model_fit(m, hx, hl, &fc, NULL));
        ck_assert_int_eq(cg_optimizer_steps(cg_model_optimizer(m)), 2 * 3);
        cg_model_free(m);
        cg_tensor_release(x), cg_tensor_release(y), cg_tensor_release(yb), cg_tensor_release(z);
        cg_tensor_release(xt), cg_tensor_release(xtb), cg_tensor_release(d), cg_tensor_release(dt);
        cg_tensor_release(hl), cg_tensor_release(hx), cg_tensor_release(pa), cg_tensor_release(pb);
        free(xv), free(yv), free(zv), free(tv), free(dv), free(lv), free(pav), free(pbv);
    }
}
END_TEST
#endif

void gpu_add_device(TCase *ops, TCase *large) {
    (void)large;
#ifndef CG_GPU_SUITE_ON_CPU /* device behaviour: deferred label errors, the allocator, async uploads */
    tcase_add_test(ops, ce_bad_label_reported_at_next_sync);
    tcase_add_test(ops, allocator_stats_reuse_and_oom);
    tcase_add_test(ops, allocator_without_caching);
    tcase_add_test(ops, loader_prefetch_matches_cpu);
#else
    (void)ops;
#endif
}

void gpu_add_devices(TCase *devices) {
#ifdef HAVE_GUARD_TESTS /* the device guard, with two devices or more (the fresh-process check first) */
    tcase_add_test(devices, guard_creates_no_context_elsewhere);
    tcase_add_test(devices, guard_restores_the_callers_device);
    tcase_add_test(devices, copies_between_devices);
#else
    (void)devices;
#endif
}
