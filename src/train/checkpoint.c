/* Checkpoints: model weights + buffers, optimizer state, RNG state, progress counters and the
 * training configuration in one safetensors file (atomic write), and exact resume. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

static cg_status meta_u64(cg_state_dict *sd, const char *k, uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return cg_state_dict_set_meta(sd, k, b);
}

static int parse_u64(const char *s, uint64_t *v) {
    if (!s || !*s) return -1;
    char *end;
    unsigned long long d = strtoull(s, &end, 10);
    if (*end) return -1;
    *v = d;
    return 0;
}

cg_status cg_checkpoint_save(const char *path, cg_model *m, const cg_checkpoint_info *info,
                             const char *const *extra_meta, int n_extra) {
    CG_ARG_NOT_NULL(path, "cg_checkpoint_save");
    CG_ARG_NOT_NULL(m, "cg_checkpoint_save");
    if (n_extra > 0 && !extra_meta) return CG_FAIL(CG_E_INVALID, "cg_checkpoint_save: extra_meta is NULL");
    cg_state_dict *sd;
    CG_TRY(cg_model_state_dict(m, &sd));
    cg_status st = CG_OK;
    if (m->opt) st = cg_optimizer_state_dict(m->opt, sd);
    char b[64];
    if (st == CG_OK) st = cg_state_dict_set_meta(sd, "cgrad.checkpoint", "1");
    if (st == CG_OK) st = meta_u64(sd, "rng.seed", m->rng.seed);
    if (st == CG_OK) st = meta_u64(sd, "rng.offset", m->rng.offset);
    if (st == CG_OK) st = meta_u64(sd, "model.seed", m->seed);
    if (st == CG_OK) st = cg_state_dict_set_meta(sd, "model.dtype", cg_dtype_name(m->dtype));
    if (st == CG_OK) {
        snprintf(b, sizeof b, "%d", info ? info->epoch : 0);
        st = cg_state_dict_set_meta(sd, "train.epoch", b);
    }
    if (st == CG_OK) {
        snprintf(b, sizeof b, "%lld", (long long)(info ? info->step : (m->opt ? cg_optimizer_steps(m->opt) : 0)));
        st = cg_state_dict_set_meta(sd, "train.step", b);
    }
    if (st == CG_OK && m->compiled) {
        st = cg_state_dict_set_meta(sd, "train.loss", cg_loss_name(m->loss.kind));
        snprintf(b, sizeof b, "%.17g", m->loss.label_smoothing);
        if (st == CG_OK) st = cg_state_dict_set_meta(sd, "train.label_smoothing", b);
    }
    for (int i = 0; st == CG_OK && i < n_extra; i++)
        st = cg_state_dict_set_meta(sd, extra_meta[2 * i], extra_meta[2 * i + 1]);
    if (st == CG_OK) st = cg_safetensors_save(path, sd);
    cg_state_dict_free(sd);
    return st;
}

cg_status cg_checkpoint_load(const char *path, cg_model *m, cg_checkpoint_info *info) {
    CG_ARG_NOT_NULL(path, "cg_checkpoint_load");
    CG_ARG_NOT_NULL(m, "cg_checkpoint_load");
    CG_TRY(cg__model_ensure_built(m));
    cg_state_dict *sd;
    CG_TRY(cg_safetensors_load(path, CG_CPU, &sd));
    cg_status st = CG_OK;
    char *arch = NULL;
    const char *saved = cg_state_dict_get_meta(sd, "cgrad.arch");
    uint64_t seed = 0, offset = 0, model_seed = 0;
    int64_t epoch = 0, step = 0;
    if (!cg_state_dict_get_meta(sd, "cgrad.checkpoint")) {
        st = CG_FAIL(CG_E_FORMAT, "cg_checkpoint_load: %s is not a cgrad checkpoint (no cgrad.checkpoint metadata); "
                                  "for plain weights use cg_model_load", path);
    } else if ((st = cg__model_arch_alloc(m, &arch)) == CG_OK && (!saved || strcmp(saved, arch))) {
        st = CG_FAIL(CG_E_FORMAT, "cg_checkpoint_load: %s was saved from a different architecture:\n  file:  %s\n  "
                                  "model: %s", path, saved ? saved : "(none)", arch);
    } else if (parse_u64(cg_state_dict_get_meta(sd, "rng.seed"), &seed) ||
               parse_u64(cg_state_dict_get_meta(sd, "rng.offset"), &offset) ||
               parse_u64(cg_state_dict_get_meta(sd, "model.seed"), &model_seed) ||
               cg__parse_i64(cg_state_dict_get_meta(sd, "train.epoch"), &epoch) ||
               cg__parse_i64(cg_state_dict_get_meta(sd, "train.step"), &step)) {
        st = CG_FAIL(CG_E_FORMAT, "cg_checkpoint_load: %s lacks valid rng/epoch/step metadata", path);
    }
    /* the optimizer first: it validates without changing anything on failure paths that matter */
    if (st == CG_OK && m->opt) {
        if (!cg_state_dict_get_meta(sd, "optimizer.type"))
            st = CG_FAIL(CG_E_FORMAT, "cg_checkpoint_load: %s has no optimizer state but the model is compiled", path);
        else
            st = cg_optimizer_load_state_dict(m->opt, sd);
    }
    if (st == CG_OK) st = cg_model_load_state_dict(m, sd);
    if (st == CG_OK) {
        m->rng.seed = seed;
        m->rng.offset = offset;
        m->seed = model_seed; /* fit's default shuffling seed */
        if (info) {
            info->epoch = (int)epoch;
            info->step = step;
        }
    }
    free(arch);
    cg_state_dict_free(sd);
    return st;
}
