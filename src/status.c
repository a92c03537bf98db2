/* Status names, the thread-local error message, dtype and device helpers. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char tl_error[1024];

const char *cg_status_str(cg_status s) {
    static const char *names[CG_STATUS_COUNT] = {
        [CG_OK] = "CG_OK",
        [CG_E_INVALID] = "CG_E_INVALID",
        [CG_E_SHAPE] = "CG_E_SHAPE",
        [CG_E_DTYPE] = "CG_E_DTYPE",
        [CG_E_DEVICE] = "CG_E_DEVICE",
        [CG_E_OOM] = "CG_E_OOM",
        [CG_E_STATE] = "CG_E_STATE",
        [CG_E_IO] = "CG_E_IO",
        [CG_E_FORMAT] = "CG_E_FORMAT",
        [CG_E_NUMERIC] = "CG_E_NUMERIC",
        [CG_E_UNSUPPORTED] = "CG_E_UNSUPPORTED",
        [CG_E_CUDA] = "CG_E_CUDA",
        [CG_E_INTERNAL] = "CG_E_INTERNAL",
    };
    if ((int)s < 0 || s >= CG_STATUS_COUNT) return "CG_E_UNKNOWN";
    return names[s];
}

const char *cg_last_error(void) { return tl_error; }

void cg_clear_error(void) { tl_error[0] = '\0'; }

void cg__restore_error(const char *msg) { snprintf(tl_error, sizeof tl_error, "%s", msg ? msg : ""); }

cg_status cg__set_error(cg_status s, const char *file, int line, const char *fmt, ...) {
    char msg[sizeof tl_error - 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    snprintf(tl_error, sizeof tl_error, "%s [%s:%d]", msg, base ? base + 1 : file, line);
    return s;
}

const char *cg_dtype_name(cg_dtype dt) {
    static const char *names[CG_DTYPE_COUNT] = {"f32", "f64", "f16", "bf16", "i32", "i64", "u8"};
    if ((int)dt < 0 || dt >= CG_DTYPE_COUNT) return "invalid";
    return names[dt];
}

size_t cg_dtype_size(cg_dtype dt) {
    static const size_t sizes[CG_DTYPE_COUNT] = {4, 8, 2, 2, 4, 8, 1};
    if ((int)dt < 0 || dt >= CG_DTYPE_COUNT) return 0;
    return sizes[dt];
}

const char *cg_device_str(cg_device d) {
    static _Thread_local char buf[32];
    if (d.type == CG_DEVICE_CPU) return "cpu";
    snprintf(buf, sizeof buf, "cuda:%d", d.index);
    return buf;
}
