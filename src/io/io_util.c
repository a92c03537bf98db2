/* File reading and device hand-off helpers for the loaders. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io_internal.h"

cg_status cg__read_file(const char *what, const char *path, uint8_t **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return CG_FAIL(CG_E_IO, "%s: %s: cannot open: %s", what, path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap + 1);
    if (!b) {
        fclose(f);
        return CG_FAIL(CG_E_OOM, "%s: %s: out of memory reading the file", what, path);
    }
    for (;;) {
        if (n == cap) {
            if (cap > SIZE_MAX / 4) {
                free(b);
                fclose(f);
                return CG_FAIL(CG_E_OOM, "%s: %s: file too large", what, path);
            }
            uint8_t *nb = realloc(b, cap * 2 + 1);
            if (!nb) {
                free(b);
                fclose(f);
                return CG_FAIL(CG_E_OOM, "%s: %s: out of memory reading %zu bytes", what, path, cap * 2);
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    int saved = errno;
    fclose(f);
    if (err) {
        free(b);
        return CG_FAIL(CG_E_IO, "%s: %s: read error: %s", what, path, strerror(saved));
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return CG_OK;
}

cg_status cg__move_fresh(cg_tensor **t, cg_device dev) {
    if (dev.type == CG_DEVICE_CPU) return CG_OK;
    cg_tensor *d = NULL;
    cg_status s = cg__tensor_copy_to(*t, (*t)->dtype, dev, &d);
    cg_tensor_release(*t);
    *t = d;
    return s;
}
