/* cgrad: files. State dicts and safetensors weights, atomic (crash-safe) file writes,
 * IDX (MNIST-format) and CSV datasets.
 *
 * Every loader validates the whole file before handing anything back: on failure the
 * out-parameters are left untouched and cg_last_error() names the file, the tensor,
 * field or cell, and the problem. Loaded tensors are fresh leaves (no graph). */
#ifndef CGRAD_IO_H
#define CGRAD_IO_H

#include <stdio.h>

#include "tensor.h"

CG_EXTERN_C_BEGIN

/* ================================ state dicts ================================ */

/* An ordered map name -> tensor (insertion order is kept; setting an existing name
 * replaces its tensor in place) plus string -> string metadata. The dict holds its own
 * reference to every tensor. Names follow PyTorch's state_dict ("0.weight", "2.bias"). */
typedef struct cg_state_dict cg_state_dict;

CG_API cg_status cg_state_dict_create(cg_state_dict **out);
CG_API void cg_state_dict_free(cg_state_dict *sd); /* NULL is fine */
/* Stores t under name (retains t). Name must be non-empty and not "__metadata__". */
CG_API cg_status cg_state_dict_set(cg_state_dict *sd, const char *name, cg_tensor *t);
/* Tensor stored under name, or NULL (borrowed: retain it to keep it past the dict). */
CG_API cg_tensor *cg_state_dict_get(const cg_state_dict *sd, const char *name);
CG_API size_t cg_state_dict_count(const cg_state_dict *sd);
/* i-th name / tensor in order, NULL when i is out of range (borrowed). */
CG_API const char *cg_state_dict_name_at(const cg_state_dict *sd, size_t i);
CG_API cg_tensor *cg_state_dict_tensor_at(const cg_state_dict *sd, size_t i);

/* Metadata (safetensors "__metadata__"): string -> string, ordered like tensors. */
CG_API cg_status cg_state_dict_set_meta(cg_state_dict *sd, const char *key, const char *value);
CG_API const char *cg_state_dict_get_meta(const cg_state_dict *sd, const char *key); /* NULL if absent */
CG_API size_t cg_state_dict_meta_count(const cg_state_dict *sd);
CG_API const char *cg_state_dict_meta_key_at(const cg_state_dict *sd, size_t i);
CG_API const char *cg_state_dict_meta_value_at(const cg_state_dict *sd, size_t i);

/* The file a dict was loaded from ("" for one built in memory); used in messages. */
CG_API const char *cg_state_dict_source(const cg_state_dict *sd);

/* What a model expects to find in a state dict. */
typedef struct cg_tensor_spec {
    const char *name;
    cg_dtype dtype;
    int ndim;
    int64_t shape[CG_MAX_DIMS];
} cg_tensor_spec;

/* Checks that sd holds exactly the n expected tensors with these dtypes and shapes:
 * CG_E_FORMAT for a missing or an extra tensor, CG_E_SHAPE / CG_E_DTYPE for a mismatch.
 * The message names the source file and the tensor. */
CG_API cg_status cg_state_dict_check(const cg_state_dict *sd, const cg_tensor_spec *expected, size_t n);
/* CG_E_NUMERIC when any floating-point tensor holds a NaN or an infinity (names the
 * tensor and the first bad element). Integer tensors always pass. */
CG_API cg_status cg_state_dict_check_finite(const cg_state_dict *sd);

/* ================================ safetensors ================================ */
/* Format: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [2, 2], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"k": "v"}}, then the data region; offsets are relative to it.
 * Supported dtypes: F32, F64, F16, BF16, I32, I64, U8. */

/* Writes every tensor (any device, any strides) atomically: a crash mid-write leaves the
 * previous file at path intact. The header is padded with spaces so data is 8-byte aligned. */
CG_API cg_status cg_safetensors_save(const char *path, const cg_state_dict *sd);
/* Reads a file into a new dict with its tensors on dev, in header order. Checks the header
 * and every dtype, shape and offset against the file before reading any data: offsets must
 * lie in the data region, not overlap, and cover it exactly; byte counts = numel * size. */
CG_API cg_status cg_safetensors_load(const char *path, cg_device dev, cg_state_dict **out);
/* Same, from a buffer holding a whole file; `name` labels messages. */
CG_API cg_status cg_safetensors_load_mem(const void *data, size_t n, const char *name, cg_device dev,
                                         cg_state_dict **out);

/* ============================== atomic file writes ============================== */
/* Write to a temporary file in the same directory, then commit: fflush, fsync, close,
 * rename over path, fsync the directory. Abort (or any failure in commit) removes the
 * temporary and leaves an existing file at path untouched. Checkpoints build on this. */
typedef struct cg_atomic_file cg_atomic_file;

/* *fp is the stream to write to; it stays owned by af (do not fclose it). */
CG_API cg_status cg_atomic_open(const char *path, cg_atomic_file **af, FILE **fp);
/* Always frees af, whatever it returns. */
CG_API cg_status cg_atomic_commit(cg_atomic_file *af);
CG_API void cg_atomic_abort(cg_atomic_file *af); /* NULL is fine */

/* ================================ IDX datasets ================================ */
/* IDX (MNIST format): bytes 0,0, an element type (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
 * 0x0D f32, 0x0E f64), a dimension count, big-endian u32 sizes, big-endian data.
 * Gzip-compressed files are detected by content and decompressed through zlib. */
typedef enum cg_idx_mode {
    CG_IDX_NATIVE = 0, /* keep the values: u8 -> U8, i8/i16/i32 -> I32, f32 -> F32, f64 -> F64 */
    CG_IDX_F32,        /* any type converted to F32 */
    CG_IDX_F32_UNIT,   /* u8 only: x / 255 as F32 in [0, 1] */
    CG_IDX_I64,        /* integer types only: I64 (class labels for cross-entropy) */
} cg_idx_mode;

CG_API cg_status cg_idx_load(const char *path, cg_idx_mode mode, cg_device dev, cg_tensor **out);
CG_API cg_status cg_idx_load_mem(const void *data, size_t n, const char *name, cg_idx_mode mode, cg_device dev,
                                 cg_tensor **out);

typedef enum cg_split { CG_SPLIT_TRAIN = 0, CG_SPLIT_TEST = 1 } cg_split;

/* Debian's dataset-fashion-mnist installs here; CG_FASHION_MNIST_DIR overrides it. */
#define CG_FASHION_MNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

/* MNIST-layout directory: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].
 * images: (N, 28, 28) F32 in [0, 1] when unit_scale, else U8; labels: (N) I64 in [0, 10).
 * Checks the image size, that counts agree and that labels are in range. */
CG_API cg_status cg_mnist_load(const char *dir, cg_split split, int unit_scale, cg_device dev, cg_tensor **images,
                               cg_tensor **labels);
/* cg_mnist_load on dir, or when dir is NULL on $CG_FASHION_MNIST_DIR or the default dir. */
CG_API cg_status cg_fashion_mnist_load(const char *dir, cg_split split, int unit_scale, cg_device dev,
                                       cg_tensor **images, cg_tensor **labels);

/* ================================ CSV datasets ================================ */
typedef enum cg_csv_header { CG_CSV_HEADER_AUTO = 0, CG_CSV_HEADER_YES, CG_CSV_HEADER_NO } cg_csv_header;

typedef struct cg_csv_opts {
    char delimiter;          /* 0 means ',' */
    cg_csv_header header;    /* AUTO: the first row is a header when any cell in it is not a number */
    int has_label;           /* 0: every column is a feature and *y is set to NULL */
    const char *label_name;  /* label column by header name (needs a header), or NULL */
    int label_index;         /* when label_name is NULL: 0-based; negative counts from the end */
    cg_dtype x_dtype;        /* F32 or F64 */
    cg_dtype y_dtype;        /* F32, F64, I32 or I64; integer labels must be integral */
} cg_csv_opts;

/* ',' auto header, label = last column, x F32, y I64. */
CG_API cg_csv_opts cg_csv_opts_default(void);

/* Numeric CSV (RFC 4180 quoting, CRLF or LF, blank lines skipped) into x (rows, features)
 * and y (rows). Bad cells (empty, not a number, NaN/Inf, out of range, non-integral label)
 * fail with the line and column (1-based) and the column's header name. */
CG_API cg_status cg_csv_load(const char *path, const cg_csv_opts *opts, cg_device dev, cg_tensor **x, cg_tensor **y);
CG_API cg_status cg_csv_load_mem(const char *data, size_t n, const char *name, const cg_csv_opts *opts, cg_device dev,
                                 cg_tensor **x, cg_tensor **y);

CG_EXTERN_C_END
#endif
