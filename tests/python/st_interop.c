/* Helper program for test_safetensors_interop.py: the C side of checks against the
 * reference safetensors client.
 *   st_interop dump <file>        one line per tensor: name, dtype, shape, hex of the bytes;
 *                                 then "meta <key> <value>" lines
 *   st_interop copy <in> <out>    load and save again
 *   st_interop gen <out>          write known values (formula shared with the script)
 * Exits 1 with cg_last_error() on any failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad.h"
#include "cgrad/io.h"

#define TRY(x)                                                                                                \
    do {                                                                                                      \
        cg_status s_ = (x);                                                                                   \
        if (s_ != CG_OK) {                                                                                    \
            fprintf(stderr, "%s: %s: %s\n", #x, cg_status_str(s_), cg_last_error());                          \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)

static const char *st_name(cg_dtype dt) {
    static const char *n[] = {"F32", "F64", "F16", "BF16", "I32", "I64", "U8"};
    return n[dt];
}

static int dump(const char *path) {
    cg_state_dict *sd;
    TRY(cg_safetensors_load(path, CG_CPU, &sd));
    for (size_t i = 0; i < cg_state_dict_count(sd); i++) {
        cg_tensor *t = cg_state_dict_tensor_at(sd, i);
        printf("%s\t%s\t", cg_state_dict_name_at(sd, i), st_name(cg_tensor_dtype(t)));
        for (int d = 0; d < cg_tensor_ndim(t); d++) printf("%s%lld", d ? "," : "", (long long)cg_tensor_shape(t)[d]);
        printf("\t");
        size_t n = cg_tensor_nbytes(t);
        unsigned char *b = malloc(n + 1);
        TRY(cg_tensor_to_host(t, b, n));
        for (size_t k = 0; k < n; k++) printf("%02x", b[k]);
        free(b);
        printf("\n");
    }
    for (size_t i = 0; i < cg_state_dict_meta_count(sd); i++)
        printf("meta\t%s\t%s\n", cg_state_dict_meta_key_at(sd, i), cg_state_dict_meta_value_at(sd, i));
    cg_state_dict_free(sd);
    return 0;
}

static int copy(const char *in, const char *out) {
    cg_state_dict *sd;
    TRY(cg_safetensors_load(in, CG_CPU, &sd));
    TRY(cg_safetensors_save(out, sd));
    cg_state_dict_free(sd);
    return 0;
}

/* Tensor k of the generated file: element i is
 *   float dtypes: ((i % 64) * 0.25 - 8) * (k + 1)   (exact in f16, f32, f64)
 *   F32 "0.weight": (i * 0.37 - 3.1) computed in double, rounded to float
 *   I32/I64: i * 7 - 13 (I64 also + 2^40);  U8: (i * 37) % 256 */
static int gen(const char *out) {
    cg_state_dict *sd;
    TRY(cg_state_dict_create(&sd));
    struct { const char *name; cg_dtype dt; int ndim; int64_t shape[3]; } spec[] = {
        {"0.weight", CG_F32, 2, {5, 3}}, {"0.bias", CG_F32, 1, {5}},     {"2.weight", CG_F64, 2, {4, 5}},
        {"2.bias", CG_F16, 1, {4}},      {"4.step", CG_I64, 0, {0}},     {"4.count", CG_I32, 3, {2, 3, 4}},
        {"5.mask", CG_U8, 1, {300}},     {"6.empty", CG_F32, 2, {0, 3}},
    };
    for (int k = 0; k < (int)(sizeof spec / sizeof spec[0]); k++) {
        int64_t n = 1;
        for (int d = 0; d < spec[k].ndim; d++) n *= spec[k].shape[d];
        double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
        for (int64_t i = 0; i < n; i++) {
            switch (spec[k].dt) {
            case CG_I32: v[i] = (double)(i * 7 - 13); break;
            case CG_I64: v[i] = (double)(i * 7 - 13 + (1LL << 40)); break;
            case CG_U8: v[i] = (double)((i * 37) % 256); break;
            default: v[i] = k == 0 ? i * 0.37 - 3.1 : ((i % 64) * 0.25 - 8) * (k + 1);
            }
        }
        cg_tensor *t64, *t;
        TRY(cg_tensor_from_host(v, spec[k].shape, spec[k].ndim, CG_F64, CG_CPU, &t64));
        TRY(cg_tensor_cast(t64, spec[k].dt, &t));
        TRY(cg_state_dict_set(sd, spec[k].name, t));
        cg_tensor_release(t);
        cg_tensor_release(t64);
        free(v);
    }
    TRY(cg_state_dict_set_meta(sd, "format", "pt"));
    TRY(cg_state_dict_set_meta(sd, "producer", "cgrad"));
    TRY(cg_safetensors_save(out, sd));
    cg_state_dict_free(sd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "dump")) return dump(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "copy")) return copy(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "gen")) return gen(argv[2]);
    fprintf(stderr, "usage: st_interop dump <file> | copy <in> <out> | gen <out>\n");
    return 2;
}
