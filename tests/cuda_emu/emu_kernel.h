/* The device side of the CUDA emulator (tests/cuda_emu/README.md): what a kernels/ .cu file
 * needs beyond the toolkit's host headers when g++ compiles it for the CPU. translate.py
 * turns each launch `k<<<grid, block, smem, stream>>>(args)` into
 * `cgemu::launch(k, grid, block, smem, stream)(args)` and `extern __shared__ T name[];`
 * into a pointer to the launch's dynamic shared memory; this header does the rest.
 *
 * Execution model: a block's threads are fibers on the calling host thread (emu_sched.cpp),
 * run one at a time until each finishes or waits at a barrier: __syncthreads() for the
 * block, the warp's 32 lanes for a shuffle. Static __shared__ variables become function
 * statics, which is one copy per block because blocks run one after another. */
#ifndef CG_EMU_KERNEL_H
#define CG_EMU_KERNEL_H

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <utility>

namespace cgemu {

/* the running thread's coordinates (set by the scheduler before it switches to a fiber) */
extern uint3 g_thread, g_block;
extern dim3 g_block_dim, g_grid_dim;

/* barriers: the block's, and the warp's (for shuffles) */
void block_barrier();
void warp_exchange(const void *mine, void *theirs, int src_lane, unsigned mask, size_t bytes);
void *dynamic_smem();

/* checks the configuration (a bad one is the launch's error, as on a device), then queues
 * the grid on stream s: thread_body runs once per thread of every block when the stream's
 * work runs (emu_stream.cpp); a fault then (a deadlock at a barrier, a shuffle with missing
 * lanes) is a sticky error */
cudaError_t queue_grid(dim3 grid, dim3 block, size_t smem, cudaStream_t s, std::function<void()> thread_body);

template <typename... P> struct launcher {
    void (*fn)(P...);
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    template <typename... A> void operator()(A &&...a) const {
        /* kernel parameters by value, as on a device; each thread gets its own copy */
        std::tuple<P...> args(std::forward<A>(a)...);
        void (*f)(P...) = fn;
        (void)queue_grid(grid, block, smem, stream, [f, args] {
            std::tuple<P...> copy = args;
            std::apply(f, copy);
        });
    }
};

template <typename... P>
launcher<P...> launch(void (*fn)(P...), dim3 grid, dim3 block, size_t smem = 0, cudaStream_t s = 0) {
    return launcher<P...>{fn, grid, block, smem, s};
}

} // namespace cgemu

#define threadIdx (cgemu::g_thread)
#define blockIdx (cgemu::g_block)
#define blockDim (cgemu::g_block_dim)
#define gridDim (cgemu::g_grid_dim)
#define warpSize 32

#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __forceinline__
#define __forceinline__ inline
#undef __noinline__
#define __noinline__ __attribute__((noinline))

static inline void __syncthreads() { cgemu::block_barrier(); }
static inline void __syncwarp(unsigned = 0xffffffffu) {}
static inline void __threadfence() {}
static inline void __threadfence_system() {}

template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = (int)(threadIdx.x & 31);
    int src = ((lane ^ lane_mask) & (width - 1)) | (lane & ~(width - 1));
    T r;
    cgemu::warp_exchange(&v, &r, src, mask, sizeof(T));
    return r;
}
template <typename T> static inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    int lane = (int)(threadIdx.x & 31);
    T r;
    cgemu::warp_exchange(&v, &r, (src_lane & (width - 1)) | (lane & ~(width - 1)), mask, sizeof(T));
    return r;
}

/* one host thread runs every fiber: plain read-modify-writes are atomic here */
template <typename T> static inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T> static inline T atomicCAS(T *p, T cmp, T v) {
    T old = *p;
    if (old == cmp) *p = v;
    return old;
}

static inline void __stwb(float4 *p, float4 v) { *p = v; }
static inline void __stwb(float *p, float v) { *p = v; }
static inline float4 __ldg(const float4 *p) { return *p; }
static inline float __ldg(const float *p) { return *p; }

/* explicitly rounded arithmetic: the build has -ffp-contract=off, so plain operators round each step */
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }

#endif
