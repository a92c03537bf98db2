/* Numeric CSV reader: RFC 4180 quoting ("a ""b""" is one cell), LF or CRLF rows, blank
 * lines skipped, optional UTF-8 BOM. Every cell of a data row must be a finite decimal
 * number; errors name the file, line, column and the column's header name. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "io_internal.h"

cg_csv_opts cg_csv_opts_default(void) {
    cg_csv_opts o = {.delimiter = ',', .header = CG_CSV_HEADER_AUTO, .has_label = 1, .label_name = NULL,
                     .label_index = -1, .x_dtype = CG_F32, .y_dtype = CG_I64};
    return o;
}

/* One parsed row: cells are NUL-terminated strings packed in text. */
typedef struct csv_row {
    char *text;
    size_t len, cap;
    size_t *cell; /* offsets into text */
    int n, ncap;
    long line; /* 1-based line where the row starts */
} csv_row;

typedef struct csv_parser {
    const char *name;
    const char *p, *end;
    char delim;
    long line;
} csv_parser;

static int row_putc(csv_row *r, char c) {
    if (r->len + 1 >= r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 256;
        char *t = realloc(r->text, nc);
        if (!t) return 0;
        r->text = t;
        r->cap = nc;
    }
    r->text[r->len++] = c;
    return 1;
}

static int row_begin_cell(csv_row *r) {
    if (r->n == r->ncap) {
        int nc = r->ncap ? r->ncap * 2 : 16;
        size_t *c = realloc(r->cell, (size_t)nc * sizeof *c);
        if (!c) return 0;
        r->cell = c;
        r->ncap = nc;
    }
    r->cell[r->n++] = r->len;
    return 1;
}

/* Reads the next non-blank row into r; *got = 0 at the end of input. */
static cg_status next_row(csv_parser *ps, csv_row *r, int *got) {
    for (;;) {
        *got = 0;
        if (ps->p >= ps->end) return CG_OK;
        r->len = 0;
        r->n = 0;
        r->line = ps->line;
        int blank = 1, row_done = 0;
        while (!row_done) {
            if (!row_begin_cell(r)) return CG_FAIL(CG_E_OOM, "csv: %s: out of memory", ps->name);
            const char *p = ps->p;
            if (p < ps->end && *p == '"') {
                long qline = ps->line;
                blank = 0;
                p++;
                for (;;) {
                    if (p >= ps->end)
                        return CG_FAIL(CG_E_FORMAT, "csv: %s: line %ld, column %d: quoted cell is never closed", ps->name,
                                       qline, r->n);
                    if (*p == '"') {
                        if (p + 1 < ps->end && p[1] == '"') {
                            if (!row_putc(r, '"')) return CG_FAIL(CG_E_OOM, "csv: %s: out of memory", ps->name);
                            p += 2;
                            continue;
                        }
                        p++;
                        break;
                    }
                    if (*p == '\n') ps->line++;
                    if (!row_putc(r, *p++)) return CG_FAIL(CG_E_OOM, "csv: %s: out of memory", ps->name);
                }
                while (p < ps->end && (*p == ' ' || *p == '\t')) p++;
                if (p < ps->end && *p != ps->delim && *p != '\n' && *p != '\r')
                    return CG_FAIL(CG_E_FORMAT, "csv: %s: line %ld, column %d: characters after the closing quote",
                                   ps->name, ps->line, r->n);
            } else {
                while (p < ps->end && *p != ps->delim && *p != '\n' && *p != '\r') {
                    if (*p != ' ' && *p != '\t') blank = 0;
                    if (!row_putc(r, *p++)) return CG_FAIL(CG_E_OOM, "csv: %s: out of memory", ps->name);
                }
            }
            if (!row_putc(r, '\0')) return CG_FAIL(CG_E_OOM, "csv: %s: out of memory", ps->name);
            if (p < ps->end && *p == ps->delim) {
                blank = 0;
                p++;
            } else {
                if (p < ps->end && *p == '\r') p++;
                if (p < ps->end && *p == '\n') p++;
                ps->line++;
                row_done = 1;
            }
            ps->p = p;
        }
        if (blank && r->n == 1) continue; /* blank line */
        *got = 1;
        return CG_OK;
    }
}

/* Trims spaces in place; returns the trimmed start. */
static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    return s;
}

typedef enum { NUM_OK, NUM_EMPTY, NUM_BAD, NUM_NONFINITE, NUM_RANGE } num_kind;

static num_kind parse_num(const char *s, double *v) {
    if (!*s) return NUM_EMPTY;
    const char *q = s + (*s == '+' || *s == '-');
    if (!strcasecmp(q, "nan") || !strcasecmp(q, "inf") || !strcasecmp(q, "infinity")) return NUM_NONFINITE;
    if (!(isdigit((unsigned char)*q) || *q == '.')) return NUM_BAD;
    if (strchr(s, 'x') || strchr(s, 'X')) return NUM_BAD; /* no hex floats */
    char *endp;
    errno = 0;
    double d = strtod(s, &endp);
    if (endp == s || *endp) return NUM_BAD;
    if (errno == ERANGE && fabs(d) > 1.0) return NUM_RANGE; /* overflow; underflow to 0/denormal is fine */
    if (!isfinite(d)) return NUM_RANGE;
    *v = d;
    return NUM_OK;
}

static int looks_like_header(csv_row *r) {
    for (int i = 0; i < r->n; i++) {
        double v;
        num_kind k = parse_num(trim(r->text + r->cell[i]), &v);
        if (k == NUM_BAD) return 1;
    }
    return 0;
}

typedef struct dbuf {
    double *v;
    size_t n, cap;
} dbuf;

static int dbuf_push(dbuf *b, double v) {
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 1024;
        double *t = realloc(b->v, nc * sizeof *t);
        if (!t) return 0;
        b->v = t;
        b->cap = nc;
    }
    b->v[b->n++] = v;
    return 1;
}

static cg_status make_tensor(const double *v, int64_t rows, int64_t cols, int ndim, cg_dtype dt, cg_tensor **out) {
    int64_t shape[2] = {rows, cols};
    cg_tensor *t;
    CG_TRY(cg__tensor_new(shape, ndim, dt, CG_CPU, &t));
    void *d = cg_tensor_data(t);
    int64_t n = cg__numel(shape, ndim);
    for (int64_t i = 0; i < n; i++) {
        switch (dt) {
        case CG_F32: ((float *)d)[i] = (float)v[i]; break;
        case CG_F64: ((double *)d)[i] = v[i]; break;
        case CG_I32: ((int32_t *)d)[i] = (int32_t)v[i]; break;
        default: ((int64_t *)d)[i] = (int64_t)v[i]; break;
        }
    }
    *out = t;
    return CG_OK;
}

static void short_text(const char *s, char *buf, size_t n) {
    size_t k = strlen(s);
    if (k < n) {
        memcpy(buf, s, k + 1);
        return;
    }
    memcpy(buf, s, n - 4);
    strcpy(buf + n - 4, "...");
}

cg_status cg_csv_load_mem(const char *data, size_t n, const char *name, const cg_csv_opts *opts, cg_device dev,
                          cg_tensor **x, cg_tensor **y) {
    CG_ARG_NOT_NULL(x, "cg_csv_load_mem");
    if (n && !data) return CG_FAIL(CG_E_INVALID, "cg_csv_load_mem: data is NULL");
    if (!name) name = "(memory)";
    cg_csv_opts o = opts ? *opts : cg_csv_opts_default();
    if (!o.delimiter) o.delimiter = ',';
    if (o.delimiter == '"' || o.delimiter == '\n' || o.delimiter == '\r')
        return CG_FAIL(CG_E_INVALID, "cg_csv_load: delimiter '%c' is not usable", o.delimiter);
    if (o.has_label && !y) return CG_FAIL(CG_E_INVALID, "cg_csv_load: y is NULL but has_label is set");
    if (o.x_dtype != CG_F32 && o.x_dtype != CG_F64)
        return CG_FAIL(CG_E_DTYPE, "cg_csv_load: x_dtype must be F32 or F64, not %s", cg_dtype_name(o.x_dtype));
    if (o.has_label && o.y_dtype != CG_F32 && o.y_dtype != CG_F64 && o.y_dtype != CG_I32 && o.y_dtype != CG_I64)
        return CG_FAIL(CG_E_DTYPE, "cg_csv_load: y_dtype must be F32, F64, I32 or I64, not %s",
                       cg_dtype_name(o.y_dtype));
    if (o.header != CG_CSV_HEADER_AUTO && o.header != CG_CSV_HEADER_YES && o.header != CG_CSV_HEADER_NO)
        return CG_FAIL(CG_E_INVALID, "cg_csv_load: header option %d is not AUTO, YES or NO", (int)o.header);
    if (o.has_label && o.label_name && o.header == CG_CSV_HEADER_NO)
        return CG_FAIL(CG_E_INVALID, "cg_csv_load: %s: label_name '%s' needs a header row, but header is NO", name,
                       o.label_name);

    csv_parser ps = {.name = name, .p = data, .end = data + n, .delim = o.delimiter, .line = 1};
    if (n >= 3 && (unsigned char)data[0] == 0xEF && (unsigned char)data[1] == 0xBB && (unsigned char)data[2] == 0xBF)
        ps.p += 3;
    csv_row r = {0};
    char **names = NULL;
    int ncols = 0, label = -1, got;
    long first_line = 0;
    dbuf xs = {0}, ys = {0};
    cg_tensor *tx = NULL, *ty = NULL;
    char cb[48];

    cg_status st = next_row(&ps, &r, &got);
    if (st != CG_OK) goto done;
    if (!got) {
        st = CG_FAIL(CG_E_FORMAT, "csv: %s: no rows (the file is empty)", name);
        goto done;
    }
    ncols = r.n;
    first_line = r.line;
    int has_header = o.header == CG_CSV_HEADER_YES || (o.header == CG_CSV_HEADER_AUTO && looks_like_header(&r));
    if (has_header) {
        names = calloc((size_t)ncols, sizeof *names);
        if (!names) {
            st = CG_FAIL(CG_E_OOM, "csv: %s: out of memory", name);
            goto done;
        }
        for (int i = 0; i < ncols; i++) {
            const char *t = trim(r.text + r.cell[i]);
            names[i] = malloc(strlen(t) + 1);
            if (!names[i]) {
                st = CG_FAIL(CG_E_OOM, "csv: %s: out of memory", name);
                goto done;
            }
            strcpy(names[i], t);
        }
    }
    if (o.has_label) {
        if (o.label_name) {
            if (!has_header) {
                st = CG_FAIL(CG_E_FORMAT, "csv: %s: label column '%s' asked by name, but line %ld is data, not a "
                             "header", name, o.label_name, first_line);
                goto done;
            }
            for (int i = 0; i < ncols; i++)
                if (strcmp(names[i], o.label_name) == 0) {
                    if (label >= 0) {
                        st = CG_FAIL(CG_E_FORMAT, "csv: %s: header names column '%s' twice (columns %d and %d)", name,
                                     o.label_name, label + 1, i + 1);
                        goto done;
                    }
                    label = i;
                }
            if (label < 0) {
                st = CG_FAIL(CG_E_INVALID, "csv: %s: no column named '%s' in the header (line %ld, %d columns)", name,
                             o.label_name, first_line, ncols);
                goto done;
            }
        } else {
            label = o.label_index < 0 ? ncols + o.label_index : o.label_index;
            if (label < 0 || label >= ncols) {
                st = CG_FAIL(CG_E_INVALID, "csv: %s: label column index %d is out of range for %d columns", name,
                             o.label_index, ncols);
                goto done;
            }
        }
    }

    int64_t rows = 0;
    if (has_header) {
        st = next_row(&ps, &r, &got);
        if (st != CG_OK) goto done;
    }
    while (got) {
        if (r.n != ncols) {
            st = CG_FAIL(CG_E_FORMAT, "csv: %s: line %ld: %d cells, expected %d as in line %ld", name, r.line, r.n,
                         ncols, first_line);
            goto done;
        }
        for (int i = 0; i < ncols; i++) {
            const char *t = trim(r.text + r.cell[i]);
            double v = 0;
            num_kind k = parse_num(t, &v);
            const char *what = NULL;
            cg_status code = CG_E_FORMAT;
            int is_label = i == label;
            cg_dtype dt = is_label ? o.y_dtype : o.x_dtype;
            if (k == NUM_EMPTY) what = "empty cell";
            else if (k == NUM_BAD) what = "is not a number";
            else if (k == NUM_NONFINITE) what = "is not finite", code = CG_E_NUMERIC;
            else if (k == NUM_RANGE) what = "is out of range", code = CG_E_NUMERIC;
            else if (dt == CG_F32 && fabs(v) > FLT_MAX) what = "is out of range for f32", code = CG_E_NUMERIC;
            else if ((dt == CG_I32 || dt == CG_I64) && v != floor(v)) what = "is not an integer label";
            else if (dt == CG_I32 && (v < INT32_MIN || v > INT32_MAX)) what = "is out of range for i32";
            else if (dt == CG_I64 && (v < -9.2e18 || v > 9.2e18)) what = "is out of range for i64";
            if (what) {
                short_text(t, cb, sizeof cb);
                if (k == NUM_EMPTY) { /* nothing to quote */
                    if (names)
                        st = CG_FAIL(code, "csv: %s: line %ld, column %d ('%s'): empty cell", name, r.line, i + 1,
                                     names[i]);
                    else
                        st = CG_FAIL(code, "csv: %s: line %ld, column %d: empty cell", name, r.line, i + 1);
                    goto done;
                }
                if (names)
                    st = CG_FAIL(code, "csv: %s: line %ld, column %d ('%s'): '%s' %s", name, r.line, i + 1, names[i],
                                 cb, what);
                else
                    st = CG_FAIL(code, "csv: %s: line %ld, column %d: '%s' %s", name, r.line, i + 1, cb, what);
                goto done;
            }
            if (!(is_label ? dbuf_push(&ys, v) : dbuf_push(&xs, v))) {
                st = CG_FAIL(CG_E_OOM, "csv: %s: out of memory at line %ld", name, r.line);
                goto done;
            }
        }
        rows++;
        st = next_row(&ps, &r, &got);
        if (st != CG_OK) goto done;
    }
    if (rows == 0) {
        st = CG_FAIL(CG_E_FORMAT, "csv: %s: a header but no data rows", name);
        goto done;
    }
    int64_t nfeat = ncols - (label >= 0 ? 1 : 0);
    st = make_tensor(xs.v, rows, nfeat, 2, o.x_dtype, &tx);
    if (st == CG_OK && label >= 0) st = make_tensor(ys.v, rows, 1, 1, o.y_dtype, &ty);
    if (st == CG_OK) st = cg__move_fresh(&tx, dev);
    if (st == CG_OK && ty) st = cg__move_fresh(&ty, dev);
    if (st == CG_OK) {
        *x = cg__autorelease(tx);
        if (y) *y = ty ? cg__autorelease(ty) : NULL;
        tx = ty = NULL;
    }
done:
    cg_tensor_release(tx);
    cg_tensor_release(ty);
    if (names)
        for (int i = 0; i < ncols; i++) free(names[i]);
    free(names);
    free(r.text);
    free(r.cell);
    free(xs.v);
    free(ys.v);
    return st;
}

cg_status cg_csv_load(const char *path, const cg_csv_opts *opts, cg_device dev, cg_tensor **x, cg_tensor **y) {
    CG_ARG_NOT_NULL(path, "cg_csv_load");
    uint8_t *buf;
    size_t n;
    CG_TRY(cg__read_file("csv", path, &buf, &n));
    cg_status st = cg_csv_load_mem((const char *)buf, n, path, opts, dev, x, y);
    free(buf);
    return st;
}
