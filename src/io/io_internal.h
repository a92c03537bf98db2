/* Helpers shared by the file readers and writers in src/io and src/data. */
#ifndef CG_IO_INTERNAL_H
#define CG_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../internal.h"
#include "cgrad/io.h"

/* Reads a whole regular file into a malloc'd buffer (*len bytes; one extra NUL byte is
 * appended so text parsers may rely on it). `what` prefixes messages ("csv"). */
cg_status cg__read_file(const char *what, const char *path, uint8_t **buf, size_t *len);

/* Moves a fresh CPU tensor to dev: on the CPU returns it unchanged, else a new tensor on
 * dev replaces it (the CPU one is released either way on failure). Never autoreleased. */
cg_status cg__move_fresh(cg_tensor **t, cg_device dev);

static inline int cg__host_is_le(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static inline uint32_t cg__be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline uint64_t cg__le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* a * b into *r, 0 on overflow past INT64_MAX (operands >= 0). */
static inline int cg__mul_ok(int64_t a, int64_t b, int64_t *r) {
    if (a != 0 && b > INT64_MAX / a) return 0;
    *r = a * b;
    return 1;
}

#endif
