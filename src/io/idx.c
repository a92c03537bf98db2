/* IDX reader (the MNIST file format, http://yann.lecun.com/exdb/mnist/):
 *   0x00 0x00 <type> <ndim> | ndim big-endian u32 sizes | big-endian data, row-major
 * Gzip input is recognised by content (1f 8b) and inflated through zlib, from a path via
 * gzread (which passes plain files through unchanged) or from memory via inflate.
 * The element count implied by the sizes must match the (decompressed) length exactly. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "io_internal.h"

/* ---- byte sources ---- */

typedef struct idx_src {
    const char *name;
    gzFile gz;          /* path source */
    const uint8_t *mem; /* memory source */
    size_t mem_len, pos;
    int inflating;
    z_stream zs;
    int z_end;
} idx_src;

/* gzerror() prefixes its message with the path: drop it, ours names the file already. */
static const char *gz_msg(const idx_src *s, const char *m) {
    size_t k = strlen(s->name);
    return strncmp(m, s->name, k) == 0 && m[k] == ':' && m[k + 1] == ' ' ? m + k + 2 : m;
}

/* Reads up to n bytes; returns the count (short only at the end) or -1 with the error set. */
static long long src_read(idx_src *s, void *buf, size_t n) {
    if (s->gz) {
        size_t got = 0;
        while (got < n) {
            unsigned chunk = (n - got) > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
            int r = gzread(s->gz, (char *)buf + got, chunk);
            if (r < 0) {
                int zerr;
                const char *m = gzerror(s->gz, &zerr);
                CG_FAIL(CG_E_FORMAT, "idx: %s: corrupt or unreadable data: %s", s->name, gz_msg(s, m));
                return -1;
            }
            if (r == 0) break;
            got += (size_t)r;
        }
        if (got < n) { /* end of input: a cut-off gzip stream shows up here */
            int zerr;
            const char *m = gzerror(s->gz, &zerr);
            if (zerr != Z_OK) {
                CG_FAIL(CG_E_FORMAT, "idx: %s: truncated or corrupt gzip data: %s", s->name, gz_msg(s, m));
                return -1;
            }
        }
        return (long long)got;
    }
    if (!s->inflating) {
        size_t k = s->mem_len - s->pos < n ? s->mem_len - s->pos : n;
        memcpy(buf, s->mem + s->pos, k);
        s->pos += k;
        return (long long)k;
    }
    if (s->z_end) return 0;
    size_t got = 0;
    while (got < n && !s->z_end) {
        size_t want = n - got;
        s->zs.next_out = (Bytef *)buf + got;
        s->zs.avail_out = want > (1u << 30) ? (1u << 30) : (uInt)want;
        uInt before = s->zs.avail_out;
        int r = inflate(&s->zs, Z_NO_FLUSH);
        got += before - s->zs.avail_out;
        if (r == Z_STREAM_END) {
            s->z_end = 1;
        } else if (r == Z_BUF_ERROR && s->zs.avail_in == 0) {
            CG_FAIL(CG_E_FORMAT, "idx: %s: truncated gzip stream", s->name);
            return -1;
        } else if (r != Z_OK && r != Z_BUF_ERROR) {
            CG_FAIL(CG_E_FORMAT, "idx: %s: corrupt gzip data: %s", s->name, s->zs.msg ? s->zs.msg : "inflate failed");
            return -1;
        }
    }
    return (long long)got;
}

static void src_close(idx_src *s) {
    if (s->gz) gzclose(s->gz);
    if (s->inflating) inflateEnd(&s->zs);
}

/* ---- element types ---- */

typedef struct idx_type {
    uint8_t code;
    const char *name;
    size_t size;
    cg_dtype native;
    int is_float;
} idx_type;

static const idx_type idx_types[] = {
    {0x08, "u8", 1, CG_U8, 0},   {0x09, "i8", 1, CG_I32, 0},  {0x0B, "i16", 2, CG_I32, 0},
    {0x0C, "i32", 4, CG_I32, 0}, {0x0D, "f32", 4, CG_F32, 1}, {0x0E, "f64", 8, CG_F64, 1},
};

/* Decodes element i of big-endian raw data of type ty as a double. */
static double idx_value(const idx_type *ty, const uint8_t *p) {
    switch (ty->code) {
    case 0x08: return p[0];
    case 0x09: return (int8_t)p[0];
    case 0x0B: return (int16_t)(((uint16_t)p[0] << 8) | p[1]);
    case 0x0C: return (int32_t)cg__be32(p);
    case 0x0D: {
        uint32_t w = cg__be32(p);
        float f;
        memcpy(&f, &w, 4);
        return f;
    }
    default: {
        uint64_t w = ((uint64_t)cg__be32(p) << 32) | cg__be32(p + 4);
        double d;
        memcpy(&d, &w, 8);
        return d;
    }
    }
}

static void store(cg_dtype dt, void *dst, int64_t i, double v) {
    switch (dt) {
    case CG_U8: ((uint8_t *)dst)[i] = (uint8_t)v; break;
    case CG_I32: ((int32_t *)dst)[i] = (int32_t)v; break;
    case CG_I64: ((int64_t *)dst)[i] = (int64_t)v; break;
    case CG_F32: ((float *)dst)[i] = (float)v; break;
    default: ((double *)dst)[i] = v; break;
    }
}

/* Reads a whole IDX stream into a fresh CPU tensor (not handed out). */
static cg_status idx_read(idx_src *s, cg_idx_mode mode, cg_tensor **out) {
    const char *name = s->name;
    uint8_t head[4];
    long long r = src_read(s, head, 4);
    if (r < 0) return CG_E_FORMAT;
    if (r < 4) return CG_FAIL(CG_E_FORMAT, "idx: %s: truncated: %lld bytes, shorter than the 4-byte magic", name, r);
    if (head[0] != 0 || head[1] != 0)
        return CG_FAIL(CG_E_FORMAT, "idx: %s: wrong magic %02x %02x %02x %02x: an IDX file starts with 00 00 <type> "
                       "<ndim>", name, head[0], head[1], head[2], head[3]);
    const idx_type *ty = NULL;
    for (size_t i = 0; i < sizeof idx_types / sizeof *idx_types; i++)
        if (idx_types[i].code == head[2]) ty = &idx_types[i];
    if (!ty)
        return CG_FAIL(CG_E_FORMAT, "idx: %s: unknown element type 0x%02x (expected 08 u8, 09 i8, 0B i16, 0C i32, "
                       "0D f32 or 0E f64)", name, head[2]);
    int ndim = head[3];
    if (ndim < 1 || ndim > CG_MAX_DIMS)
        return CG_FAIL(CG_E_FORMAT, "idx: %s: dimension count %d is outside [1, %d]", name, ndim, CG_MAX_DIMS);
    uint8_t dims[4 * CG_MAX_DIMS];
    r = src_read(s, dims, 4 * (size_t)ndim);
    if (r < 0) return CG_E_FORMAT;
    if (r < 4 * ndim)
        return CG_FAIL(CG_E_FORMAT, "idx: %s: truncated in the dimension sizes (%d dimensions need %d bytes, got %lld)",
                       name, ndim, 4 * ndim, r);
    int64_t shape[CG_MAX_DIMS], numel = 1, nbytes, nonzero = 1;
    for (int i = 0; i < ndim; i++) {
        shape[i] = cg__be32(dims + 4 * i);
        /* zero dims included: strides of an empty tensor still multiply the other sizes */
        if (!cg__mul_ok(numel, shape[i], &numel) || (shape[i] && !cg__mul_ok(nonzero, shape[i], &nonzero)) ||
            nonzero > ((int64_t)1 << 48))
            return CG_FAIL(CG_E_FORMAT, "idx: %s: dimension sizes overflow", name);
    }
    char sb[128];
    cg__shape_str(shape, ndim, sb, sizeof sb);
    if (!cg__mul_ok(numel, (int64_t)ty->size, &nbytes) || (uint64_t)nbytes > (uint64_t)1 << 40)
        return CG_FAIL(CG_E_FORMAT, "idx: %s: shape %s of %s is implausibly large", name, sb, ty->name);
    /* a memory source cannot hold more than it has: check before allocating */
    if (s->mem && !s->inflating && (uint64_t)nbytes > s->mem_len - s->pos)
        return CG_FAIL(CG_E_FORMAT, "idx: %s: truncated: shape %s of %s needs %lld data bytes, the file has %zu", name,
                       sb, ty->name, (long long)nbytes, s->mem_len - s->pos);

    cg_dtype dt;
    switch (mode) {
    case CG_IDX_NATIVE: dt = ty->native; break;
    case CG_IDX_F32: dt = CG_F32; break;
    case CG_IDX_F32_UNIT:
        if (ty->code != 0x08)
            return CG_FAIL(CG_E_DTYPE, "idx: %s: CG_IDX_F32_UNIT needs u8 data, the file holds %s", name, ty->name);
        dt = CG_F32;
        break;
    case CG_IDX_I64:
        if (ty->is_float)
            return CG_FAIL(CG_E_DTYPE, "idx: %s: CG_IDX_I64 needs integer data, the file holds %s", name, ty->name);
        dt = CG_I64;
        break;
    default: return CG_FAIL(CG_E_INVALID, "idx: %s: unknown mode %d", name, (int)mode);
    }

    /* Payload first, tensor second: a stream (gzip, or a file) may be far shorter than its
     * header claims, so memory grows with the bytes that actually arrive. */
    const uint8_t *raw = NULL;
    uint8_t *owned = NULL;
    cg_status st = CG_OK;
    if (s->mem && !s->inflating) {
        raw = s->mem + s->pos;
        s->pos += (size_t)nbytes;
    } else {
        size_t cap = nbytes < (1 << 20) ? (size_t)nbytes : (1 << 20), have = 0;
        owned = malloc(cap ? cap : 1);
        if (!owned) return CG_FAIL(CG_E_OOM, "idx: %s: out of memory", name);
        for (;;) {
            r = src_read(s, owned + have, cap - have);
            if (r < 0) {
                st = CG_E_FORMAT;
                break;
            }
            have += (size_t)r;
            if (have < cap) {
                st = CG_FAIL(CG_E_FORMAT, "idx: %s: truncated: shape %s of %s needs %lld data bytes, the file has "
                             "%zu", name, sb, ty->name, (long long)nbytes, have);
                break;
            }
            if (have == (size_t)nbytes) break;
            size_t nc = cap * 2 < (size_t)nbytes ? cap * 2 : (size_t)nbytes;
            uint8_t *nb = realloc(owned, nc);
            if (!nb) {
                st = CG_FAIL(CG_E_OOM, "idx: %s: out of memory reading %zu bytes", name, nc);
                break;
            }
            owned = nb;
            cap = nc;
        }
        raw = owned;
    }
    if (st == CG_OK) {
        uint8_t extra;
        r = src_read(s, &extra, 1);
        if (r < 0) st = CG_E_FORMAT;
        else if (r > 0)
            st = CG_FAIL(CG_E_FORMAT, "idx: %s: trailing bytes after the %lld data bytes of shape %s of %s", name,
                         (long long)nbytes, sb, ty->name);
    }
    cg_tensor *t = NULL;
    if (st == CG_OK) st = cg__tensor_new(shape, ndim, dt, CG_CPU, &t);
    if (st == CG_OK) {
        void *dst = cg_tensor_data(t);
        if (ty->code == 0x08 && dt == CG_U8) {
            if (nbytes) memcpy(dst, raw, (size_t)nbytes);
        } else {
            for (int64_t i = 0; i < numel; i++) {
                double v = idx_value(ty, raw + i * (int64_t)ty->size);
                if (ty->is_float && !isfinite(v)) {
                    st = CG_FAIL(CG_E_NUMERIC, "idx: %s: element %lld is %s", name, (long long)i,
                                 isnan(v) ? "NaN" : "infinite");
                    break;
                }
                if (mode == CG_IDX_F32_UNIT) v /= 255.0;
                store(dt, dst, i, v);
            }
        }
    }
    free(owned);
    if (st != CG_OK) {
        cg_tensor_release(t);
        return st;
    }
    *out = t;
    return CG_OK;
}

/* Moves a fresh CPU tensor to dev and hands it to the caller. */
static cg_status finish(cg_status st, cg_tensor *t, cg_device dev, cg_tensor **out) {
    if (st != CG_OK) return st;
    CG_TRY(cg__move_fresh(&t, dev));
    *out = cg__autorelease(t);
    return CG_OK;
}

cg_status cg_idx_load_mem(const void *data, size_t n, const char *name, cg_idx_mode mode, cg_device dev,
                          cg_tensor **out) {
    CG_ARG_NOT_NULL(out, "cg_idx_load_mem");
    if (n && !data) return CG_FAIL(CG_E_INVALID, "cg_idx_load_mem: data is NULL");
    idx_src s = {.name = name ? name : "(memory)", .mem = data, .mem_len = n};
    const uint8_t *b = data;
    if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) {
        memset(&s.zs, 0, sizeof s.zs);
        if (inflateInit2(&s.zs, 15 + 16) != Z_OK) return CG_FAIL(CG_E_OOM, "idx: %s: inflateInit failed", s.name);
        s.inflating = 1;
        s.zs.next_in = (Bytef *)b;
        s.zs.avail_in = n > 0xffffffffu ? 0xffffffffu : (uInt)n;
    }
    cg_tensor *t = NULL;
    cg_status st = idx_read(&s, mode, &t);
    src_close(&s);
    return finish(st, t, dev, out);
}

static cg_status idx_load_path(const char *path, cg_idx_mode mode, cg_tensor **out) {
    FILE *probe = fopen(path, "rb");
    if (!probe) return CG_FAIL(CG_E_IO, "idx: %s: cannot open: %s", path, strerror(errno));
    fclose(probe);
    idx_src s = {.name = path};
    s.gz = gzopen(path, "rb");
    if (!s.gz) return CG_FAIL(CG_E_IO, "idx: %s: cannot open: %s", path, strerror(errno));
    gzbuffer(s.gz, 1 << 17);
    cg_status st = idx_read(&s, mode, out);
    src_close(&s);
    return st;
}

cg_status cg_idx_load(const char *path, cg_idx_mode mode, cg_device dev, cg_tensor **out) {
    CG_ARG_NOT_NULL(path, "cg_idx_load");
    CG_ARG_NOT_NULL(out, "cg_idx_load");
    cg_tensor *t = NULL;
    cg_status st = idx_load_path(path, mode, &t);
    return finish(st, t, dev, out);
}

/* ---- MNIST-layout datasets ---- */

static cg_status open_split(const char *dir, const char *stem, cg_idx_mode mode, cg_tensor **out, char *used,
                            size_t used_n) {
    const char *suffix[] = {".gz", ""};
    for (int i = 0; i < 2; i++) {
        snprintf(used, used_n, "%s/%s%s", dir, stem, suffix[i]);
        FILE *f = fopen(used, "rb");
        if (!f) continue;
        fclose(f);
        return idx_load_path(used, mode, out);
    }
    return CG_FAIL(CG_E_IO, "mnist: %s: neither %s.gz nor %s found (install Debian's dataset-fashion-mnist, or pass "
                   "the directory holding the IDX files)", dir, stem, stem);
}

cg_status cg_mnist_load(const char *dir, cg_split split, int unit_scale, cg_device dev, cg_tensor **images,
                        cg_tensor **labels) {
    CG_ARG_NOT_NULL(dir, "cg_mnist_load");
    CG_ARG_NOT_NULL(images, "cg_mnist_load");
    CG_ARG_NOT_NULL(labels, "cg_mnist_load");
    if (split != CG_SPLIT_TRAIN && split != CG_SPLIT_TEST)
        return CG_FAIL(CG_E_INVALID, "cg_mnist_load: split %d is neither CG_SPLIT_TRAIN nor CG_SPLIT_TEST", (int)split);
    const char *pre = split == CG_SPLIT_TRAIN ? "train" : "t10k";
    char stem[64], ipath[4096], lpath[4096];
    cg_tensor *x = NULL, *y = NULL;
    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", pre);
    /* load on the CPU, check, then move */
    cg_status st = open_split(dir, stem, unit_scale ? CG_IDX_F32_UNIT : CG_IDX_NATIVE, &x, ipath, sizeof ipath);
    if (st != CG_OK) return st;
    snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", pre);
    st = open_split(dir, stem, CG_IDX_I64, &y, lpath, sizeof lpath);
    if (st == CG_OK && (x->ndim != 3 || x->shape[1] != 28 || x->shape[2] != 28)) {
        char b[128];
        st = CG_FAIL(CG_E_FORMAT, "mnist: %s: images have shape %s, expected (N, 28, 28)", ipath,
                     cg__shape_str(x->shape, x->ndim, b, sizeof b));
    }
    if (st == CG_OK && y->ndim != 1)
        st = CG_FAIL(CG_E_FORMAT, "mnist: %s: labels have %d dimensions, expected 1", lpath, y->ndim);
    if (st == CG_OK && y->shape[0] != x->shape[0])
        st = CG_FAIL(CG_E_FORMAT, "mnist: %s has %lld labels but %s has %lld images", lpath, (long long)y->shape[0],
                     ipath, (long long)x->shape[0]);
    if (st == CG_OK) {
        const int64_t *l = cg_tensor_data(y);
        for (int64_t i = 0; i < y->shape[0]; i++)
            if (l[i] < 0 || l[i] > 9) {
                st = CG_FAIL(CG_E_FORMAT, "mnist: %s: label %lld is %lld, outside [0, 9]", lpath, (long long)i,
                             (long long)l[i]);
                break;
            }
    }
    if (st == CG_OK) st = cg__move_fresh(&x, dev);
    if (st == CG_OK) st = cg__move_fresh(&y, dev);
    if (st != CG_OK) {
        cg_tensor_release(x);
        cg_tensor_release(y);
        return st;
    }
    *images = cg__autorelease(x);
    *labels = cg__autorelease(y);
    return CG_OK;
}

cg_status cg_fashion_mnist_load(const char *dir, cg_split split, int unit_scale, cg_device dev, cg_tensor **images,
                                cg_tensor **labels) {
    if (!dir) dir = getenv("CG_FASHION_MNIST_DIR");
    if (!dir || !dir[0]) dir = CG_FASHION_MNIST_DEFAULT_DIR;
    return cg_mnist_load(dir, split, unit_scale, dev, images, labels);
}
