/* Shared internals of src/nn, src/optim and src/train: the model layout. */
#ifndef CG_NN_INTERNAL_H
#define CG_NN_INTERNAL_H

#include "../internal.h"
#include "cgrad/nn.h"
#include "cgrad/optim.h"
#include "cgrad/train.h"

#define CG_NAME_MAX 48
/* each parameter starts on a 16-element boundary of the flat buffer (64 bytes for f32) */
#define CG_PARAM_ALIGN 16

typedef struct cg_layer {
    cg_layer_kind kind;
    int64_t in, out;      /* linear in/out; norm: features (in == out) */
    int bias;             /* linear */
    cg_init init;         /* linear */
    cg_activation act;    /* activation */
    double alpha;         /* leaky relu slope */
    double p;             /* dropout */
    double eps, momentum; /* norms */
    cg_tensor *w, *b;     /* views into the flat buffer: weight/bias, gamma/beta */
    cg_tensor *running_mean, *running_var, *num_batches; /* batchnorm buffers (own storage) */
    int64_t tracked; /* num_batches_tracked, authoritative; synced into num_batches on export */
} cg_layer;

/* A parameter or buffer entry in state-dict order. */
typedef struct cg_entry {
    char name[CG_NAME_MAX];
    cg_tensor **slot; /* the layer field holding it */
    int64_t offset;   /* parameters: element offset in the flat buffer */
    int is_param;
} cg_entry;

struct cg_model {
    cg_device dev;
    cg_dtype dtype;
    uint64_t seed;
    cg_layer *layers;
    int n_layers, cap_layers;
    int built, training;
    cg_tensor *flat, *gflat; /* all parameters / all gradients */
    int64_t flat_numel;      /* with alignment padding */
    int64_t n_trainable;     /* without padding */
    cg_entry *entries;
    int n_entries, n_params;
    cg_rng rng; /* dropout stream */
    /* compiled state */
    cg_optimizer *opt;
    cg_loss_config loss;
    int metrics, compiled;
};

cg_status cg__model_ensure_built(cg_model *m);
/* Forward with an explicit mode and dropout stream; the model is only read when !training. */
cg_status cg__model_forward_impl(const cg_model *m, const cg_tensor *x, int training, cg_rng *rng, cg_tensor **y);
/* Copies of the flat parameters and every buffer (for restore_best_weights), and back. */
typedef struct cg_weights_snapshot {
    cg_tensor *flat;
    cg_tensor **bufs;
    int n_bufs;
} cg_weights_snapshot;
cg_status cg__model_snapshot(cg_model *m, cg_weights_snapshot *s);
cg_status cg__model_restore(cg_model *m, const cg_weights_snapshot *s);
void cg__snapshot_free(cg_weights_snapshot *s);

/* The architecture string (cg_model_arch) in a malloc'd buffer of the right size; free() it. */
cg_status cg__model_arch_alloc(const cg_model *m, char **out);

/* Writes every layer's host-side num_batches_tracked into its tensor (and back). */
cg_status cg__model_sync_counters(cg_model *m);
cg_status cg__model_read_counters(cg_model *m);

/* optimizer internals used by fit / checkpoints */
void cg__optimizer_set_total(cg_optimizer *o, int64_t total);
cg_status cg__optimizer_move(cg_optimizer *o, cg_device dev);
/* The training loop's step, gated on the device (cg_optim_call.gate, an f64 scalar on the
 * parameters' device): it never waits for the device. gate += 0 * the squared norm (clipping)
 * or 0 * the gradients' sum first, so a non-finite gradient skips this step and all later
 * gated ones. */
cg_status cg__optimizer_step_gated(cg_optimizer *o, cg_tensor *gate);
/* Takes back the step counters of the last n steps, which the gate turned into no-ops. */
void cg__optimizer_unstep(cg_optimizer *o, int64_t n);

/* Parse a double/int64 from a metadata string (0 on success). */
int cg__parse_f64(const char *s, double *v);
int cg__parse_i64(const char *s, int64_t *v);

#endif
