/* cgrad: status codes, dtypes, devices and the export macro shared by every header. */
#ifndef CGRAD_COMMON_H
#define CGRAD_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define CG_EXTERN_C_BEGIN extern "C" {
#define CG_EXTERN_C_END }
#else
#define CG_EXTERN_C_BEGIN
#define CG_EXTERN_C_END
#endif

#if defined(_WIN32)
#define CG_API __declspec(dllexport)
#elif defined(__GNUC__)
#define CG_API __attribute__((visibility("default")))
#else
#define CG_API
#endif

CG_EXTERN_C_BEGIN

/* The version of these headers. cg_version() is the library's, so a program can check at
 * start that the library it loaded is the one it was compiled against (while the major
 * version is 0, a new minor version may change the API). CMakeLists.txt reads these lines. */
#define CG_VERSION_MAJOR 0
#define CG_VERSION_MINOR 1
#define CG_VERSION_PATCH 0
#define CG_VERSION (CG_VERSION_MAJOR * 10000 + CG_VERSION_MINOR * 100 + CG_VERSION_PATCH)
CG_API int cg_version(void);                /* CG_VERSION as the library was built */
CG_API const char *cg_version_string(void); /* "0.1.0"; static storage */

/* Every fallible call returns one of these; CG_OK is 0. cg_last_error() holds the details. */
typedef enum cg_status {
    CG_OK = 0,
    CG_E_INVALID,     /* bad argument: NULL pointer, out-of-range value, wrong option */
    CG_E_SHAPE,       /* shapes do not match what the op needs */
    CG_E_DTYPE,       /* dtype not supported by the op or mismatched between inputs */
    CG_E_DEVICE,      /* tensors on different devices, or the device is absent */
    CG_E_OOM,         /* allocation failed (host or device) */
    CG_E_STATE,       /* call not valid in the current state (freed graph, in-place change, ...) */
    CG_E_IO,          /* file could not be opened, read or written */
    CG_E_FORMAT,      /* file or data is malformed */
    CG_E_NUMERIC,     /* NaN or Inf where a finite value is required */
    CG_E_UNSUPPORTED, /* feature not available in this build or on this backend */
    CG_E_CUDA,        /* CUDA runtime, cuBLAS or cuDNN failure */
    CG_E_INTERNAL,    /* a bug in cgrad: please report it */
    CG_STATUS_COUNT
} cg_status;

/* Name of a status, e.g. "CG_E_SHAPE". Never NULL. */
CG_API const char *cg_status_str(cg_status s);
/* Message of the last failing call on this thread: what, where, how to fix. Never NULL. */
CG_API const char *cg_last_error(void);
/* Forget the last message on this thread. */
CG_API void cg_clear_error(void);

typedef enum cg_dtype {
    CG_F32 = 0,
    CG_F64,
    CG_F16,  /* storage only: cast to f32 to compute */
    CG_BF16, /* storage only: cast to f32 to compute */
    CG_I32,
    CG_I64,
    CG_U8,
    CG_DTYPE_COUNT
} cg_dtype;

CG_API const char *cg_dtype_name(cg_dtype dt);
/* Size of one element in bytes, 0 for an invalid dtype. */
CG_API size_t cg_dtype_size(cg_dtype dt);

typedef enum cg_device_type { CG_DEVICE_CPU = 0, CG_DEVICE_CUDA = 1 } cg_device_type;

typedef struct cg_device {
    cg_device_type type;
    int index; /* GPU ordinal; 0 for the CPU */
} cg_device;

/* C: compound literals; C++ has none (g++ takes them only as an extension, MSVC not at all),
 * so there the same value is a braced temporary. */
#ifdef __cplusplus
#define CG_CPU (cg_device{CG_DEVICE_CPU, 0})
#define CG_CUDA(i) (cg_device{CG_DEVICE_CUDA, (i)})
#else
#define CG_CPU ((cg_device){CG_DEVICE_CPU, 0})
#define CG_CUDA(i) ((cg_device){CG_DEVICE_CUDA, (i)})
#endif

/* Number of usable CUDA devices; 0 in a CPU-only build or when no driver/device is present. */
CG_API int cg_device_count(void);
/* True when the build includes the CUDA backend (a device may still be absent). */
CG_API int cg_cuda_built(void);
/* The GPU when there is one, else the CPU. */
CG_API cg_device cg_default_device(void);
CG_API const char *cg_device_str(cg_device d); /* "cpu" or "cuda:0" (static storage per thread) */

#define CG_MAX_DIMS 8

CG_EXTERN_C_END
#endif
