/* Shared internals of src/nn, src/optim and src/train: the model layout. */
#ifndef CG_NN_INTERNAL_H
#define CG_NN_INTERNAL_H

#include "../internal.h"
#include "../optim_math.h"
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
    cg_tensor *running_mean, *running_var; /* batchnorm: views into the flat statistics buffer */
    cg_tensor *num_batches;                /* batchnorm: i64 scalar (own storage) */
    int64_t tracked; /* num_batches_tracked, authoritative; synced into num_batches on export */
} cg_layer;

/* A parameter or buffer entry in state-dict order. */
typedef struct cg_entry {
    char name[CG_NAME_MAX];
    cg_tensor **slot; /* the layer field holding it */
    int64_t offset;   /* element offset in the flat parameter buffer, or in the statistics buffer */
    int is_param;
    int is_stat; /* a BatchNorm running statistic: a view of the flat statistics buffer */
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
    /* every BatchNorm running mean and variance, each a view (NULL without BatchNorm), so
     * that fit can save and restore them with one copy */
    cg_tensor *stats;
    int64_t stats_numel;
    cg_entry *entries;
    int n_entries, n_params;
    cg_rng rng; /* dropout stream */
    /* a CUDA graph of a training step being recorded (src/train/step_graph.c): the device
     * word each replay sets to its advance of the dropout stream; NULL otherwise */
    const uint64_t *rng_shift_dev;
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

/* What a training step changes besides the parameters and the optimizer, as it was at the
 * start of recent steps, so that a failed step (and the steps after it that a device-side
 * gate skipped) can be taken back: `slots` copies of the BatchNorm statistics buffer on the
 * model's device (one device copy per step; none without BatchNorm), the dropout stream of
 * each slot, and the num_batches_tracked counters at the start of the latest saved step. */
typedef struct cg_step_ring {
    cg_tensor *buf;   /* (slots, stats_numel); NULL without BatchNorm */
    cg_tensor **at;   /* its rows */
    cg_rng *rng;      /* per slot */
    int slots, last;  /* last: the slot saved most recently */
    int64_t *tracked; /* per layer */
} cg_step_ring;
cg_status cg__step_ring_init(cg_model *m, int slots, cg_step_ring *r);
void cg__step_ring_free(cg_step_ring *r);
/* At the start of a step. */
cg_status cg__step_ring_save(cg_model *m, cg_step_ring *r, int slot);
/* Back to the start of the step saved in `slot`; every step from it to `last` ran once. */
cg_status cg__step_ring_restore(cg_model *m, const cg_step_ring *r, int slot);

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
cg_status cg__optimizer_step_gated(cg_optimizer *o, cg_tensor *gate, int *updated);
/* cg_optimizer_step; *updated says whether any parameter may have changed (0: a failure
 * came before the first update, e.g. a non-finite clipping norm). */
cg_status cg__optimizer_step_ex(cg_optimizer *o, int *updated);
/* Takes back the step counters of the last n steps, which the gate turned into no-ops. */
void cg__optimizer_unstep(cg_optimizer *o, int64_t n);
/* CUDA graphs of a training step (src/train/step_graph.c). set_graph_coef: while a step is
 * recorded, its update reads the coefficients from coef_dev (device memory; NULL: off).
 * replay_step: what a step does on the host for a model optimizer, without the kernel: the
 * coefficients of the next update (for coef_dev) and every counter advanced. */
void cg__optimizer_set_graph_coef(cg_optimizer *o, const void *coef_dev);
cg_status cg__optimizer_replay_step(cg_optimizer *o, cg_optim_coef *coef);
/* The device memory of group 0's state (which 0: momentum / exp_avg, 1: exp_avg_sq, 2: the
 * squared clipping norm), or NULL: a recorded step holds these addresses. id: unique in the
 * process, never reused (a new optimizer may get a freed one's address). */
const void *cg__optimizer_state_data(const cg_optimizer *o, int which);
uint64_t cg__optimizer_id(const cg_optimizer *o);

/* Parse a double/int64 from a metadata string (0 on success). */
int cg__parse_f64(const char *s, double *v);
int cg__parse_i64(const char *s, int64_t *v);

#endif
