/* CPU inverted dropout. Element i is kept iff cg_dropout_keep(seed, offset, i, p) (the
 * Philox stream of philox.h, so every backend draws the same mask); kept elements are
 * scaled by 1/(1-p). Backward regenerates the mask instead of storing one. */
#include <string.h>

#include "cpu_kernels.h"
#include "philox.h"

/* Philox4x32-10 for LANES consecutive counters at once, written lane-parallel so the
 * compiler turns each round into vector multiplies; bit-identical to cg_philox4x32_10
 * (checked against it in tests/test_ops.c through the dropout mask). */
#define LANES 8
/* out[4 * l + k] = word k of block counter + l: the words in element order */
static void philox_lanes(uint64_t counter, uint64_t seed, uint32_t out[4 * LANES]) {
    uint32_t c0[LANES], c1[LANES], c2[LANES], c3[LANES];
    for (int l = 0; l < LANES; l++) {
        uint64_t c = counter + (uint64_t)l;
        c0[l] = (uint32_t)c;
        c1[l] = (uint32_t)(c >> 32);
        c2[l] = 0;
        c3[l] = 0;
    }
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        for (int l = 0; l < LANES; l++) {
            uint64_t p0 = (uint64_t)0xD2511F53u * c0[l], p1 = (uint64_t)0xCD9E8D57u * c2[l];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
            c1[l] = (uint32_t)p1;
            c3[l] = (uint32_t)p0;
            c0[l] = n0;
            c2[l] = n2;
        }
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    for (int l = 0; l < LANES; l++) {
        out[4 * l] = c0[l];
        out[4 * l + 1] = c1[l];
        out[4 * l + 2] = c2[l];
        out[4 * l + 3] = c3[l];
    }
}

/* y[i] = keep(i) ? x[i] * scale : 0; element i uses word i % 4 of block offset + i / 4.
 * keep  <=>  cg_u01(w) >= p  <=>  (w >> 8) >= p * 2^24 (both sides exact in float).
 * A dropped element is exactly 0 even when x is NaN. The select is written over restrict
 * pointers as a bit mask so it vectorises instead of branching on random bits. */
#define DEFINE_MASK(T, U)                                                                                     \
    static void mask_##T(const uint32_t *restrict w, const T *restrict x, T *restrict y, int64_t m, float thr, \
                         T sc) {                                                                              \
        for (int64_t j = 0; j < m; j++) {                                                                     \
            T v = x[j] * sc;                                                                                  \
            U bits, keep = (U)0 - (U)((float)(int32_t)(w[j] >> 8) >= thr); /* all ones or zero */            \
            memcpy(&bits, &v, sizeof bits);                                                                   \
            bits &= keep;                                                                                     \
            memcpy(&y[j], &bits, sizeof bits);                                                                \
        }                                                                                                     \
    }
DEFINE_MASK(float, uint32_t)
DEFINE_MASK(double, uint64_t)
#undef DEFINE_MASK

#define DROPOUT_LOOP(T, x, y)                                                                                 \
    do {                                                                                                      \
        float thr = (float)p->p * 16777216.0f;                                                                \
        T sc = (T)(p->p < 1.0 ? 1.0 / (1.0 - p->p) : 0.0);                                                    \
        uint32_t w[4 * LANES];                                                                                \
        for (int64_t i0 = 0; i0 < n; i0 += 4 * LANES) {                                                       \
            philox_lanes(p->offset + (uint64_t)i0 / 4, p->seed, w);                                           \
            mask_##T(w, (x) + i0, (y) + i0, n - i0 < 4 * LANES ? n - i0 : 4 * LANES, thr, sc);                \
        }                                                                                                     \
    } while (0)

static cg_status dropout_apply(const cg_op_params *p, const cg_tensor *src, cg_tensor *dst) {
    int64_t n = cg_cpu_numel(dst);
    if (p->p < 0.0 || p->p > 1.0) return CG_FAIL(CG_E_INVALID, "dropout: p = %g is outside [0, 1]", p->p);
    switch (dst->dtype) {
    case CG_F32: {
        const float *x = cg__ptr(src);
        float *y = cg__ptr(dst);
        DROPOUT_LOOP(float, x, y);
        return CG_OK;
    }
    case CG_F64: {
        const double *x = cg__ptr(src);
        double *y = cg__ptr(dst);
        DROPOUT_LOOP(double, x, y);
        return CG_OK;
    }
    default: return CG_CPU_BAD_DTYPE("dropout", dst->dtype);
    }
}
#undef DROPOUT_LOOP

cg_status cg_dropout_fwd_cpu(const cg_op_call *c) { return dropout_apply(c->p, c->in[0], c->out); }

/* The same mask and scale applied to the output gradient. */
cg_status cg_dropout_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    if (!gin[0]) return CG_OK;
    return dropout_apply(c->p, gout, gin[0]);
}
