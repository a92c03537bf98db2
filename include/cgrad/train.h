/* cgrad: a Keras-style training loop. compile a model with an optimizer and a loss, fit it on
 * tensors (epochs, batches, shuffling, validation, early stopping, progress display),
 * evaluate and predict; a history of every epoch; checkpoints that resume exactly.
 *
 *   cg_model_compile(m, &opt_cfg, &loss_cfg, CG_METRIC_ACCURACY);
 *   cg_fit_config fc = cg_fit_config_default();
 *   fc.epochs = 10; fc.batch_size = 64; fc.validation_split = 0.1;
 *   fc.early_stopping.enabled = 1; fc.early_stopping.patience = 3;
 *   cg_model_fit(m, x_train, y_train, &fc, &hist);
 */
#ifndef CGRAD_TRAIN_H
#define CGRAD_TRAIN_H

#include "nn.h"
#include "optim.h"

CG_EXTERN_C_BEGIN

typedef struct cg_history cg_history;

enum { CG_METRIC_NONE = 0, CG_METRIC_ACCURACY = 1 };

/* Attaches an optimizer (owned by the model from now on) and a loss; metrics is a bit set. */
CG_API cg_status cg_model_compile(cg_model *m, const cg_optim_config *opt, const cg_loss_config *loss, int metrics);
/* The compiled optimizer (borrowed), or NULL. */
CG_API cg_optimizer *cg_model_optimizer(cg_model *m);

/* One training step on a batch: zero grads, forward, loss, backward, step (under a scope).
 * *loss (may be NULL) receives the batch loss. CG_E_NUMERIC when the loss is not finite:
 * the parameters are left unchanged. */
CG_API cg_status cg_model_train_step(cg_model *m, const cg_tensor *x, const cg_tensor *y, double *loss);

/* ---- a training step recorded once, replayed many times (CUDA graphs) ----
 * The step of cg_model_train_step (zero grads, forward, loss, backward, optimizer step) for
 * batches of one shape, queued without waiting for the device. On a GPU the first step runs
 * as usual (it creates the optimizer state), the second is recorded as a CUDA graph and
 * every later one replays it: one launch a step instead of one per kernel, the host-side
 * graph and allocations not rebuilt. What changes between steps (the learning rate and
 * bias corrections, the dropout stream) is written to device memory before each replay, so
 * every step computes what cg_model_train_step would: the same bits. The first step that
 * succeeds fixes the shapes recorded; a batch of another shape (a last, smaller batch) runs
 * as an ordinary step. On the CPU, or when the step
 * cannot be recorded or the recording runs out of device memory (cg_step_graph_stats says
 * why), every step runs as an ordinary one.
 *
 *   cg_step_graph *g;
 *   cg_step_graph_create(m, &g);
 *   for (...) cg_step_graph_run(g, xb, yb);   // queued; no host wait
 *   cg_step_graph_sync(g, &loss);             // waits; the last step's loss
 *   cg_step_graph_free(g);
 *
 * A non-finite loss or gradient makes the step skip its update on the device, and every
 * later step too (as in fit); the next cg_step_graph_sync returns CG_E_NUMERIC naming the
 * step, with the model as it was before it (parameters, optimizer counters, BatchNorm
 * statistics and counters, the dropout stream). Not thread-safe: one thread steps a model.
 * After a recompile, a new dropout seed (cg_model_set_rng) or optimizer state that moved,
 * the next step is an ordinary one and the one after it is recorded again; weights loaded in
 * place need nothing; a model moved to another device needs a new step graph (CG_E_DEVICE).
 * Free the graph before the model. */
typedef struct cg_step_graph cg_step_graph;
typedef struct cg_step_graph_stats {
    int64_t steps;    /* steps run through the graph object */
    int64_t replays;  /* of them, replays of the recorded graph */
    int recorded;     /* 1: a graph is recorded and in use */
    char why_not[256]; /* when steps run without a graph: why ("" otherwise) */
} cg_step_graph_stats;
/* m: compiled (cg_model_compile). */
CG_API cg_status cg_step_graph_create(cg_model *m, cg_step_graph **out);
/* One training step on (x, y), queued. x and y on any device (copied to the graph's static
 * inputs, unless they are those: cg_step_graph_inputs). */
CG_API cg_status cg_step_graph_run(cg_step_graph *g, const cg_tensor *x, const cg_tensor *y);
/* The graph's own input tensors (borrowed, valid until cg_step_graph_free; x or y may be
 * NULL), of the shapes and dtypes of the first step that succeeded, on the model's device;
 * CG_E_STATE before one has. Write a batch into them (cg_tensor_copy_) and pass them to cg_step_graph_run:
 * the step then reads them where they are, with no copy (as PyTorch's static inputs of a
 * captured graph). Writes are ordered after the steps queued before them. */
CG_API cg_status cg_step_graph_inputs(cg_step_graph *g, cg_tensor **x, cg_tensor **y);
/* Waits for the queued steps. *last_loss (may be NULL): the loss of the last step. */
CG_API cg_status cg_step_graph_sync(cg_step_graph *g, double *last_loss);
CG_API cg_status cg_step_graph_stats_get(const cg_step_graph *g, cg_step_graph_stats *out);
/* Queued steps still run; sync first to see how they ended. (It does not wait for them
 * itself, though freeing a recording's cuBLAS and cuDNN handles may wait for the device.) */
CG_API void cg_step_graph_free(cg_step_graph *g);

/* Logs of one epoch; NaN marks values not computed (no validation, no accuracy). */
typedef struct cg_epoch_logs {
    int epoch; /* 0-based */
    double loss, accuracy;
    double val_loss, val_accuracy;
    double lr;       /* learning rate of the epoch's last step */
    double seconds;  /* wall time of the epoch (training + validation) */
    int64_t steps;   /* optimizer steps so far */
    int64_t replayed; /* of this epoch's steps, those that replayed a CUDA graph (cg_step_graph; 0 on the CPU) */
} cg_epoch_logs;

typedef enum cg_monitor {
    CG_MONITOR_VAL_LOSS = 0, /* falls back to loss when there is no validation data */
    CG_MONITOR_VAL_ACCURACY,
    CG_MONITOR_LOSS,
    CG_MONITOR_ACCURACY
} cg_monitor;

typedef struct cg_early_stopping {
    int enabled;
    cg_monitor monitor;
    int patience;             /* epochs without improvement before stopping */
    double min_delta;         /* an improvement must beat the best by more than this */
    int restore_best_weights; /* copy the best epoch's weights (and buffers) back at the end */
} cg_early_stopping;

/* Called after each epoch's logs are complete and BEFORE early stopping looks at them: it may
 * change them (e.g. a synthetic monitor). Return nonzero to stop training. */
typedef int (*cg_epoch_callback)(cg_model *m, cg_epoch_logs *logs, void *user);

typedef enum cg_verbose {
    CG_VERBOSE_QUIET = 0,
    CG_VERBOSE_AUTO = 1,  /* progress bar on a terminal, one line per epoch otherwise */
    CG_VERBOSE_EPOCH = 2, /* one line per epoch */
} cg_verbose;

typedef struct cg_fit_config {
    int epochs;              /* default 1 */
    int64_t batch_size;      /* default 32 */
    int shuffle;             /* default 1: a fresh permutation each epoch, from (seed, epoch) */
    uint64_t seed;           /* shuffling seed; default 0 = the model's seed */
    double validation_split; /* last fraction of (x, y), before shuffling, held out (Keras) */
    const cg_tensor *x_val, *y_val; /* explicit validation set (wins over the split) */
    int initial_epoch;       /* resume: first epoch to run (epochs counts from 0) */
    cg_early_stopping early_stopping;
    cg_epoch_callback on_epoch_end;
    void *user;
    cg_verbose verbose;      /* default AUTO */
    FILE *out;               /* progress stream, default stdout */
    int grad_check_every;    /* steps between vanishing/exploding gradient checks; 0 = every epoch's
                              * first step, < 0 = never */
    double grad_vanish, grad_explode; /* per-tensor gradient norm thresholds (1e-7, 1e3) */
    const char *checkpoint_path; /* written atomically after every epoch when set */
    int no_graphs;           /* 1: no CUDA graphs, every step an ordinary one (the same results;
                              * for debugging and profiling tools); default 0 */
} cg_fit_config;

CG_API cg_fit_config cg_fit_config_default(void);

/* Trains a compiled model. x: (N, ...) float features; y: integer labels (N) for
 * cross-entropy, float targets for MSE/BCE. x and y may live on any device: batches are
 * gathered on the host and moved to the model's device. *hist (may be NULL) receives the
 * history, owned by the caller. On a non-finite loss: CG_E_NUMERIC with the epoch and step,
 * the parameters are those before the failing step. */
CG_API cg_status cg_model_fit(cg_model *m, const cg_tensor *x, const cg_tensor *y, const cg_fit_config *cfg,
                              cg_history **hist);
/* Mean loss and accuracy (NaN when not a classifier / no accuracy metric) in eval mode. */
CG_API cg_status cg_model_evaluate(cg_model *m, const cg_tensor *x, const cg_tensor *y, int64_t batch_size,
                                   double *loss, double *accuracy);
/* Eval-mode outputs for all of x, in batches, on the model's device. */
CG_API cg_status cg_model_predict_batches(const cg_model *m, const cg_tensor *x, int64_t batch_size, cg_tensor **y);

/* ---- history ---- */
CG_API cg_status cg_history_create(cg_history **out);
CG_API void cg_history_free(cg_history *h);
CG_API int cg_history_count(const cg_history *h);
CG_API const cg_epoch_logs *cg_history_at(const cg_history *h, int i); /* NULL out of range */
CG_API cg_status cg_history_append(cg_history *h, const cg_epoch_logs *logs);
/* Epoch at which training stopped early, or -1; best epoch of the monitor, or -1. */
CG_API int cg_history_stopped_epoch(const cg_history *h);
CG_API int cg_history_best_epoch(const cg_history *h);
/* epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds (empty cells for NaN). */
CG_API cg_status cg_history_save_csv(const cg_history *h, const char *path);
/* {"epochs":[{"epoch":0,"loss":...,...}], "stopped_epoch":..., "best_epoch":...}; NaN -> null. */
CG_API cg_status cg_history_save_json(const cg_history *h, const char *path);

/* ---- checkpoints ---- */
/* One safetensors file: model parameters and buffers (PyTorch names), the optimizer state
 * ("optimizer.*"), and in __metadata__ the architecture, the optimizer config, step and
 * schedule position, the dropout RNG (seed, offset), epoch and global step, plus
 * `extra_meta` key/value pairs (may be NULL / 0). Written atomically. */
typedef struct cg_checkpoint_info {
    int epoch;    /* epochs completed */
    int64_t step; /* optimizer steps completed */
} cg_checkpoint_info;

CG_API cg_status cg_checkpoint_save(const char *path, cg_model *m, const cg_checkpoint_info *info,
                                    const char *const *extra_meta, int n_extra);
/* Restores a model built with the same architecture (and its compiled optimizer, when it has
 * one) so training continues exactly: parameters, buffers, optimizer state and step, the
 * dropout stream and the model seed (fit's default shuffling seed). Resume fit with
 * initial_epoch = info->epoch. info may be NULL. */
CG_API cg_status cg_checkpoint_load(const char *path, cg_model *m, cg_checkpoint_info *info);

CG_EXTERN_C_END
#endif
