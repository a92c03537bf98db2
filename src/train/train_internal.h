/* Internals of src/train: progress display and timing. */
#ifndef CG_TRAIN_INTERNAL_H
#define CG_TRAIN_INTERNAL_H

#include <stdio.h>

#include "../nn/nn_internal.h"

typedef struct cg_progress {
    FILE *fp;
    cg_verbose verbose;
    int tty, accuracy;
    int epoch, epochs;
    int64_t steps;
    double t0, last_draw;
} cg_progress;

double cg__now(void); /* monotonic seconds */
void cg__progress_init(cg_progress *p, FILE *fp, cg_verbose v, int epochs, int accuracy);
void cg__progress_epoch_begin(cg_progress *p, int epoch, int64_t steps);
void cg__progress_step(cg_progress *p, int64_t step, double loss, double acc);
/* Whether a redraw is due (the training loop then reads its device-side step log). */
int cg__progress_due(const cg_progress *p);
void cg__progress_epoch_end(cg_progress *p, const cg_epoch_logs *l);
/* A line that does not disturb the bar (warnings). */
void cg__progress_message(cg_progress *p, const char *msg);

/* fit's use of the step graph (step_graph.c). for_fit: no sync bookkeeping of its own (fit
 * keeps its step log and undo ring); want_acc: the slot CG_STEP_CORRECT gets each step's
 * correct rows; no_graphs: every step an ordinary one. A step: hook (may be NULL) runs between backward and the update and makes it
 * an ordinary step; *updated as cg__optimizer_step_gated's. Slots (f64 scalars on the
 * model's device) hold the last step's loss, correct count and the sticky guard (NaN from
 * the first non-finite loss or gradient on: every later update is skipped). forget: drops
 * the host record of the steps so far (fit's step log keeps its own). */
enum { CG_STEP_LOSS, CG_STEP_GUARD, CG_STEP_CORRECT };
typedef cg_status (*cg_step_hook)(cg_model *m, void *user);
cg_status cg__step_graph_create(cg_model *m, int for_fit, int want_acc, int no_graphs, cg_step_graph **out);
cg_status cg__step_graph_step(cg_step_graph *g, const cg_tensor *x, const cg_tensor *y, cg_step_hook hook, void *user,
                              int *updated);
cg_tensor *cg__step_graph_slot(cg_step_graph *g, int which);
void cg__step_graph_forget(cg_step_graph *g);

/* history bookkeeping used by fit */
void cg__history_set_stop(cg_history *h, int stopped_epoch, int best_epoch);

#endif
