/* Philox4x32-10 (src/philox.h) against the Random123 known-answer vectors, and the
 * stream layout cgrad builds on it (counter = offset + i/4, key = seed). */
#include <math.h>
#include <stdlib.h>

#include "cgt.h"
#include "philox.h"

static void check_kat(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                      const uint32_t want[4]) {
    cg_philox4 ctr = {{c0, c1, c2, c3}};
    cg_philox4 r = cg_philox4x32_10_full(ctr, k0, k1);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(r.v[i] == want[i], "word %d: %08x, want %08x", i, (unsigned)r.v[i], (unsigned)want[i]);
}

START_TEST(random123_kat_zero) {
    const uint32_t want[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
    check_kat(0, 0, 0, 0, 0, 0, want);
}
END_TEST

START_TEST(random123_kat_ones) {
    const uint32_t want[4] = {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu};
    check_kat(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, want);
}
END_TEST

START_TEST(random123_kat_pi) {
    const uint32_t want[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
    check_kat(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, want);
}
END_TEST

START_TEST(stream_layout) {
    cgt_rand r = cgt_rand_make("philox layout");
    uint64_t seed = cgt_next(&r), off = cgt_next(&r) >> 20;
    for (uint64_t i = 0; i < 64; i++) {
        cg_philox4 ctr = {{(uint32_t)(off + i / 4), (uint32_t)((off + i / 4) >> 32), 0, 0}};
        cg_philox4 w = cg_philox4x32_10_full(ctr, (uint32_t)seed, (uint32_t)(seed >> 32));
        ck_assert_uint_eq(cg_philox_word(seed, off, i), w.v[i % 4]);
    }
    /* a draw of n elements advances the offset by ceil(n/4): word 4 at offset o is word 0 at o+1 */
    ck_assert_uint_eq(cg_philox_word(seed, off, 4), cg_philox_word(seed, off + 1, 0));
    /* both halves of the 64-bit seed matter */
    ck_assert_uint_ne(cg_philox_word(seed, off, 0), cg_philox_word(seed ^ (1ull << 40), off, 0));
    ck_assert_uint_ne(cg_philox_word(seed, off, 0), cg_philox_word(seed ^ 1u, off, 0));
}
END_TEST

START_TEST(uniform_conversions) {
    ck_assert(cg_u01(0) == 0.0f);
    ck_assert(cg_u01(0xffffffffu) < 1.0f);
    ck_assert(cg_u01(0xffffffffu) == 1.0f - 1.0f / 16777216.0f);
    ck_assert(cg_u01_open0(0) > 0.0f);
    ck_assert(cg_u01_open0(0xffffffffu) == 1.0f);
    /* mean of many draws is 1/2 */
    double s = 0;
    const int n = 1 << 16;
    for (int i = 0; i < n; i++) s += cg_u01(cg_philox_word(12345, 0, (uint64_t)i));
    ck_assert_msg(fabs(s / n - 0.5) < 6 * sqrt(1.0 / 12 / n), "mean %g", s / n);
}
END_TEST

START_TEST(library_uniform_uses_the_stream) {
    /* cg_tensor_rand_uniform draws element i from word i of (seed, offset) */
    cgt_rand r = cgt_rand_make("philox lib");
    cg_rng rng = cgt_lib_rng(&r), start = rng;
    int64_t n = 11;
    cg_tensor *t = NULL;
    CGT_OK(cg_tensor_rand_uniform(&n, 1, CG_F64, CG_CPU, 0.0, 1.0, &rng, &t));
    double *v = cgt_read(t);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(v[i] == (double)cg_u01(cg_philox_word(start.seed, start.offset, (uint64_t)i)), "element %lld",
                      (long long)i);
    ck_assert_uint_eq(rng.offset, start.offset + 3);
    free(v);
    cg_tensor_release(t);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("philox");
    TCase *t = tcase_create("philox");
    tcase_add_test(t, random123_kat_zero);
    tcase_add_test(t, random123_kat_ones);
    tcase_add_test(t, random123_kat_pi);
    tcase_add_test(t, stream_layout);
    tcase_add_test(t, uniform_conversions);
    tcase_add_test(t, library_uniform_uses_the_stream);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
