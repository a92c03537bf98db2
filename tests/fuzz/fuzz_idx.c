/* libFuzzer target: IDX loading (raw and gzip) from arbitrary bytes, in every mode. */
#include <stdint.h>
#include <stdlib.h>

#include "cgrad.h"
#include "cgrad/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int mode = CG_IDX_NATIVE; mode <= CG_IDX_I64; mode++) {
        cg_tensor *t = NULL;
        if (cg_idx_load_mem(data, size, "fuzz", (cg_idx_mode)mode, CG_CPU, &t) != CG_OK) {
            if (t) abort();
            continue;
        }
        if (cg_tensor_ndim(t) < 1) abort();
        cg_tensor_release(t);
    }
    return 0;
}
