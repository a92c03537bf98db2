/* Keras-like progress display: on a terminal a bar redrawn in place (step count, ETA, running
 * loss and metrics); otherwise one line per epoch. */
#define _POSIX_C_SOURCE 200809L /* fileno, isatty, clock_gettime */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "train_internal.h"

double cg__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cg__progress_init(cg_progress *p, FILE *fp, cg_verbose v, int epochs, int accuracy) {
    memset(p, 0, sizeof *p);
    p->fp = fp ? fp : stdout;
    p->verbose = v;
    p->epochs = epochs;
    p->accuracy = accuracy;
    p->tty = v == CG_VERBOSE_AUTO && isatty(fileno(p->fp));
}

void cg__progress_epoch_begin(cg_progress *p, int epoch, int64_t steps) {
    p->epoch = epoch;
    p->steps = steps;
    p->t0 = cg__now();
    p->last_draw = 0;
    if (p->tty) {
        fprintf(p->fp, "Epoch %d/%d\n", epoch + 1, p->epochs);
        fflush(p->fp);
    }
}

static void fmt_time(double s, char *b, size_t n) {
    if (s >= 3600) snprintf(b, n, "%d:%02d:%02d", (int)(s / 3600), (int)fmod(s / 60, 60), (int)fmod(s, 60));
    else if (s >= 60) snprintf(b, n, "%d:%02d", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(b, n, "%ds", (int)(s + 0.5));
}

static void bar(cg_progress *p, int64_t step, char *b, size_t n) {
    const int width = 30;
    int64_t total = p->steps > 0 ? p->steps : 1;
    int fill = (int)((double)width * (double)step / (double)total);
    if (fill > width) fill = width;
    int w = snprintf(b, n, "%*lld/%lld [", (int)snprintf(NULL, 0, "%lld", (long long)total), (long long)step,
                     (long long)total);
    for (int i = 0; i < width && (size_t)w + 2 < n; i++) b[w++] = i < fill ? '=' : (i == fill && step < total) ? '>' : '.';
    if ((size_t)w + 1 < n) b[w++] = ']';
    b[w] = 0;
}

int cg__progress_due(const cg_progress *p) { return p->tty && cg__now() - p->last_draw >= 0.1; }

void cg__progress_step(cg_progress *p, int64_t step, double loss, double acc) {
    if (!p->tty) return;
    double now = cg__now();
    if (step < p->steps && now - p->last_draw < 0.1) return; /* redraw at most 10 times a second */
    p->last_draw = now;
    char b[96], eta[32];
    bar(p, step, b, sizeof b);
    double el = now - p->t0;
    fmt_time(step > 0 ? el / (double)step * (double)(p->steps - step) : 0, eta, sizeof eta);
    fprintf(p->fp, "\r%s - ETA: %s - loss: %.4f", b, eta, loss);
    if (p->accuracy && !isnan(acc)) fprintf(p->fp, " - accuracy: %.4f", acc);
    fprintf(p->fp, "\033[K"); /* clear what a longer earlier line left */
    fflush(p->fp);
}

void cg__progress_epoch_end(cg_progress *p, const cg_epoch_logs *l) {
    if (p->verbose == CG_VERBOSE_QUIET) return;
    char t[32];
    fmt_time(l->seconds, t, sizeof t);
    if (p->tty) {
        char b[96];
        bar(p, p->steps, b, sizeof b);
        double per = p->steps ? 1e3 * l->seconds / (double)p->steps : 0;
        fprintf(p->fp, "\r%s - %s %.0fms/step", b, t, per);
    } else {
        fprintf(p->fp, "Epoch %d/%d - %.1fs", l->epoch + 1, p->epochs, l->seconds);
    }
    fprintf(p->fp, " - loss: %.4f", l->loss);
    if (!isnan(l->accuracy)) fprintf(p->fp, " - accuracy: %.4f", l->accuracy);
    if (!isnan(l->val_loss)) fprintf(p->fp, " - val_loss: %.4f", l->val_loss);
    if (!isnan(l->val_accuracy)) fprintf(p->fp, " - val_accuracy: %.4f", l->val_accuracy);
    fprintf(p->fp, " - lr: %.3g%s\n", l->lr, p->tty ? "\033[K" : "");
    fflush(p->fp);
}

void cg__progress_message(cg_progress *p, const char *msg) {
    if (p->verbose == CG_VERBOSE_QUIET) return;
    if (p->tty) fprintf(p->fp, "\r\033[K");
    fprintf(p->fp, "%s\n", msg);
    fflush(p->fp);
}
