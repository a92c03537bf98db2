/* safetensors read and write (https://github.com/huggingface/safetensors, "Format"):
 *   u64 little-endian N | N bytes of UTF-8 JSON header | data region
 * Header: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *          "__metadata__": {"<key>": "<string>"}}; offsets relative to the data region.
 * Loading validates the complete header against the file (dtypes, shapes, offsets in
 * range, no overlap, no gap, exact cover, byte counts) before any tensor data is read,
 * so a bad file never yields a partially filled dict. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io_internal.h"
#include "st_internal.h"

/* The reference implementation refuses headers above 100 MB; so do we. */
#define ST_MAX_HEADER 100000000ull

static const struct {
    const char *name;
    cg_dtype dt;
} st_dtypes[] = {
    {"F32", CG_F32}, {"F64", CG_F64}, {"F16", CG_F16}, {"BF16", CG_BF16},
    {"I32", CG_I32}, {"I64", CG_I64}, {"U8", CG_U8},
};
#define ST_N_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

/* Valid safetensors dtypes that cgrad cannot hold. */
static const char *st_unsupported[] = {"BOOL", "I8", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2",
                                       "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};

static const char *st_dtype_str(cg_dtype dt) {
    for (size_t i = 0; i < ST_N_DTYPES; i++)
        if (st_dtypes[i].dt == dt) return st_dtypes[i].name;
    return NULL;
}

/* One tensor as described by the header. */
typedef struct st_entry {
    const char *name; /* points into the parsed JSON */
    cg_dtype dt;
    int ndim;
    int64_t shape[CG_MAX_DIMS];
    uint64_t begin, end;
} st_entry;

typedef struct st_plan {
    json_t *root;
    st_entry *e;
    size_t n;
} st_plan;

static void plan_free(st_plan *p) {
    free(p->e);
    if (p->root) json_decref(p->root);
    p->e = NULL;
    p->root = NULL;
}

static cg_status parse_dtype(const char *file, const char *name, json_t *v, cg_dtype *dt) {
    if (!v) return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': missing field 'dtype'", file, name);
    if (!json_is_string(v))
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': field 'dtype' is not a string", file, name);
    const char *s = json_string_value(v);
    for (size_t i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *dt = st_dtypes[i].dt;
            return CG_OK;
        }
    for (size_t i = 0; i < sizeof st_unsupported / sizeof *st_unsupported; i++)
        if (strcmp(s, st_unsupported[i]) == 0)
            return CG_FAIL(CG_E_UNSUPPORTED,
                           "safetensors: %s: tensor '%s': dtype '%s' is not supported by cgrad (use F32, F64, F16, "
                           "BF16, I32, I64 or U8)", file, name, s);
    return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': unknown dtype '%.40s'", file, name, s);
}

static cg_status parse_entry(const char *file, const char *name, json_t *v, uint64_t data_len, st_entry *e) {
    if (!name[0]) return CG_FAIL(CG_E_FORMAT, "safetensors: %s: a tensor has an empty name", file);
    if (!json_is_object(v))
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': entry is not a JSON object", file, name);
    e->name = name;
    CG_TRY(parse_dtype(file, name, json_object_get(v, "dtype"), &e->dt));

    json_t *shape = json_object_get(v, "shape");
    if (!shape) return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': missing field 'shape'", file, name);
    if (!json_is_array(shape))
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': field 'shape' is not an array", file, name);
    size_t nd = json_array_size(shape);
    if (nd > CG_MAX_DIMS)
        return CG_FAIL(CG_E_UNSUPPORTED, "safetensors: %s: tensor '%s': %zu dimensions, cgrad supports at most %d",
                       file, name, nd, CG_MAX_DIMS);
    e->ndim = (int)nd;
    int64_t numel = 1, nonzero = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': shape[%zu] is not a non-negative integer",
                           file, name, i);
        e->shape[i] = (int64_t)json_integer_value(d);
        /* zero dims included: strides of an empty tensor still multiply the other sizes */
        if (!cg__mul_ok(numel, e->shape[i], &numel) ||
            (e->shape[i] && !cg__mul_ok(nonzero, e->shape[i], &nonzero)) || nonzero > ((int64_t)1 << 48))
            return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': shape overflows", file, name);
    }
    int64_t need;
    if (!cg__mul_ok(numel, (int64_t)cg_dtype_size(e->dt), &need))
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': byte size overflows 64 bits", file, name);

    json_t *off = json_object_get(v, "data_offsets");
    if (!off) return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': missing field 'data_offsets'", file, name);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
        !json_is_integer(json_array_get(off, 1)) || json_integer_value(json_array_get(off, 0)) < 0 ||
        json_integer_value(json_array_get(off, 1)) < 0)
        return CG_FAIL(CG_E_FORMAT,
                       "safetensors: %s: tensor '%s': data_offsets must be two non-negative integers [begin, end]",
                       file, name);
    e->begin = (uint64_t)json_integer_value(json_array_get(off, 0));
    e->end = (uint64_t)json_integer_value(json_array_get(off, 1));
    char sb[128];
    if (e->end < e->begin)
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                       file, name, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_len)
        return CG_FAIL(CG_E_FORMAT,
                       "safetensors: %s: tensor '%s': data_offsets [%llu, %llu] out of range: the data region is "
                       "%llu bytes", file, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)data_len);
    if (e->end - e->begin != (uint64_t)need)
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': data_offsets [%llu, %llu] but %s shape %s needs "
                       "%lld bytes", file, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                       st_dtype_str(e->dt), cg__shape_str(e->shape, e->ndim, sb, sizeof sb), (long long)need);
    return CG_OK;
}

static int cmp_entry(const void *a, const void *b) {
    const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Offsets sorted by position must tile [0, data_len) exactly. */
static cg_status check_cover(const char *file, st_plan *p, uint64_t data_len) {
    if (p->n == 0) {
        if (data_len != 0)
            return CG_FAIL(CG_E_FORMAT, "safetensors: %s: no tensors but a data region of %llu bytes", file,
                           (unsigned long long)data_len);
        return CG_OK;
    }
    st_entry **s = malloc(p->n * sizeof *s);
    if (!s) return CG_FAIL(CG_E_OOM, "safetensors: %s: out of memory", file);
    for (size_t i = 0; i < p->n; i++) s[i] = &p->e[i];
    qsort(s, p->n, sizeof *s, cmp_entry);
    cg_status st = CG_OK;
    uint64_t pos = 0;
    const st_entry *prev = NULL;
    for (size_t i = 0; i < p->n && st == CG_OK; i++) {
        const st_entry *e = s[i];
        if (e->begin < pos)
            st = CG_FAIL(CG_E_FORMAT, "safetensors: %s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' "
                         "[%llu, %llu]", file, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                         prev->name, (unsigned long long)prev->begin, (unsigned long long)prev->end);
        else if (e->begin > pos)
            st = CG_FAIL(CG_E_FORMAT, "safetensors: %s: bytes [%llu, %llu) of the data region belong to no tensor "
                         "(gap before tensor '%s')", file, (unsigned long long)pos, (unsigned long long)e->begin,
                         e->name);
        pos = e->end;
        prev = e;
    }
    if (st == CG_OK && pos != data_len)
        st = CG_FAIL(CG_E_FORMAT, "safetensors: %s: the data region is %llu bytes but the tensors cover only %llu "
                     "(trailing bytes after tensor '%s')", file, (unsigned long long)data_len,
                     (unsigned long long)pos, prev->name);
    free(s);
    return st;
}

/* Parses and validates the header; fills plan and metadata checks. */
static cg_status parse_header(const char *file, const char *hdr, size_t n, uint64_t data_len, st_plan *p) {
    memset(p, 0, sizeof *p);
    if (n == 0 || hdr[0] != '{')
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: the header does not start with '{' (not a safetensors file?)",
                       file);
    json_error_t err;
    p->root = json_loadb(hdr, n, JSON_REJECT_DUPLICATES, &err);
    if (!p->root)
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: bad JSON header at byte %d: %s", file, err.position, err.text);
    if (!json_is_object(p->root)) {
        plan_free(p);
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: the JSON header is not an object", file);
    }
    size_t cap = json_object_size(p->root);
    p->e = calloc(cap ? cap : 1, sizeof *p->e);
    if (!p->e) {
        plan_free(p);
        return CG_FAIL(CG_E_OOM, "safetensors: %s: out of memory", file);
    }
    cg_status st = CG_OK;
    const char *key;
    json_t *v;
    json_object_foreach(p->root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                st = CG_FAIL(CG_E_FORMAT, "safetensors: %s: __metadata__ is not an object of strings", file);
                break;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    st = CG_FAIL(CG_E_FORMAT, "safetensors: %s: __metadata__ key '%s': value is not a string", file,
                                 mk);
                    break;
                }
            }
            if (st != CG_OK) break;
            continue;
        }
        st = parse_entry(file, key, v, data_len, &p->e[p->n]);
        if (st != CG_OK) break;
        p->n++;
    }
    if (st == CG_OK) st = check_cover(file, p, data_len);
    if (st != CG_OK) plan_free(p);
    return st;
}

/* Source of the data region: a FILE (positioned by offset) or a memory buffer. */
typedef struct st_src {
    FILE *f;
    const uint8_t *mem;
    uint64_t data_start; /* 8 + N */
} st_src;

static cg_status build(const char *file, st_plan *p, const st_src *src, cg_device dev, cg_state_dict **out) {
    cg_status st = CG_OK;
    cg_state_dict *sd = NULL;
    cg_tensor **ts = calloc(p->n ? p->n : 1, sizeof *ts);
    if (!ts) return CG_FAIL(CG_E_OOM, "safetensors: %s: out of memory", file);
    for (size_t i = 0; i < p->n && st == CG_OK; i++) {
        const st_entry *e = &p->e[i];
        st = cg__tensor_new(e->shape, e->ndim, e->dt, CG_CPU, &ts[i]);
        if (st != CG_OK) {
            st = CG_FAIL(st, "safetensors: %s: tensor '%s': cannot allocate %llu bytes: %s", file, e->name,
                         (unsigned long long)(e->end - e->begin), cg_last_error());
            break;
        }
        size_t nb = (size_t)(e->end - e->begin);
        if (nb == 0) continue;
        void *dst = cg_tensor_data(ts[i]);
        if (src->mem) {
            memcpy(dst, src->mem + src->data_start + e->begin, nb);
        } else {
            if (fseeko(src->f, (off_t)(src->data_start + e->begin), SEEK_SET) != 0)
                st = CG_FAIL(CG_E_IO, "safetensors: %s: tensor '%s': seek failed: %s", file, e->name,
                             strerror(errno));
            else if (fread(dst, 1, nb, src->f) != nb)
                st = CG_FAIL(CG_E_IO, "safetensors: %s: tensor '%s': read of %zu bytes failed (file changed while "
                             "reading?)", file, e->name, nb);
        }
    }
    for (size_t i = 0; i < p->n && st == CG_OK; i++) st = cg__move_fresh(&ts[i], dev);
    if (st == CG_OK) st = cg_state_dict_create(&sd);
    if (st == CG_OK) st = cg__state_dict_set_source(sd, file);
    for (size_t i = 0; i < p->n && st == CG_OK; i++) st = cg_state_dict_set(sd, p->e[i].name, ts[i]);
    json_t *meta = json_object_get(p->root, "__metadata__");
    const char *mk;
    json_t *mv;
    if (meta && st == CG_OK) json_object_foreach(meta, mk, mv) {
            st = cg_state_dict_set_meta(sd, mk, json_string_value(mv));
            if (st != CG_OK) break;
        }
    for (size_t i = 0; i < p->n; i++) cg_tensor_release(ts[i]); /* the dict holds its own refs */
    free(ts);
    if (st != CG_OK) {
        cg_state_dict_free(sd);
        return st;
    }
    *out = sd;
    return CG_OK;
}

static cg_status check_host(void) {
    if (!cg__host_is_le())
        return CG_FAIL(CG_E_UNSUPPORTED, "safetensors: big-endian hosts are not supported (the format is little-endian)");
    return CG_OK;
}

cg_status cg_safetensors_load_mem(const void *data, size_t n, const char *name, cg_device dev, cg_state_dict **out) {
    CG_ARG_NOT_NULL(out, "cg_safetensors_load_mem");
    if (n && !data) return CG_FAIL(CG_E_INVALID, "cg_safetensors_load_mem: data is NULL");
    if (!name) name = "(memory)";
    CG_TRY(check_host());
    const uint8_t *b = data;
    if (n < 8)
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: truncated: %zu bytes, less than the 8-byte header length", name,
                       n);
    uint64_t hn = cg__le64(b);
    if (hn > n - 8)
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: header length %llu runs past the end of the file (%zu bytes)",
                       name, (unsigned long long)hn, n);
    if (hn > ST_MAX_HEADER)
        return CG_FAIL(CG_E_FORMAT, "safetensors: %s: header length %llu exceeds the 100 MB limit", name,
                       (unsigned long long)hn);
    st_plan p;
    CG_TRY(parse_header(name, (const char *)b + 8, (size_t)hn, n - 8 - hn, &p));
    st_src src = {.mem = b, .data_start = 8 + hn};
    cg_status st = build(name, &p, &src, dev, out);
    plan_free(&p);
    return st;
}

cg_status cg_safetensors_load(const char *path, cg_device dev, cg_state_dict **out) {
    CG_ARG_NOT_NULL(path, "cg_safetensors_load");
    CG_ARG_NOT_NULL(out, "cg_safetensors_load");
    CG_TRY(check_host());
    FILE *f = fopen(path, "rb");
    if (!f) return CG_FAIL(CG_E_IO, "safetensors: %s: cannot open: %s", path, strerror(errno));
    cg_status st = CG_OK;
    char *hdr = NULL;
    struct stat sb;
    uint8_t len8[8];
    uint64_t hn = 0, size = 0;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = CG_FAIL(CG_E_IO, "safetensors: %s: not a regular file", path);
        goto done;
    }
    size = (uint64_t)sb.st_size;
    if (size < 8) {
        st = CG_FAIL(CG_E_FORMAT, "safetensors: %s: truncated: %llu bytes, less than the 8-byte header length", path,
                     (unsigned long long)size);
        goto done;
    }
    if (fread(len8, 1, 8, f) != 8) {
        st = CG_FAIL(CG_E_IO, "safetensors: %s: cannot read the header length", path);
        goto done;
    }
    hn = cg__le64(len8);
    if (hn > size - 8) {
        st = CG_FAIL(CG_E_FORMAT, "safetensors: %s: header length %llu runs past the end of the file (%llu bytes)",
                     path, (unsigned long long)hn, (unsigned long long)size);
        goto done;
    }
    if (hn > ST_MAX_HEADER) {
        st = CG_FAIL(CG_E_FORMAT, "safetensors: %s: header length %llu exceeds the 100 MB limit", path,
                     (unsigned long long)hn);
        goto done;
    }
    hdr = malloc(hn ? hn : 1);
    if (!hdr) {
        st = CG_FAIL(CG_E_OOM, "safetensors: %s: out of memory for a %llu-byte header", path, (unsigned long long)hn);
        goto done;
    }
    if (fread(hdr, 1, hn, f) != hn) {
        st = CG_FAIL(CG_E_IO, "safetensors: %s: cannot read the %llu-byte header", path, (unsigned long long)hn);
        goto done;
    }
    st_plan p;
    st = parse_header(path, hdr, hn, size - 8 - hn, &p);
    if (st != CG_OK) goto done;
    st_src src = {.f = f, .data_start = 8 + hn};
    st = build(path, &p, &src, dev, out);
    plan_free(&p);
done:
    free(hdr);
    fclose(f);
    return st;
}

/* ---- save ---- */

static cg_status write_all(const char *path, FILE *fp, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, fp) != n) return CG_FAIL(CG_E_IO, "safetensors: %s: write failed: %s", path, strerror(errno));
    return CG_OK;
}

static cg_status build_header(const char *path, const cg_state_dict *sd, char **out, size_t *len) {
    json_t *root = json_object();
    if (!root) return CG_FAIL(CG_E_OOM, "safetensors: %s: out of memory", path);
    cg_status st = CG_OK;
    if (sd->n_meta) {
        json_t *m = json_object();
        if (!m || json_object_set_new(root, "__metadata__", m) != 0) st = CG_FAIL(CG_E_OOM, "safetensors: out of memory");
        for (size_t i = 0; i < sd->n_meta && st == CG_OK; i++) {
            json_t *s = json_string(sd->meta_values[i]);
            if (!s || json_object_set_new(m, sd->meta_keys[i], s) != 0)
                st = CG_FAIL(CG_E_INVALID, "safetensors: %s: metadata key '%s': key or value is not valid UTF-8",
                             path, sd->meta_keys[i]);
        }
    }
    uint64_t off = 0;
    for (size_t i = 0; i < sd->n && st == CG_OK; i++) {
        const cg_tensor *t = sd->tensors[i];
        const char *dn = st_dtype_str(t->dtype);
        if (!dn) {
            st = CG_FAIL(CG_E_DTYPE, "safetensors: %s: tensor '%s': dtype %s has no safetensors name", path,
                         sd->names[i], cg_dtype_name(t->dtype));
            break;
        }
        uint64_t nb = cg_tensor_nbytes(t);
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        int bad = !e || !shape || !offs;
        for (int d = 0; d < t->ndim && !bad; d++) bad = json_array_append_new(shape, json_integer(t->shape[d])) != 0;
        if (!bad) bad = json_array_append_new(offs, json_integer((json_int_t)off)) != 0;
        if (!bad) bad = json_array_append_new(offs, json_integer((json_int_t)(off + nb))) != 0;
        if (!bad) bad = json_object_set_new(e, "dtype", json_string(dn)) != 0;
        if (!bad) {
            bad = json_object_set_new(e, "shape", shape) != 0;
            shape = NULL;
        }
        if (!bad) {
            bad = json_object_set_new(e, "data_offsets", offs) != 0;
            offs = NULL;
        }
        if (shape) json_decref(shape);
        if (offs) json_decref(offs);
        if (bad) {
            if (e) json_decref(e);
            st = CG_FAIL(CG_E_OOM, "safetensors: %s: out of memory building the header", path);
            break;
        }
        if (json_object_set_new(root, sd->names[i], e) != 0)
            st = CG_FAIL(CG_E_INVALID, "safetensors: %s: tensor name '%s' is not valid UTF-8", path, sd->names[i]);
        off += nb;
    }
    char *s = NULL;
    if (st == CG_OK) {
        s = json_dumps(root, JSON_COMPACT);
        if (!s) st = CG_FAIL(CG_E_OOM, "safetensors: %s: out of memory serialising the header", path);
    }
    json_decref(root);
    if (st != CG_OK) return st;
    *out = s;
    *len = strlen(s);
    return CG_OK;
}

cg_status cg_safetensors_save(const char *path, const cg_state_dict *sd) {
    CG_ARG_NOT_NULL(path, "cg_safetensors_save");
    CG_ARG_NOT_NULL(sd, "cg_safetensors_save");
    CG_TRY(check_host());
    char *hdr = NULL;
    size_t hlen = 0;
    CG_TRY(build_header(path, sd, &hdr, &hlen));
    size_t pad = (8 - (8 + hlen) % 8) % 8; /* data starts 8-byte aligned */
    uint64_t n = hlen + pad;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(n >> (8 * i));

    cg_atomic_file *af;
    FILE *fp;
    cg_status st = cg_atomic_open(path, &af, &fp);
    if (st != CG_OK) {
        free(hdr);
        return st;
    }
    static const char spaces[8] = "        ";
    st = write_all(path, fp, len8, 8);
    if (st == CG_OK) st = write_all(path, fp, hdr, hlen);
    if (st == CG_OK) st = write_all(path, fp, spaces, pad);
    free(hdr);
    void *buf = NULL;
    size_t buf_cap = 0;
    for (size_t i = 0; i < sd->n && st == CG_OK; i++) {
        cg_tensor *t = sd->tensors[i];
        size_t nb = cg_tensor_nbytes(t);
        if (nb == 0) continue;
        if (t->st->dev.type == CG_DEVICE_CPU && cg_tensor_is_contiguous(t)) {
            st = write_all(path, fp, cg_tensor_data(t), nb);
            continue;
        }
        if (nb > buf_cap) {
            void *nbuf = realloc(buf, nb);
            if (!nbuf) {
                st = CG_FAIL(CG_E_OOM, "safetensors: %s: tensor '%s': out of memory staging %zu bytes", path,
                             sd->names[i], nb);
                break;
            }
            buf = nbuf;
            buf_cap = nb;
        }
        st = cg_tensor_to_host(t, buf, nb);
        if (st == CG_OK) st = write_all(path, fp, buf, nb);
    }
    free(buf);
    if (st != CG_OK) {
        cg_atomic_abort(af);
        return st;
    }
    return cg_atomic_commit(af);
}
