/* libFuzzer target: safetensors loading from arbitrary bytes. A crash, leak or sanitizer
 * report is a finding; on success the dict must be self-consistent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad.h"
#include "cgrad/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cg_state_dict *sd = NULL;
    if (cg_safetensors_load_mem(data, size, "fuzz", CG_CPU, &sd) != CG_OK) {
        if (sd) abort(); /* a failure must hand nothing back */
        return 0;
    }
    size_t total = 0;
    for (size_t i = 0; i < cg_state_dict_count(sd); i++) {
        cg_tensor *t = cg_state_dict_tensor_at(sd, i);
        if (!t || !cg_state_dict_name_at(sd, i)) abort();
        total += cg_tensor_nbytes(t);
    }
    if (total > size) abort();
    (void)cg_state_dict_check_finite(sd);
    cg_state_dict_free(sd);
    return 0;
}
