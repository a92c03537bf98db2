/* Philox4x32-10 counter-based generator (Salmon et al., SC'11), shared by host and device
 * code so every backend draws identical streams.
 *
 * Stream layout used throughout cgrad: element i of a draw at (seed, offset) uses the
 * 128-bit counter (offset + i/4, 0) under key (seed lo, seed hi), output word i % 4.
 * A draw of n elements advances offset by ceil(n / 4). */
#ifndef CG_PHILOX_H
#define CG_PHILOX_H

#include <stdint.h>

#include "hostdev.h"

typedef struct cg_philox4 {
    uint32_t v[4];
} cg_philox4;

CG_HOSTDEV uint32_t cg_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* The full generator: 128-bit counter, 64-bit key. */
CG_HOSTDEV cg_philox4 cg_philox4x32_10_full(cg_philox4 ctr, uint32_t k0, uint32_t k1) {
    uint32_t c0 = ctr.v[0], c1 = ctr.v[1], c2 = ctr.v[2], c3 = ctr.v[3];
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = cg_mulhilo32(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = cg_mulhilo32(0xCD9E8D57u, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    cg_philox4 r;
    r.v[0] = c0; r.v[1] = c1; r.v[2] = c2; r.v[3] = c3;
    return r;
}

/* cgrad's use: counter (counter, 0), key = the 64-bit seed. */
CG_HOSTDEV cg_philox4 cg_philox4x32_10(uint64_t counter, uint64_t seed) {
    cg_philox4 c;
    c.v[0] = (uint32_t)counter; c.v[1] = (uint32_t)(counter >> 32); c.v[2] = 0; c.v[3] = 0;
    return cg_philox4x32_10_full(c, (uint32_t)seed, (uint32_t)(seed >> 32));
}

/* 32-bit word of element i in the stream (seed, offset). */
CG_HOSTDEV uint32_t cg_philox_word(uint64_t seed, uint64_t offset, uint64_t i) {
    cg_philox4 r = cg_philox4x32_10(offset + i / 4, seed);
    return r.v[i % 4];
}

/* Uniform in [0, 1) with 24 random bits: exact in float and double alike. */
CG_HOSTDEV float cg_u01(uint32_t w) { return (float)(w >> 8) * (1.0f / 16777216.0f); }
/* Uniform in (0, 1]: safe for log(). */
CG_HOSTDEV float cg_u01_open0(uint32_t w) { return ((float)(w >> 8) + 1.0f) * (1.0f / 16777216.0f); }

/* Dropout keeps element i when its uniform is >= p. */
CG_HOSTDEV int cg_dropout_keep(uint64_t seed, uint64_t offset, uint64_t i, float p) {
    return cg_u01(cg_philox_word(seed, offset, i)) >= p;
}

#endif
