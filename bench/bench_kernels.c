/* Kernel benchmark: every CUDA forward/backward kernel at 16384 x 4096 f32 (plus a small
 * and an odd shape), timed with CUDA events on the backend's stream after warm-up; the
 * median of many runs; achieved GB/s from the byte floor of each kernel (bench/README.md)
 * against a device-to-device copy measured in the same run; speedup over the CPU
 * reference backend, which is timed on a 64-row slice and scaled per element (said in the
 * table header). Each kernel is checked against the CPU on the slice before it is timed.
 *
 * Then what ../shared/tools/torch_anchor*.py time, under cgrad keys mapped to the anchors'
 * keys, at 16384 x 4096 f32: relu, gelu tanh, softmax, layernorm, batchnorm training and
 * dropout p=0.5 forward (the backend's kernels called directly, own and cuDNN); softmax-CE
 * mean forward + backward and layernorm forward + backward of a given dy, each twice: through
 * the public op and the autograd engine with the input's .grad dropped each time (as the
 * anchors time them) and as the backend's two kernels back to back (`_kernels`). One
 * `ANCHORS {...}` line comes first (cgrad key -> the anchor keys it is compared with and the
 * byte passes it must move), one `JSON {...}` line after the anchors table (cgrad key ->
 * median ms; copy_16384x4096_f32 is the device-to-device copy of R x C floats in the same
 * run). bench/compare_torch.sh joins them with the anchors' JSON. `_blockrows` keys time the
 * same work with long f32 rows sent to the block kernels instead of the register-row ones
 * (kernels/softmax.cu, layernorm.cu; plan in row_regs.cuh), the two variants side by side.
 *
 * Usage: bench_kernels [reps=30 | --list]. --list prints the ANCHORS line only. Exits 0 with
 * a message when there is no GPU. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cgrad.h"

/* cgrad timings that have a PyTorch twin in the anchors. kernel/mode/impl pick the
 * measurement: the row of K with that name; MODE_FWD, MODE_FB (the backend's forward then
 * backward kernels) or MODE_AUTOGRAD (the public op, then cg_backward / cg_backward_ex through
 * the engine with the input's .grad dropped each time: what the anchors time, `x.grad = None;
 * F.cross_entropy(x, y).backward()`); cgrad's own kernel or the cuDNN one. passes: the R*C*4-
 * byte passes the measurement must move at least (the anchors count 2 for cross-entropy
 * forward + backward: one read of the logits, one write of their gradient). */
enum { MODE_FWD = 0, MODE_BWD = 1, MODE_FB = 2, MODE_AUTOGRAD = 3 };
typedef struct anchor_key {
    const char *key, *kernel;
    int mode, cudnn, passes;
    const char *eager[2], *compiled[2];
    int block_rows; /* 1: long f32 rows in the block kernels, not the register ones */
} anchor_key;

#define BN_EAGER {"batchnorm_train_fwd", "batchnorm_train_fwd_eager_3pass"}
static const anchor_key AK[] = {
    {"relu_fwd", "relu", MODE_FWD, 0, 2, {"relu_fwd"}, {0}, 0},
    {"gelu_tanh_fwd", "gelu tanh", MODE_FWD, 0, 2, {"gelu_tanh_fwd"}, {0}, 0},
    {"softmax_fwd", "softmax", MODE_FWD, 0, 2, {"softmax_fwd"}, {"softmax_fwd_compiled"}, 0},
    {"softmax_fwd_cudnn", "softmax", MODE_FWD, 1, 2, {"softmax_fwd"}, {"softmax_fwd_compiled"}, 0},
    {"softmax_fwd_blockrows", "softmax", MODE_FWD, 0, 2, {"softmax_fwd"}, {"softmax_fwd_compiled"}, 1},
    {"layernorm_fwd", "layernorm", MODE_FWD, 0, 2, {"layernorm_fwd"}, {"layernorm_fwd_compiled"}, 0},
    {"layernorm_fwd_blockrows", "layernorm", MODE_FWD, 0, 2, {"layernorm_fwd"}, {"layernorm_fwd_compiled"}, 1},
    {"batchnorm_train_fwd", "batchnorm train", MODE_FWD, 0, 3, BN_EAGER, {"batchnorm_train_fwd_compiled"}, 0},
    {"batchnorm_train_fwd_cudnn", "batchnorm train", MODE_FWD, 1, 3, BN_EAGER, {"batchnorm_train_fwd_compiled"}, 0},
    {"dropout_fwd", "dropout p=0.5", MODE_FWD, 0, 2, {"dropout_fwd"}, {0}, 0},
    {"cross_entropy_fwd_bwd", "softmax_ce mean", MODE_AUTOGRAD, 0, 2, {"cross_entropy_fwd_bwd"},
     {"cross_entropy_fwd_bwd_compiled"}, 0},
    {"cross_entropy_fwd_bwd_blockrows", "softmax_ce mean", MODE_AUTOGRAD, 0, 2, {"cross_entropy_fwd_bwd"},
     {"cross_entropy_fwd_bwd_compiled"}, 1},
    /* the kernels alone: the backward kernel reads the forward's gradient and scales it */
    {"cross_entropy_fwd_bwd_kernels", "softmax_ce mean", MODE_FB, 0, 4, {"cross_entropy_fwd_bwd"},
     {"cross_entropy_fwd_bwd_compiled"}, 0},
    {"layernorm_fwd_bwd", "layernorm", MODE_AUTOGRAD, 0, 5, {"layernorm_fwd_bwd"}, {"layernorm_fwd_bwd_compiled"}, 0},
    {"layernorm_fwd_bwd_blockrows", "layernorm", MODE_AUTOGRAD, 0, 5, {"layernorm_fwd_bwd"},
     {"layernorm_fwd_bwd_compiled"}, 1},
    {"layernorm_fwd_bwd_kernels", "layernorm", MODE_FB, 0, 5, {"layernorm_fwd_bwd"}, {"layernorm_fwd_bwd_compiled"}, 0},
};
#define NAK ((int)(sizeof AK / sizeof AK[0]))

static void print_list(const char *col, const char *const *keys) {
    printf("\"%s\": [", col);
    for (int i = 0; i < 2 && keys[i]; i++) printf("%s\"%s\"", i ? ", " : "", keys[i]);
    printf("], ");
}

/* One JSON object: cgrad key -> {eager: [anchor keys], compiled: [...], passes, impl}. */
static void print_anchors(void) {
    printf("ANCHORS {");
    for (int i = 0; i < NAK; i++) {
        printf("%s\"%s\": {", i ? ", " : "", AK[i].key);
        print_list("eager", AK[i].eager);
        print_list("compiled", AK[i].compiled);
        printf("\"passes\": %d, \"impl\": \"%s\"}", AK[i].passes, AK[i].cudnn ? "cudnn" : "own");
    }
    printf("}\n");
}

#ifndef CG_HAVE_CUDA
int main(void) {
    print_anchors();
    printf("bench_kernels: this cgrad was built without CUDA (CG_CUDA=OFF); nothing to measure\n");
    printf("JSON {}\n");
    return 0;
}
#else
#include "cgrad/cuda.h"
#include "cuda/cuda_internal.h"

typedef struct kspec {
    const char *name;
    cg_op op;
    int n_in;         /* float inputs of shape (R, C) unless noted by `vec` */
    unsigned vec;     /* bit i: input i is a (C) vector */
    int labels;       /* input 1 is i64 labels (R) */
    int n_aux;
    cg_op_params p;
    double rd, wr;    /* byte floor of the forward as multiples of R*C*4 (reads, writes) */
    double brd, bwr;  /* the same for the backward (0, 0: not timed) */
} kspec;

#define P(...) ((cg_op_params){__VA_ARGS__})

static const kspec K[] = {
    {"add", CG_OP_ADD, 2, 0, 0, 0, P(0), 2, 1, 1, 2},
    {"add bias (C)", CG_OP_ADD, 2, 2, 0, 0, P(0), 1, 1, 1, 1},
    {"mul", CG_OP_MUL, 2, 0, 0, 0, P(0), 2, 1, 3, 2},
    {"scale", CG_OP_SCALE, 1, 0, 0, 0, P(.alpha = 2, .beta = 1), 1, 1, 1, 1},
    {"exp", CG_OP_EXP, 1, 0, 0, 0, P(0), 1, 1, 2, 1},
    {"sigmoid", CG_OP_SIGMOID, 1, 0, 0, 0, P(0), 1, 1, 2, 1},
    {"relu", CG_OP_RELU, 1, 0, 0, 0, P(0), 1, 1, 2, 1},
    {"gelu erf", CG_OP_GELU, 1, 0, 0, 0, P(.approximate = CG_GELU_ERF), 1, 1, 2, 1},
    {"gelu tanh", CG_OP_GELU, 1, 0, 0, 0, P(.approximate = CG_GELU_TANH), 1, 1, 2, 1},
    {"softmax", CG_OP_SOFTMAX, 1, 0, 0, 0, P(0), 1, 1, 2, 1},
    {"log_softmax", CG_OP_LOG_SOFTMAX, 1, 0, 0, 0, P(0), 1, 1, 2, 1},
    {"layernorm", CG_OP_LAYERNORM, 3, 6, 0, 2, P(.eps = 1e-5), 1, 1, 2, 1},
    {"batchnorm train", CG_OP_BATCHNORM, 5, 30, 0, 2, P(.eps = 1e-5, .momentum = 0.1, .training = 1), 1, 1, 2, 1},
    {"batchnorm eval", CG_OP_BATCHNORM, 5, 30, 0, 2, P(.eps = 1e-5, .momentum = 0.1, .training = 0), 1, 1, 2, 1},
    {"dropout p=0.1", CG_OP_DROPOUT, 1, 0, 0, 0, P(.p = 0.1, .seed = 42), 1, 1, 1, 1},
    {"dropout p=0.5", CG_OP_DROPOUT, 1, 0, 0, 0, P(.p = 0.5, .seed = 42), 1, 1, 1, 1}, /* the anchors' p */
    {"sum axis 0", CG_OP_SUM, 1, 0, 0, 0, P(.axis = 0), 1, 0, 0, 1},
    {"sum axis 1", CG_OP_SUM, 1, 0, 0, 0, P(.axis = 1), 1, 0, 0, 1},
    {"mean all", CG_OP_MEAN, 1, 0, 0, 0, P(.axis = CG_ALL_AXES), 1, 0, 0, 1},
    {"mse mean", CG_OP_MSE, 2, 0, 0, 0, P(.reduction = CG_REDUCE_MEAN), 2, 0, 2, 2},
    {"bce_logits mean", CG_OP_BCE_LOGITS, 2, 0, 0, 0, P(.reduction = CG_REDUCE_MEAN), 2, 0, 2, 2},
    {"softmax_ce mean", CG_OP_SOFTMAX_CE, 2, 0, 1, 1, P(.reduction = CG_REDUCE_MEAN), 1, 1, 1, 1},
};
#define NK ((int)(sizeof K / sizeof K[0]))

static void die(cg_status s, const char *what) {
    fprintf(stderr, "bench_kernels: %s failed: %s: %s\n", what, cg_status_str(s), cg_last_error());
    exit(1);
}
#define OK(x)                                                                                                 \
    do {                                                                                                      \
        cg_status s_ = (x);                                                                                   \
        if (s_ != CG_OK) die(s_, #x);                                                                         \
    } while (0)

static cg_tensor *mk(const int64_t *shape, int nd, cg_dtype dt, cg_device dev, uint64_t seed, int positive) {
    cg_tensor *t;
    OK(cg__tensor_new(shape, nd, dt, dev, &t));
    const cg_backend *be = cg__backend(dev);
    if (dt == CG_I64) { /* labels in [0, C): made on the host */
        int64_t n = cg__numel(shape, nd), *h = malloc((size_t)n * 8);
        for (int64_t i = 0; i < n; i++) h[i] = (int64_t)((i * 2654435761u) % (uint64_t)positive);
        OK(be->memcpy(dev.index, cg__ptr(t), h, (size_t)n * 8, dev.type == CG_DEVICE_CPU ? CG_COPY_D2D : CG_COPY_H2D));
        free(h);
        return t;
    }
    OK(be->rand(t, positive ? CG_RAND_UNIFORM : CG_RAND_NORMAL, positive ? 0.5 : 0.0, positive ? 2.0 : 1.0, seed, 0));
    return t;
}

/* One op call with all tensors on dev for R x C; gin for every float input. */
typedef struct inst {
    cg_op_call c;
    cg_tensor *gout, *gin[CG_MAX_IN];
} inst;

static void inst_make(inst *I, const kspec *k, int64_t R, int64_t C, cg_device dev) {
    memset(I, 0, sizeof *I);
    I->c.op = k->op;
    I->c.p = &k->p;
    I->c.n_in = k->n_in;
    I->c.n_aux = k->n_aux;
    int64_t mat[2] = {R, C}, vec[1] = {C}, rows[1] = {R};
    for (int i = 0; i < k->n_in; i++) {
        if (k->labels && i == 1) {
            I->c.in[i] = mk(rows, 1, CG_I64, dev, 0, (int)C);
            continue;
        }
        int v = (k->vec >> i) & 1;
        I->c.in[i] = mk(v ? vec : mat, v ? 1 : 2, CG_F32, dev, 100 + (uint64_t)i, i == 4 /* running var */);
        if (k->op == CG_OP_BCE_LOGITS && i == 1) { /* targets in [0, 1) */
            OK(cg__backend(dev)->rand(I->c.in[i], CG_RAND_UNIFORM, 0.0, 1.0, 7, 0));
        }
    }
    int64_t shape[CG_MAX_DIMS];
    int nd;
    cg_dtype dt;
    OK(cg_op_table[k->op].shape(&I->c, shape, &nd, &dt));
    OK(cg__tensor_new(shape, nd, dt, dev, &I->c.out));
    for (int a = 0; a < k->n_aux; a++) {
        int64_t as[2] = {k->op == CG_OP_LAYERNORM ? R : k->op == CG_OP_BATCHNORM ? C : R, C};
        int an = k->op == CG_OP_SOFTMAX_CE ? 2 : 1;
        OK(cg__tensor_new(as, an, CG_F32, dev, &I->c.aux[a]));
    }
    I->gout = mk(shape, nd, CG_F32, dev, 9, 0);
    for (int i = 0; i < k->n_in; i++) {
        if (k->labels && i == 1) continue;
        if (k->op == CG_OP_BATCHNORM && i >= 3) continue;
        OK(cg__tensor_new_like(I->c.in[i], &I->gin[i]));
    }
}

static void inst_free(inst *I) {
    for (int i = 0; i < CG_MAX_IN; i++) {
        cg_tensor_release(I->c.in[i]);
        cg_tensor_release(I->gin[i]);
    }
    for (int a = 0; a < CG_MAX_AUX; a++) cg_tensor_release(I->c.aux[a]);
    cg_tensor_release(I->c.out);
    cg_tensor_release(I->gout);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* MODE_AUTOGRAD for softmax-CE and LayerNorm: I's inputs (requires_grad set) through the
 * public op and the engine; keep = 0 drops the inputs' gradients afterwards, as the anchors
 * do before each step. */
static cg_status autograd_once(inst *I, int keep) {
    cg_status st = cg_scope_begin();
    if (st != CG_OK) return st;
    cg_tensor *y = NULL;
    if (I->c.op == CG_OP_SOFTMAX_CE) {
        st = cg_softmax_cross_entropy(I->c.in[0], I->c.in[1], I->c.p->reduction, I->c.p->label_smoothing, &y);
        if (st == CG_OK) st = cg_backward(y);
    } else {
        st = cg_layernorm(I->c.in[0], I->c.in[1], I->c.in[2], I->c.p->eps, &y);
        if (st == CG_OK) st = cg_backward_ex(y, I->gout, 0);
    }
    for (int i = 0; i < I->c.n_in && !keep; i++)
        if (cg_tensor_grad(I->c.in[i])) cg_tensor_set_grad(I->c.in[i], NULL);
    cg_scope_end();
    return st;
}

/* mode: MODE_FWD, MODE_BWD (reads the last forward's out/aux), MODE_FB (both, back to back),
 * MODE_AUTOGRAD */
static cg_status run_once(inst *I, int mode) {
    const cg_backend *be = cg__backend(I->c.out->st->dev);
    if (mode == MODE_AUTOGRAD) return autograd_once(I, 0);
    if (mode == MODE_BWD) return be->backward[I->c.op](&I->c, I->gout, I->gin);
    cg_status st = be->forward[I->c.op](&I->c);
    if (st != CG_OK || mode == MODE_FWD) return st;
    return be->backward[I->c.op](&I->c, I->gout, I->gin);
}

/* median milliseconds over reps, events on the device stream */
static float time_ms(cg_cuda_ctx *ctx, inst *I, int bwd, int reps) {
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (int i = 0; i < 3; i++) OK(run_once(I, bwd));
    float *t = malloc((size_t)reps * sizeof *t);
    for (int i = 0; i < reps; i++) {
        cudaEventRecord(a, ctx->stream);
        OK(run_once(I, bwd));
        cudaEventRecord(b, ctx->stream);
        cudaEventSynchronize(b);
        cudaEventElapsedTime(&t[i], a, b);
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_float);
    float m = t[reps / 2];
    free(t);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return m;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_ms(inst *I, int bwd) {
    OK(run_once(I, bwd)); /* warm */
    int n = 0;
    double t0 = now_s(), t;
    do {
        OK(run_once(I, bwd));
        n++;
        t = now_s() - t0;
    } while (t < 0.2 && n < 50);
    return 1e3 * t / n;
}

/* max |tg - tc| / (1 + |tc|); NaN if either is NaN */
static double max_rel(const cg_tensor *tg, const cg_tensor *tc) {
    int64_t n = cg_tensor_numel(tc);
    float *hg = malloc((size_t)(n ? n : 1) * 4), *hc = malloc((size_t)(n ? n : 1) * 4);
    OK(cg_tensor_to_host(tg, hg, (size_t)n * 4));
    OK(cg_tensor_to_host(tc, hc, (size_t)n * 4));
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)hg[i] - (double)hc[i]) / (1.0 + fabs((double)hc[i]));
        if (!(d <= e)) e = d; /* NaN sticks */
    }
    free(hg);
    free(hc);
    return e;
}

/* max_rel of the GPU against the CPU over the output (fwd) or the first gradient (bwd) */
static double check(inst *g, inst *c, int bwd) {
    cg_tensor *tg = bwd ? g->gin[0] : g->c.out, *tc = bwd ? c->gin[0] : c->c.out;
    return tg && tc ? max_rel(tg, tc) : 0;
}

static const kspec *kernel_named(const char *name) {
    for (int k = 0; k < NK; k++)
        if (!strcmp(K[k].name, name)) return &K[k];
    fprintf(stderr, "bench_kernels: no kernel row '%s'\n", name);
    exit(1);
}

/* The anchors' measurements at 16384 x 4096 f32: one row each, then the JSON line (cgrad
 * key -> median ms). The autograd rows are checked against the backend's own fwd + bwd
 * kernels on the same inputs (the CE one must agree bit for bit: aux * 1 == aux). */
static void anchors_section(cg_cuda_ctx *ctx, int reps, double copy_ms, double copy_gbs) {
    const int64_t R = 16384, C = 4096;
    printf("\n== the PyTorch anchors' measurements, %lld x %lld f32 (keys in the ANCHORS line) ==\n", (long long)R,
           (long long)C);
    printf("%-30s %-8s %10s %10s %9s %9s\n", "cgrad key", "mode", "time(us)", "GB/s", "of copy", "check");
    double ms[NAK];
    for (int a = 0; a < NAK; a++) {
        const anchor_key *A = &AK[a];
        OK(cg_cuda_set_impl(A->cudnn ? CG_IMPL_CUDNN : CG_IMPL_OWN));
        cg__cuda_set_row_kernels(!A->block_rows);
        inst g;
        inst_make(&g, kernel_named(A->kernel), R, C, CG_CUDA(0));
        double err = 0;
        if (A->mode == MODE_AUTOGRAD) {
            for (int i = 0; i < g.c.n_in; i++)
                if (cg_tensor_dtype(g.c.in[i]) == CG_F32) OK(cg_tensor_set_requires_grad(g.c.in[i], 1));
            if (g.c.op == CG_OP_SOFTMAX_CE) OK(cg__backend(CG_CUDA(0))->fill(g.gout, 1.0)); /* cg_backward's seed */
            OK(run_once(&g, MODE_FB));
            OK(autograd_once(&g, 1));
            err = max_rel(cg_tensor_grad(g.c.in[0]), g.gin[0]);
            for (int i = 0; i < g.c.n_in; i++)
                if (cg_tensor_grad(g.c.in[i])) OK(cg_tensor_set_grad(g.c.in[i], NULL));
        }
        ms[a] = time_ms(ctx, &g, A->mode, reps);
        double gbs = A->passes * (double)(R * C) * 4.0 / (ms[a] * 1e-3) / 1e9;
        printf("%-30s %-8s %10.1f %10.1f %8.0f%% %9.1e %s\n", A->key,
               A->mode == MODE_FWD ? "fwd" : A->mode == MODE_FB ? "kernels" : "autograd", ms[a] * 1e3, gbs,
               100.0 * gbs / copy_gbs, err, err == 0 || err < 1e-6 ? "" : "MISMATCH");
        inst_free(&g);
    }
    OK(cg_cuda_set_impl(CG_IMPL_OWN));
    cg__cuda_set_row_kernels(1);
    printf("JSON {\"copy_%lldx%lld_f32\": %.6f", (long long)R, (long long)C, copy_ms);
    for (int a = 0; a < NAK; a++) printf(", \"%s\": %.6f", AK[a].key, ms[a]);
    printf("}\n");
}

int main(int argc, char **argv) {
    print_anchors();
    if (argc > 1 && !strcmp(argv[1], "--list")) return 0;
    int reps = argc > 1 ? atoi(argv[1]) : 30;
    if (reps < 3) reps = 3;
    if (cg_device_count() == 0) {
        printf("bench_kernels: no CUDA device (%s); nothing to measure\n", cg_cuda_availability());
        printf("JSON {}\n");
        return 0;
    }
    cg_cuda_ctx *ctx;
    OK(cg_cuda_ctx_get(0, &ctx));
    cg_cuda_device_info info;
    OK(cg_cuda_device_info_get(0, &info));
    printf("device: %s (sm_%d%d, %d SMs, %.1f GiB), cuDNN %d, reps %d (median)\n", info.name, info.cc_major,
           info.cc_minor, info.sm_count, (double)info.total_mem / (1 << 30), info.cudnn_version, reps);
    double big_copy_ms = 0, big_copy_gbs = 0;
    static const int64_t shapes[][2] = {{16384, 4096}, {64, 256}, {1025, 1027}};
    for (int impl = 0; impl < 2; impl++) {
        OK(cg_cuda_set_impl(impl ? CG_IMPL_CUDNN : CG_IMPL_OWN));
        for (int si = 0; si < 3; si++) {
            if (impl && si) continue; /* the cuDNN comparison at the big shape only */
            int64_t R = shapes[si][0], C = shapes[si][1];
            size_t nb = (size_t)(R * C) * 4;
            void *src, *dst;
            OK(cg_cuda_malloc(0, nb, &src));
            OK(cg_cuda_malloc(0, nb, &dst));
            cudaEvent_t a, b;
            cudaEventCreate(&a);
            cudaEventCreate(&b);
            float ct[64];
            for (int i = 0; i < 64; i++) {
                cudaEventRecord(a, ctx->stream);
                cudaMemcpyAsync(dst, src, nb, cudaMemcpyDeviceToDevice, ctx->stream);
                cudaEventRecord(b, ctx->stream);
                cudaEventSynchronize(b);
                cudaEventElapsedTime(&ct[i], a, b);
            }
            qsort(ct, 64, sizeof ct[0], cmp_float);
            double copy_gbs = 2.0 * (double)nb / (ct[32] * 1e-3) / 1e9;
            if (si == 0 && !impl) big_copy_ms = ct[32], big_copy_gbs = copy_gbs;
            cg_cuda_free(0, src);
            cg_cuda_free(0, dst);
            printf("\n== %lld x %lld f32, impl %s; D2D copy %.1f GB/s (read+write); CPU timed on a %lld-row slice, "
                   "scaled per element ==\n",
                   (long long)R, (long long)C, impl ? "cudnn" : "own", copy_gbs, (long long)(R < 64 ? R : 64));
            printf("%-18s %-4s %10s %10s %9s %9s %9s %s\n", "kernel", "dir", "time(us)", "GB/s", "of copy", "vs CPU",
                   "check", "");
            for (int k = 0; k < NK; k++) {
                if (impl && K[k].op != CG_OP_SOFTMAX && K[k].op != CG_OP_LOG_SOFTMAX && K[k].op != CG_OP_BATCHNORM)
                    continue;
                int64_t Rs = R < 64 ? R : 64;
                inst g, gs, cs;
                inst_make(&g, &K[k], R, C, CG_CUDA(0));
                inst_make(&gs, &K[k], Rs, C, CG_CUDA(0));
                inst_make(&cs, &K[k], Rs, C, CG_CPU);
                /* same inputs on the slice: copy the GPU slice's inputs to the CPU instance */
                for (int i = 0; i < K[k].n_in; i++)
                    OK(cg_tensor_copy_(cs.c.in[i], gs.c.in[i]));
                OK(cg_tensor_copy_(cs.gout, gs.gout));
                for (int bwd = 0; bwd < 2; bwd++) {
                    if (bwd && K[k].brd + K[k].bwr == 0) continue;
                    OK(run_once(&gs, 0));
                    OK(run_once(&cs, 0));
                    if (bwd) {
                        OK(run_once(&gs, 1));
                        OK(run_once(&cs, 1));
                    }
                    double err = check(&gs, &cs, bwd);
                    if (!bwd) OK(run_once(&g, 0)); /* backward reads the forward's out/aux */
                    float ms = time_ms(ctx, &g, bwd, reps);
                    double bytes = (bwd ? K[k].brd + K[k].bwr : K[k].rd + K[k].wr) * (double)(R * C) * 4.0;
                    double gbs = bytes / (ms * 1e-3) / 1e9;
                    double cms = cpu_ms(&cs, bwd) * (double)R / (double)Rs;
                    printf("%-18s %-4s %10.1f %10.1f %8.0f%% %8.1fx %9.1e %s\n", K[k].name, bwd ? "bwd" : "fwd",
                           ms * 1e3, gbs, 100.0 * gbs / copy_gbs, cms / ms, err, err < 1e-3 ? "" : "MISMATCH");
                }
                inst_free(&g);
                inst_free(&gs);
                inst_free(&cs);
            }
        }
    }
    OK(cg_cuda_set_impl(CG_IMPL_OWN));
    anchors_section(ctx, reps, big_copy_ms, big_copy_gbs);
    /* matmul: FLOP rate per precision */
    printf("\n== matmul 4096 x 4096 x 4096 f32 ==\n%-8s %10s %10s\n", "precision", "time(us)", "TFLOP/s");
    for (int prec = 0; prec < 3; prec++) {
        OK(cg_cuda_set_matmul_precision((cg_cuda_matmul_precision)prec));
        kspec mm = {"matmul", CG_OP_MATMUL, 2, 0, 0, 0, P(0), 0, 0, 0, 0};
        inst g;
        inst_make(&g, &mm, 4096, 4096, CG_CUDA(0));
        float ms = time_ms(ctx, &g, 0, reps);
        printf("%-8s %10.1f %10.1f\n", prec == 0 ? "fp32" : prec == 1 ? "tf32" : "bf16", ms * 1e3,
               2.0 * 4096.0 * 4096.0 * 4096.0 / (ms * 1e-3) / 1e12);
        inst_free(&g);
    }
    OK(cg_cuda_set_matmul_precision(CG_MATMUL_FP32));
    char paths[512];
    cg__cuda_gemm_paths_str(paths, sizeof paths);
    printf("\n%s\n", paths);
    cg_cuda_mem_stats st;
    OK(cg_cuda_memory_stats(0, &st));
    printf("\nallocator: peak %.1f MiB in use, %llu cudaMalloc calls, %llu cache hits of %llu allocations\n",
           (double)st.peak_in_use / (1 << 20), (unsigned long long)st.n_cuda_malloc, (unsigned long long)st.n_cache_hit,
           (unsigned long long)st.n_alloc);
    return 0;
}
#endif
