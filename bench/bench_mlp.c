/* MLP training-step benchmark: every MLP workload of ../shared/tools/torch_anchor.py and
 * torch_anchor_compiled.py, timed on cgrad with the same model, optimizer, precision and
 * batch, so the two can be put side by side (bench/compare_torch.sh runs both in one go).
 *
 *   bench_mlp [--device cpu|cuda] [--steps N] [--workload NAME|SUBSTRING|all|gpu] [--list]
 *
 * One step = zero_grad, forward, cross-entropy, backward, optimizer step (SGD momentum 0.9
 * lr 1e-3, Adam lr 1e-3, or AdamW lr 1e-3 weight decay 0.01: PyTorch's defaults, as the
 * anchors build them). It checks before it times: three warm-up steps through
 * cg_model_train_step, whose losses must be finite (it fails on a non-finite loss) and start
 * near log(classes), as random labels should. Timed steps are queued the way the anchor's
 * do_bench queues them, without reading the loss (public calls: cg_model_forward, cg_loss,
 * cg_backward, cg_optimizer_step, none of which waits for the device): groups of GROUP
 * steps between two device synchronisations, wall clock per group / GROUP, median over
 * the groups (N steps in all). FLOPs counted as the anchor does: 6 * batch * sum(in * out).
 *
 * Precision: tf32 and bf16 workloads set cg_cuda_set_matmul_precision (tensor cores,
 * fp32 accumulate, fp32 storage). PyTorch's bf16 autocast also stores the activations in
 * bf16, so bf16 rows compare the nearest cgrad configuration, not identical work. On the CPU
 * these workloads are skipped with a message.
 *
 * On a GPU each workload is timed twice: as above, and through cg_step_graph (the same step
 * recorded once as a CUDA graph and replayed on the batch held in its static inputs, as
 * PyTorch's graphed anchor does; key NAME_graph), which must have replayed every timed step. Each key names the anchor keys it is compared with (eager,
 * CUDA-graphed, compiled); bench_mlp prints that map first as one `ANCHORS {...}` line,
 * then a table, then one `JSON {...}` line of cgrad key -> median ms. Default workloads: on the CPU those marked
 * cpu (the big ones would take minutes a step); on a GPU all of them. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cgrad.h"
#ifdef CG_HAVE_CUDA
#include "cuda/cuda_internal.h" /* cg__cuda_gemm_paths_str */
#endif

typedef enum { OPT_SGD, OPT_ADAM, OPT_ADAMW } opt_kind;
typedef enum { PREC_FP32, PREC_TF32, PREC_BF16 } prec_kind;
static const char *const opt_names[] = {"sgd m0.9", "adam", "adamw wd0.01"};
static const char *const prec_names[] = {"fp32", "tf32", "bf16"};

#define MAX_KEYS 3
typedef struct workload {
    const char *name;
    int64_t dims[8];
    int n_dims;
    int64_t batch;
    int norm_dropout; /* BatchNorm1d + Dropout(0.3) after each hidden activation */
    opt_kind opt;
    prec_kind prec;
    int cpu_default;
    /* anchor keys (torch_anchor.py, torch_anchor_compiled.py) of the same workload */
    const char *eager[MAX_KEYS], *graphed[MAX_KEYS], *compiled[MAX_KEYS];
} workload;

#define BIG {1024, 4096, 4096, 4096, 4096, 1024}, 6, 8192
#define SMALL {64, 64, 64, 64, 64, 16}, 6, 65536
#define MNIST {784, 512, 256, 10}, 4, 256
#define KERAS {784, 128, 10}, 3, 64

static const workload workloads[] = {
    {"mlp_big_b8192_fp32", BIG, 0, OPT_SGD, PREC_FP32, 0, {"mlp_big_b8192_fp32"}, {0}, {0}},
    {"mlp_big_b8192_tf32", BIG, 0, OPT_SGD, PREC_TF32, 0, {"mlp_big_b8192_tf32"}, {0},
     {"W1_tf32_compile_maxautotune_nocg"}},
    {"mlp_big_b8192_bf16", BIG, 0, OPT_SGD, PREC_BF16, 0, {"mlp_big_b8192_bf16autocast"}, {0},
     {"W1_bf16_compile_maxautotune_nocg"}},
    {"mlp_big_b8192_bf16_adamw", BIG, 0, OPT_ADAMW, PREC_BF16, 0, {"mlp_big_b8192_bf16autocast_adamw"}, {0}, {0}},
    {"mlp_small_b65536_fp32", SMALL, 0, OPT_SGD, PREC_FP32, 1, {"mlp_small_b65536_fp32_eager"},
     {"mlp_small_b65536_fp32_graph"}, {"mlp_small_b65536_fp32_compile", "W2_fp32_compile_default_graphed"}},
    {"mlp_small_b65536_bf16", SMALL, 0, OPT_SGD, PREC_BF16, 0, {0}, {"W2_bf16_eager_graphed"},
     {"W2_bf16_compile_default_graphed"}},
    {"mlp_mnist_b256_fp32", MNIST, 1, OPT_SGD, PREC_FP32, 1, {"mlp_mnist_b256_fp32_eager"},
     {"mlp_mnist_b256_fp32_graph"}, {0}},
    {"mlp_mnist_b256_adam", MNIST, 1, OPT_ADAM, PREC_FP32, 1, {"W3_784-512-256-10_b256_adam_eager"},
     {"W3_784-512-256-10_b256_adam_graphed"}, {"W3_784-512-256-10_b256_adam_compile_graphed"}},
    {"mlp_keras_784-128-10_b64_adam", KERAS, 1, OPT_ADAM, PREC_FP32, 1, {"W3k_keras_784-128-10_b64_adam_eager"},
     {"W3k_keras_784-128-10_b64_adam_graphed"}, {0}},
};
#define N_WORKLOADS ((int)(sizeof workloads / sizeof workloads[0]))

static void print_keys(const char *col, const char *const *keys, int last) {
    printf("\"%s\": [", col);
    for (int i = 0; i < MAX_KEYS && keys[i]; i++) printf("%s\"%s\"", i ? ", " : "", keys[i]);
    printf("]%s", last ? "" : ", ");
}

/* The anchor map, one JSON object: cgrad name -> {eager, graphed, compiled: [keys], ...}. */
static void print_anchors(void) {
    printf("ANCHORS {");
    for (int i = 0; i < 2 * N_WORKLOADS; i++) {
        const workload *w = &workloads[i % N_WORKLOADS];
        printf("%s\"%s%s\": {", i ? ", " : "", w->name, i >= N_WORKLOADS ? "_graph" : "");
        print_keys("eager", w->eager, 0);
        print_keys("graphed", w->graphed, 0);
        print_keys("compiled", w->compiled, 0);
        printf("\"optimizer\": \"%s\", \"precision\": \"%s\", \"batch\": %lld}", opt_names[w->opt],
               prec_names[w->prec], (long long)w->batch);
    }
    printf("}\n");
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define CHECK(call)                                                                                           \
    do {                                                                                                      \
        cg_status s_ = (call);                                                                                \
        if (s_ != CG_OK) {                                                                                    \
            fprintf(stderr, "%s failed: %s: %s\n", #call, cg_status_str(s_), cg_last_error());                 \
            goto fail;                                                                                        \
        }                                                                                                     \
    } while (0)

static cg_status sync_device(cg_device dev) {
    return dev.type == CG_DEVICE_CUDA ? cg_cuda_synchronize(dev.index) : CG_OK;
}

#define GROUP 10

/* One training step queued on the device; the host does not wait for it. */
static cg_status queued_step(cg_model *m, const cg_tensor *x, const cg_tensor *y, const cg_loss_config *lc) {
    cg_status st = cg_scope_begin();
    if (st != CG_OK) return st;
    cg_tensor *out = NULL, *l = NULL;
    st = cg_model_zero_grad(m);
    if (st == CG_OK) st = cg_model_forward(m, x, &out);
    if (st == CG_OK) st = cg_loss(lc, out, y, &l);
    if (st == CG_OK) st = cg_backward(l);
    if (st == CG_OK) st = cg_optimizer_step(cg_model_optimizer(m));
    cg_scope_end();
    return st;
}

/* Returns the median ms per step, or a negative value on failure. graphed: through
 * cg_step_graph, every timed step a replay. */
static double run(const workload *w, cg_device dev, int steps, int graphed) {
    double result = -1, *times = calloc((size_t)steps, sizeof *times);
    cg_model *m = NULL;
    cg_step_graph *sg = NULL;
    cg_tensor *x = NULL, *y = NULL, *yf = NULL;
    cg_rng rng = cg_rng_make(1234);
    if (!times) return -1;
    if (dev.type == CG_DEVICE_CUDA)
        CHECK(cg_cuda_set_matmul_precision(w->prec == PREC_TF32   ? CG_MATMUL_TF32
                                           : w->prec == PREC_BF16 ? CG_MATMUL_BF16
                                                                  : CG_MATMUL_FP32));
    CHECK(cg_model_create(dev, CG_F32, 42, &m));
    for (int i = 0; i + 1 < w->n_dims; i++) {
        int last = i + 2 == w->n_dims;
        CHECK(cg_model_add_linear(m, w->dims[i], w->dims[i + 1], 1, CG_INIT_AUTO));
        if (last) break;
        CHECK(cg_model_add_activation(m, CG_ACT_RELU, 0));
        if (w->norm_dropout) {
            CHECK(cg_model_add_batchnorm1d(m, w->dims[i + 1], 0, 0));
            CHECK(cg_model_add_dropout(m, 0.3));
        }
    }
    cg_optim_config opt = w->opt == OPT_SGD    ? cg_optim_sgd(1e-3, 0.9, 0, 0)
                          : w->opt == OPT_ADAM ? cg_optim_adam(1e-3)
                                               : cg_optim_adamw(1e-3, 0.01); /* torch.optim.AdamW's default */
    cg_loss_config loss = cg_loss_config_default(CG_LOSS_CROSS_ENTROPY);
    CHECK(cg_model_compile(m, &opt, &loss, CG_METRIC_NONE));
    int64_t xs[2] = {w->batch, w->dims[0]};
    CHECK(cg_tensor_rand_normal(xs, 2, CG_F32, dev, 0, 1, &rng, &x));
    CHECK(cg_tensor_rand_uniform(&w->batch, 1, CG_F32, CG_CPU, 0, (double)w->dims[w->n_dims - 1], &rng, &yf));
    {
        cg_tensor *yc = NULL;
        CHECK(cg_tensor_cast(yf, CG_I64, &yc)); /* truncation: uniform classes */
        CHECK(cg_tensor_to(yc, dev, &y));
        cg_tensor_release(yc);
    }
    /* check (and warm up): finite losses of the right size for random labels */
    double first = 0;
    for (int s = 0; s < 3; s++) CHECK(cg_model_train_step(m, x, y, s == 0 ? &first : NULL));
    double chance = log((double)w->dims[w->n_dims - 1]);
    if (!(first > 0.5 * chance && first < 4 * chance)) {
        fprintf(stderr, "%s: first loss %g is far from log(classes) = %g\n", w->name, first, chance);
        goto fail;
    }
    int groups = (steps + GROUP - 1) / GROUP;
    cg_model_train(m);
    if (graphed) { /* its first step is an ordinary one, its second records the graph */
        CHECK(cg_step_graph_create(m, &sg));
        for (int s = 0; s < 2; s++) CHECK(cg_step_graph_run(sg, x, y));
        CHECK(cg_step_graph_sync(sg, NULL));
        /* the timed steps read the batch from the graph's own inputs, as PyTorch's graphed
           anchor reads its static x and y: no copy per step */
        cg_tensor *gx = NULL, *gy = NULL;
        CHECK(cg_step_graph_inputs(sg, &gx, &gy));
        CHECK(cg_tensor_copy_(gx, x));
        CHECK(cg_tensor_copy_(gy, y));
        cg_tensor_release(x);
        cg_tensor_release(y);
        x = cg_tensor_retain(gx); /* released below like the batch it replaces */
        y = cg_tensor_retain(gy);
    }
    CHECK(sync_device(dev));
    for (int g = 0; g < groups; g++) {
        double t0 = now_ms();
        for (int s = 0; s < GROUP; s++) CHECK(sg ? cg_step_graph_run(sg, x, y) : queued_step(m, x, y, &loss));
        CHECK(sg ? cg_step_graph_sync(sg, NULL) : sync_device(dev));
        times[g] = (now_ms() - t0) / GROUP;
    }
    if (sg) {
        cg_step_graph_stats gs;
        CHECK(cg_step_graph_stats_get(sg, &gs));
        if (gs.replays != gs.steps - 1) {
            fprintf(stderr, "%s: %lld of %lld steps replayed a graph (%s)\n", w->name, (long long)gs.replays,
                    (long long)gs.steps, gs.why_not);
            goto fail;
        }
    }
    {
        double v = 0; /* the timed steps must still be finite */
        cg_tensor *out = NULL, *l = NULL;
        CHECK(cg_model_forward(m, x, &out));
        CHECK(cg_loss(&loss, out, y, &l));
        cg_status ls = cg_tensor_item(l, &v);
        cg_tensor_release(l);
        cg_tensor_release(out);
        CHECK(ls);
        if (!isfinite(v)) {
            fprintf(stderr, "%s: loss %g after the timed steps\n", w->name, v);
            goto fail;
        }
    }
    qsort(times, (size_t)groups, sizeof *times, cmp_double);
    result = times[groups / 2];
fail:
    cg_step_graph_free(sg);
    cg_tensor_release(x);
    cg_tensor_release(y);
    cg_tensor_release(yf);
    cg_model_free(m);
    free(times);
    if (dev.type == CG_DEVICE_CUDA) cg_cuda_set_matmul_precision(CG_MATMUL_FP32);
    return result;
}

static int selected(const workload *w, const char *which, int gpu) {
    if (!which) return gpu || w->cpu_default;
    if (!strcmp(which, "all") || !strcmp(which, "gpu")) return 1;
    /* comma-separated list of exact names or substrings */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", which);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (*t && strstr(w->name, t)) return 1;
    return 0;
}

int main(int argc, char **argv) {
    const char *dev_name = NULL, *which = NULL;
    int steps = 60, list = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) dev_name = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--workload") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "--list")) list = 1;
        else {
            fprintf(stderr,
                    "usage: %s [--device cpu|cuda] [--steps N] [--workload all|gpu|NAME[,NAME...]] [--list]\n"
                    "  NAME matches workload names by substring; --list prints the workloads and their anchor keys\n",
                    argv[0]);
            return 2;
        }
    }
    print_anchors();
    if (list) {
        for (int i = 0; i < N_WORKLOADS; i++) {
            const workload *w = &workloads[i];
            printf("%-32s b%-6lld %-13s %-5s %s%s\n", w->name, (long long)w->batch, opt_names[w->opt],
                   prec_names[w->prec], w->norm_dropout ? "BN+dropout0.3 " : "", w->cpu_default ? "(cpu default)" : "");
        }
        return 0;
    }
    if (steps < 1) steps = 1;
    cg_device dev = cg_default_device();
    if (dev_name && !strcmp(dev_name, "cpu")) dev = CG_CPU;
    if (dev_name && !strcmp(dev_name, "cuda")) {
        if (cg_device_count() == 0) {
            printf("bench_mlp: no CUDA device (%s); nothing to time\n", cg_cuda_availability());
            printf("JSON {}\n");
            return 0;
        }
        dev = CG_CUDA(0);
    }
    int gpu = dev.type == CG_DEVICE_CUDA;
    printf("bench_mlp on %s, %d timed steps each (median of groups of %d)\n", cg_device_str(dev), steps, GROUP);
    printf("%-36s %-13s %-5s %10s %10s %12s\n", "workload", "optimizer", "prec", "ms/step", "TFLOP/s", "Msamples/s");
    char json[4096];
    int k = snprintf(json, sizeof json, "JSON {");
    int failed = 0;
    for (int i = 0; i < N_WORKLOADS; i++) {
        const workload *w = &workloads[i];
        if (!selected(w, which, gpu)) continue;
        if (!gpu && w->prec != PREC_FP32) {
            printf("%-32s skipped: %s matmul precision needs a CUDA device\n", w->name, prec_names[w->prec]);
            continue;
        }
        for (int graphed = 0; graphed <= gpu; graphed++) {
            char key[64];
            snprintf(key, sizeof key, "%s%s", w->name, graphed ? "_graph" : "");
            double ms = run(w, dev, steps, graphed);
            if (ms < 0) {
                printf("%-36s FAILED (see stderr)\n", key);
                failed = 1;
                continue;
            }
            double flops = 0;
            for (int d = 0; d + 1 < w->n_dims; d++)
                flops += 6.0 * (double)w->batch * (double)(w->dims[d] * w->dims[d + 1]);
            printf("%-36s %-13s %-5s %10.3f %10.3f %12.3f\n", key, opt_names[w->opt], prec_names[w->prec], ms,
                   flops / ms / 1e9, (double)w->batch / ms / 1e3);
            fflush(stdout);
            if (k < (int)sizeof json - 100)
                k += snprintf(json + k, sizeof json - (size_t)k, "%s\"%s\": %.6f", k > 6 ? ", " : "", key, ms);
        }
    }
    printf("%s}\n", json);
#ifdef CG_HAVE_CUDA
    if (gpu) { /* whether training took the fused epilogues */
        char paths[512];
        cg__cuda_gemm_paths_str(paths, sizeof paths);
        printf("%s\n", paths);
    }
#endif
    return failed;
}
