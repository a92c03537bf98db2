/* Element conversions between dtypes, shared by host and device code (like philox.h) so
 * the CPU and CUDA backends convert bit for bit alike.
 *
 * Float to f16/bf16 rounds to nearest even (from f32; f64 goes through f32 first).
 * f32 <-> f64 of a NaN is done by hand: the sign and the payload bits that fit are kept and
 * the NaN is made quiet (what x86 does). GPUs return one canonical NaN instead, so leaving
 * it to the hardware would make the backends differ in the bits.
 * Float to integer truncates toward zero, saturating at the target's range (NaN -> 0) so
 * no conversion is undefined behaviour; int64 to u8/i32 wraps like a C cast.
 * Integer to integer copies keep all 64 bits (never pass through double). */
#ifndef CG_DTYPE_CONVERT_H
#define CG_DTYPE_CONVERT_H

#include <stdint.h>
#include <string.h>

#include "cgrad/common.h"

#include "hostdev.h"

CG_HOSTDEV uint32_t cg_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

CG_HOSTDEV float cg_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

CG_HOSTDEV double cg_f32_to_f64(float f) {
    uint32_t u = cg_f32_bits(f);
    if ((u & 0x7fffffffu) <= 0x7f800000u) return (double)f;
    uint64_t b = ((uint64_t)(u & 0x80000000u) << 32) | 0x7ff8000000000000ull | ((uint64_t)(u & 0x3fffffu) << 29);
    double d;
    memcpy(&d, &b, 8);
    return d;
}

CG_HOSTDEV float cg_f64_to_f32(double d) {
    uint64_t b;
    memcpy(&b, &d, 8);
    if ((b & 0x7fffffffffffffffull) <= 0x7ff0000000000000ull) return (float)d;
    return cg_bits_f32((uint32_t)((b >> 32) & 0x80000000u) | 0x7fc00000u | (uint32_t)((b >> 29) & 0x3fffffu));
}

CG_HOSTDEV uint16_t cg_f32_to_bf16(float f) {
    uint32_t u = cg_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                                /* nearest even */
    return (uint16_t)(u >> 16);
}

CG_HOSTDEV float cg_bf16_to_f32(uint16_t h) { return cg_bits_f32((uint32_t)h << 16); }

CG_HOSTDEV uint16_t cg_f32_to_f16(float f) {
    uint32_t u = cg_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                                   /* below 2^-14: subnormal or zero */
        if (a < 0x33000000u) return sign;                    /* below 2^-25: rounds to 0 */
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24: value = m * 2^(e-150), unit = 2^-24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias exponent 127 -> 15, keep 10 mantissa bits, round nearest even */
    uint32_t r = a - 0x38000000u; /* (127-15) << 23 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

CG_HOSTDEV float cg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return cg_bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
        float v = (float)m * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return cg_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

CG_HOSTDEV int cg_dtype_is_int(int dt) { return dt == CG_I32 || dt == CG_I64 || dt == CG_U8; }

CG_HOSTDEV double cg_load_f(const void *p, int dt) {
    switch (dt) {
    case CG_F32: return cg_f32_to_f64(*(const float *)p);
    case CG_F64: return *(const double *)p;
    case CG_F16: return cg_f32_to_f64(cg_f16_to_f32(*(const uint16_t *)p));
    case CG_BF16: return cg_f32_to_f64(cg_bf16_to_f32(*(const uint16_t *)p));
    case CG_I32: return *(const int32_t *)p;
    case CG_I64: return (double)*(const int64_t *)p;
    case CG_U8: return *(const uint8_t *)p;
    default: return 0.0;
    }
}

CG_HOSTDEV int64_t cg_load_i(const void *p, int dt) {
    switch (dt) {
    case CG_I32: return *(const int32_t *)p;
    case CG_I64: return *(const int64_t *)p;
    case CG_U8: return *(const uint8_t *)p;
    default: return 0;
    }
}

CG_HOSTDEV void cg_store_i(void *p, int dt, int64_t v) {
    switch (dt) {
    case CG_I32: *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)v; break;
    case CG_I64: *(int64_t *)p = v; break;
    case CG_U8: *(uint8_t *)p = (uint8_t)(uint64_t)v; break;
    default: break;
    }
}

/* Truncate toward zero, saturating to int64 (NaN -> 0). */
CG_HOSTDEV int64_t cg_f_to_i64(double v) {
    if (v != v) return 0;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}

CG_HOSTDEV void cg_store_f(void *p, int dt, double v) {
    switch (dt) {
    case CG_F32: *(float *)p = cg_f64_to_f32(v); break;
    case CG_F64: *(double *)p = v; break;
    case CG_F16: *(uint16_t *)p = cg_f32_to_f16(cg_f64_to_f32(v)); break;
    case CG_BF16: *(uint16_t *)p = cg_f32_to_bf16(cg_f64_to_f32(v)); break;
    case CG_I32: {
        double c = v != v ? 0.0 : v < -2147483648.0 ? -2147483648.0 : v > 2147483647.0 ? 2147483647.0 : v;
        *(int32_t *)p = (int32_t)c;
        break;
    }
    case CG_U8: {
        double c = v != v ? 0.0 : v < 0.0 ? 0.0 : v > 255.0 ? 255.0 : v;
        *(uint8_t *)p = (uint8_t)c;
        break;
    }
    case CG_I64: *(int64_t *)p = cg_f_to_i64(v); break;
    default: break;
    }
}

/* One element from (src, sd) to (dst, dd). */
CG_HOSTDEV void cg_convert_one(void *dst, int dd, const void *src, int sd) {
    if (cg_dtype_is_int(dd) && cg_dtype_is_int(sd)) cg_store_i(dst, dd, cg_load_i(src, sd));
    else cg_store_f(dst, dd, cg_load_f(src, sd));
}

#endif
