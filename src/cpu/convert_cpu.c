/* CPU dtype conversion: strided copies between any two dtypes, and fill.
 *
 * Float to f16/bf16 rounds to nearest even (from f32; f64 goes through f32 first).
 * Float to integer truncates toward zero, saturating at the target's range (NaN -> 0) so
 * no conversion is undefined behaviour; int64 to u8/i32 wraps like a C cast.
 * Integer to integer copies keep all 64 bits (never pass through double). */
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"

/* ---- f16 / bf16 bit conversions ---- */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                                /* nearest even */
    return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

static uint16_t f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
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

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
        float v = (float)m * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* ---- per-dtype element load/store ---- */

static int is_int(cg_dtype dt) { return dt == CG_I32 || dt == CG_I64 || dt == CG_U8; }

static double load_f(const void *p, cg_dtype dt) {
    switch (dt) {
    case CG_F32: return *(const float *)p;
    case CG_F64: return *(const double *)p;
    case CG_F16: return f16_to_f32(*(const uint16_t *)p);
    case CG_BF16: return bf16_to_f32(*(const uint16_t *)p);
    case CG_I32: return *(const int32_t *)p;
    case CG_I64: return (double)*(const int64_t *)p;
    case CG_U8: return *(const uint8_t *)p;
    default: return 0.0;
    }
}

static int64_t load_i(const void *p, cg_dtype dt) {
    switch (dt) {
    case CG_I32: return *(const int32_t *)p;
    case CG_I64: return *(const int64_t *)p;
    case CG_U8: return *(const uint8_t *)p;
    default: return 0;
    }
}

static void store_i(void *p, cg_dtype dt, int64_t v) {
    switch (dt) {
    case CG_I32: *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)v; break;
    case CG_I64: *(int64_t *)p = v; break;
    case CG_U8: *(uint8_t *)p = (uint8_t)(uint64_t)v; break;
    default: break;
    }
}

/* Truncate toward zero, saturating to int64 (NaN -> 0). */
static int64_t f_to_i64(double v) {
    if (v != v) return 0;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}

static void store_f(void *p, cg_dtype dt, double v) {
    switch (dt) {
    case CG_F32: *(float *)p = (float)v; break;
    case CG_F64: *(double *)p = v; break;
    case CG_F16: *(uint16_t *)p = f32_to_f16((float)v); break;
    case CG_BF16: *(uint16_t *)p = f32_to_bf16((float)v); break;
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
    case CG_I64: *(int64_t *)p = f_to_i64(v); break;
    default: break;
    }
}

static void convert_one(void *dst, cg_dtype dd, const void *src, cg_dtype sd) {
    if (is_int(dd) && is_int(sd)) store_i(dst, dd, load_i(src, sd));
    else store_f(dst, dd, load_f(src, sd));
}

/* ---- strided copy ---- */


cg_status cg_copy_strided_cpu(cg_tensor *dst, const cg_tensor *src) {
    int64_t n = cg_cpu_numel(dst);
    if (n != cg_cpu_numel(src) || dst->ndim != src->ndim) {
        char a[96], b[96];
        return CG_FAIL(CG_E_SHAPE, "copy: shapes %s and %s differ", cg__shape_str(dst->shape, dst->ndim, a, sizeof a),
                       cg__shape_str(src->shape, src->ndim, b, sizeof b));
    }
    for (int d = 0; d < dst->ndim; d++)
        if (dst->shape[d] != src->shape[d]) {
            char a[96], b[96];
            return CG_FAIL(CG_E_SHAPE, "copy: shapes %s and %s differ",
                           cg__shape_str(dst->shape, dst->ndim, a, sizeof a),
                           cg__shape_str(src->shape, src->ndim, b, sizeof b));
        }
    if (cg_dtype_size(dst->dtype) == 0 || cg_dtype_size(src->dtype) == 0)
        return CG_FAIL(CG_E_DTYPE, "copy: invalid dtype %d -> %d", (int)src->dtype, (int)dst->dtype);
    if (n == 0) return CG_OK;
    size_t ds = cg_dtype_size(dst->dtype), ss = cg_dtype_size(src->dtype);
    char *dp = cg__ptr(dst);
    const char *sp = cg__ptr(src);
    int same = dst->dtype == src->dtype;
    if (same && cg_tensor_is_contiguous(dst) && cg_tensor_is_contiguous(src)) {
        memmove(dp, sp, (size_t)n * ds);
        return CG_OK;
    }
    int nd = dst->ndim;
    int64_t inner = nd ? dst->shape[nd - 1] : 1;
    int64_t dstep = nd ? dst->strides[nd - 1] : 0, sstep = nd ? src->strides[nd - 1] : 0;
    int64_t idx[CG_MAX_DIMS] = {0};
    int64_t doff = 0, soff = 0;
    for (int64_t base = 0; base < n; base += inner) {
        for (int64_t k = 0; k < inner; k++) {
            char *d = dp + (size_t)(doff + k * dstep) * ds;
            const char *s = sp + (size_t)(soff + k * sstep) * ss;
            if (same) memcpy(d, s, ds);
            else convert_one(d, dst->dtype, s, src->dtype);
        }
        for (int d = nd - 2; d >= 0; d--) { /* odometer over the outer axes */
            idx[d]++;
            doff += dst->strides[d];
            soff += src->strides[d];
            if (idx[d] < dst->shape[d]) break;
            doff -= dst->strides[d] * dst->shape[d];
            soff -= src->strides[d] * src->shape[d];
            idx[d] = 0;
        }
    }
    return CG_OK;
}

/* ---- fill ---- */

cg_status cg_fill_cpu(cg_tensor *t, double value) {
    size_t es = cg_dtype_size(t->dtype);
    if (es == 0) return CG_FAIL(CG_E_DTYPE, "fill: invalid dtype %d", (int)t->dtype);
    int64_t n = cg_cpu_numel(t);
    if (n == 0) return CG_OK;
    char *p = cg__ptr(t);
    switch (t->dtype) {
    case CG_F32: {
        float v = (float)value, *q = (float *)p;
        for (int64_t i = 0; i < n; i++) q[i] = v;
        return CG_OK;
    }
    case CG_F64: {
        double *q = (double *)p;
        for (int64_t i = 0; i < n; i++) q[i] = value;
        return CG_OK;
    }
    default: {
        char one[8];
        store_f(one, t->dtype, value);
        for (int64_t i = 0; i < n; i++) memcpy(p + (size_t)i * es, one, es);
        return CG_OK;
    }
    }
}
