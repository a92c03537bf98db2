/* The state dict layout, shared by state_dict.c and safetensors.c. */
#ifndef CG_ST_INTERNAL_H
#define CG_ST_INTERNAL_H

#include "cgrad/io.h"

struct cg_state_dict {
    char **names;
    cg_tensor **tensors;
    size_t n, cap;
    char **meta_keys, **meta_values;
    size_t n_meta, cap_meta;
    char *source; /* file it was loaded from, or NULL */
};

cg_status cg__state_dict_set_source(cg_state_dict *sd, const char *source);

#endif
