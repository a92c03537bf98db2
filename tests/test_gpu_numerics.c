/* GPU numerics: every op forward and backward on CUDA against the CPU reference backend,
 * on fresh random inputs (the op-case table of tests/support plus odd and large shapes:
 * 1, 3, 127, 1025, 4099 columns; split reductions), in f32 and f64; bit-exact dropout
 * masks, Philox draws and dtype conversions; NaN/Inf propagation; optimizer, BLAS-1
 * helpers, matmul precision modes, the cuDNN twins, determinism of reductions, and the
 * caching allocator (stats, reuse, empty_cache, OOM status); the data loader's prefetching
 * uploads against the CPU loader, bit for bit.
 *
 * Poisoning: before each GPU run the allocator cache is stocked with NaN-filled blocks of
 * the sizes the op will ask for (bins are LIFO), so an output the kernel forgets to write
 * comes back NaN and fails (NaN never passes cgt_close).
 *
 * Three test cases: "ops", "large" (widest rows, longest reductions) and "devices" (the
 * device guard, with two devices or more; its tests say so and pass where there is one);
 * CK_RUN_CASE picks one.
 * The tests live in tests/gpu/, a file per area (gpu_suite.h); this file assembles the suite.
 *
 * Skips (exit 77, shown by ctest as skipped) with "no CUDA device: skipping GPU suite" in a CPU-only build or when
 * cg_device_count() == 0. Compiles in both builds (only public API + backend.h). */

#include "gpu_suite.h"

static Suite *suite(void) {
    Suite *s = suite_create("gpu_numerics");
    /* "ops": every kernel at small and odd shapes; "large": the same kernels again on the
     * widest rows and longest reductions (multi-chunk paths). compute-sanitizer runs "ops"
     * first (CK_RUN_CASE=ops), because under it the large shapes take minutes. */
    TCase *tc = tcase_create("ops"), *tl = tcase_create("large"), *td = tcase_create("devices");
    /* tests run in one process (CK_FORK=no in ctest and on the device): a test that fails
     * half way must not leave cuDNN or a low matmul precision on for the ones after it */
    tcase_add_checked_fixture(tc, NULL, reset_settings);
    tcase_add_checked_fixture(tl, NULL, reset_settings);
    tcase_set_timeout(tc, 600);
    tcase_set_timeout(tl, 600);
    gpu_add_ops(tc, tl);            /* op-case table, odd widths, reductions, broadcast, BatchNorm, cuDNN */
    gpu_add_bitwise(tc, tl);        /* dropout masks, Philox, conversions, copies, scale, BLAS-1 */
    gpu_add_special_values(tc, tl); /* NaN / Inf propagation */
    gpu_add_linear(tc, tl);         /* fused linear, matmul precisions */
    gpu_add_training(tc, tl);       /* optimizers, accuracy, fit, threaded predict */
    gpu_add_device(tc, tl);         /* sticky device error, allocator, loader prefetch (device only) */
    /* "devices" first: its first test wants a process in which cuda:0 was never used */
    tcase_add_checked_fixture(td, NULL, reset_settings);
    tcase_set_timeout(td, 600);
    gpu_add_devices(td); /* the device guard across two devices */
    suite_add_tcase(s, td);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, tl);
    return s;
}

int main(void) {
#ifdef CG_GPU_SUITE_ON_CPU
    printf("GPU suite harness: the device side runs on the CPU backend\n");
#else
    if (!cg_cuda_built() || cg_device_count() == 0) {
        printf("no CUDA device: skipping GPU suite (%s)\n", cg_cuda_availability());
        return 77; /* ctest reports it as skipped (SKIP_RETURN_CODE) */
    }
#endif
    return cgt_run_suite(suite());
}
