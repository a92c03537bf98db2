/* libFuzzer target: CSV loading from arbitrary bytes. The first byte picks options (header
 * mode, label column, dtypes, delimiter) so they are explored too. */
#include <stdint.h>
#include <stdlib.h>

#include "cgrad.h"
#include "cgrad/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cg_csv_opts o = cg_csv_opts_default();
    if (size > 0) {
        uint8_t k = data[0];
        o.header = (cg_csv_header)(k % 3);
        o.label_index = (int)((k >> 2) % 5) - 2;
        o.has_label = (k >> 5) & 1 ? 0 : 1;
        o.x_dtype = (k >> 6) & 1 ? CG_F64 : CG_F32;
        o.y_dtype = (k >> 7) & 1 ? CG_I32 : CG_I64;
        if (k == 0xff) o.delimiter = ';';
        if (k == 0xfe) o.label_name = "label";
        data++, size--;
    }
    cg_tensor *x = NULL, *y = NULL;
    if (cg_csv_load_mem((const char *)data, size, "fuzz", &o, CG_CPU, &x, &y) != CG_OK) {
        if (x || y) abort();
        return 0;
    }
    if (cg_tensor_ndim(x) != 2) abort();
    if (y && cg_tensor_shape(y)[0] != cg_tensor_shape(x)[0]) abort();
    cg_tensor_release(x);
    cg_tensor_release(y);
    return 0;
}
