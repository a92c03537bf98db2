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

/* history bookkeeping used by fit */
void cg__history_set_stop(cg_history *h, int stopped_epoch, int best_epoch);

#endif
