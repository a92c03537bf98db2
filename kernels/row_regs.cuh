// Long f32 rows in registers: softmax / log-softmax forward and backward, fused softmax
// cross-entropy, LayerNorm forward and backward, for 1024 < d <= 8192 with d % 4 == 0 and
// 16-byte aligned rows.
// The kernels live beside their ops (softmax.cu: softmax, its backward and softmax-CE;
// layernorm.cu: LayerNorm forward and backward), at the end of each file; this header holds
// what they share. Their launchers are called first: each returns false, launching
// nothing, when rowreg_plan() says the row does not fit, and the block kernels run; true
// when it launched, with the launch status in *err.
//
// One block per row, NV float4 per thread: every load of the row is issued before any
// arithmetic (NV independent 16-byte loads in flight per thread), then exact two-pass
// statistics on the registers (max, then the sum of exp(x - max); mean, then the sum of
// squared deviations), then one write. One DRAM read of x and one write of y, the floor.
// The online (max, sum) of the block kernels needs an exp per element in a loop-carried
// chain before the next load may issue; here the chain is gone. Semantics as the CPU:
// NaN anywhere makes the row NaN, +inf makes a softmax row NaN (exp(inf - inf)), a -inf
// logit has probability 0.
//
// Variant switch: cg_rowreg_enabled() (cg__cuda_set_row_kernels, in softmax.cu) lets
// bench_kernels time the block kernels on the same shapes in the same run.
#ifndef CG_KERNELS_ROW_REGS_CUH
#define CG_KERNELS_ROW_REGS_CUH

#include "common.cuh"

// a block-per-row kernel keeps its row in shared memory up to this size (+ static shared
// memory stays under the 48 KiB default)
#define SMEM_ROW_BYTES (40 * 1024)

int cg_rowreg_enabled(void);

// NV (float4 per thread: 2, 4 or 8, since d4 > 256) and threads for a row of d floats, or
// 0 when the shape or the pointers do not fit the register kernels. threads = ceil(d4 / NV)
// rounded up to a warp: 160 to 256.
static int rowreg_plan(int64_t d, const void *const *ptrs, int n, int *threads) {
    if (!cg_rowreg_enabled() || d <= 1024 || d > 8192 || d % 4) return 0;
    for (int i = 0; i < n; i++)
        if (ptrs[i] && !cg_aligned16(ptrs[i])) return 0;
    int64_t d4 = d / 4;
    int nv = d4 <= 512 ? 2 : d4 <= 1024 ? 4 : 8;
    int64_t t = (d4 + nv - 1) / nv;
    *threads = (int)((t + 31) / 32 * 32);
    return nv;
}

// KERNEL<NV><<<rows, threads>>>(args) for the planned NV
#define ROWREG_LAUNCH(KERNEL, nv, rows, threads, st, ...)                                                    \
    do {                                                                                                      \
        if ((nv) == 2) KERNEL<2><<<(unsigned)(rows), (threads), 0, (st)>>>(__VA_ARGS__);                       \
        else if ((nv) == 4) KERNEL<4><<<(unsigned)(rows), (threads), 0, (st)>>>(__VA_ARGS__);                  \
        else KERNEL<8><<<(unsigned)(rows), (threads), 0, (st)>>>(__VA_ARGS__);                                 \
    } while (0)

template <int NV> __device__ __forceinline__ void rowreg_load(const float4 *__restrict__ r, int64_t d4, float4 (&v)[NV], float pad) {
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t j = threadIdx.x + (int64_t)k * blockDim.x;
        v[k] = j < d4 ? r[j] : make_float4(pad, pad, pad, pad);
    }
}

#endif
