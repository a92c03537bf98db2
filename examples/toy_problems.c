/* Toy problems with the Keras-style API: XOR (binary cross-entropy), two spirals
 * (categorical cross-entropy) and 1-D sine regression (MSE). Prints each final metric;
 * exits 1 when one of them did not converge. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cgrad.h"
#include "cgrad/train.h"

#define PI 3.14159265358979323846
#define CHECK(call)                                                                                           \
    do {                                                                                                      \
        cg_status s_ = (call);                                                                                \
        if (s_ != CG_OK) {                                                                                    \
            fprintf(stderr, "%s: %s\n", #call, cg_last_error());                                             \
            exit(2);                                                                                          \
        }                                                                                                     \
    } while (0)

static cg_tensor *tensor(const float *v, int64_t rows, int64_t cols) {
    int64_t s[2] = {rows, cols};
    cg_tensor *t;
    CHECK(cg_tensor_from_host(v, s, cols ? 2 : 1, CG_F32, CG_CPU, &t));
    return t;
}

static double train(cg_model *m, cg_loss_kind loss, double lr, const cg_tensor *x, const cg_tensor *y, int epochs,
                    int64_t batch, int metric_acc) {
    cg_optim_config o = cg_optim_adam(lr);
    cg_loss_config l = cg_loss_config_default(loss);
    CHECK(cg_model_compile(m, &o, &l, metric_acc ? CG_METRIC_ACCURACY : CG_METRIC_NONE));
    cg_fit_config fc = cg_fit_config_default();
    fc.epochs = epochs;
    fc.batch_size = batch;
    fc.verbose = CG_VERBOSE_QUIET;
    CHECK(cg_model_fit(m, x, y, &fc, NULL));
    double lv, acc;
    CHECK(cg_model_evaluate(m, x, y, 256, &lv, &acc));
    return metric_acc ? acc : lv;
}

int main(void) {
    int ok = 1;
    cg_device dev = cg_default_device();
    /* XOR: 2-8-1 tanh */
    float xx[8] = {0, 0, 0, 1, 1, 0, 1, 1}, xy[4] = {0, 1, 1, 0};
    cg_tensor *x = tensor(xx, 4, 2), *y = tensor(xy, 4, 1);
    cg_model *m;
    CHECK(cg_model_create(dev, CG_F32, 3, &m));
    CHECK(cg_model_add_dense(m, 2, 8, CG_ACT_TANH));
    CHECK(cg_model_add_dense(m, 8, 1, CG_ACT_NONE));
    double acc = train(m, CG_LOSS_BCE_LOGITS, 0.05, x, y, 300, 4, 1);
    printf("xor: accuracy %.2f\n", acc);
    ok &= acc == 1.0;
    cg_model_free(m), cg_tensor_release(x), cg_tensor_release(y);

    /* two spirals: 2-64-64-2 relu */
    enum { P = 150 };
    float *sx = malloc(4 * P * sizeof *sx), *sy = malloc(2 * P * sizeof *sy);
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < P; i++) {
            double t = 0.25 + 2.75 * PI * i / P, r = t / (3 * PI), s = c ? -1 : 1;
            sx[2 * (c * P + i)] = (float)(s * r * cos(t));
            sx[2 * (c * P + i) + 1] = (float)(s * r * sin(t));
            sy[c * P + i] = (float)c;
        }
    x = tensor(sx, 2 * P, 2);
    cg_tensor *yf = tensor(sy, 2 * P, 0);
    CHECK(cg_tensor_cast(yf, CG_I64, &y));
    CHECK(cg_model_create(dev, CG_F32, 5, &m));
    CHECK(cg_model_add_dense(m, 2, 64, CG_ACT_RELU));
    CHECK(cg_model_add_dense(m, 64, 64, CG_ACT_RELU));
    CHECK(cg_model_add_dense(m, 64, 2, CG_ACT_NONE));
    acc = train(m, CG_LOSS_CROSS_ENTROPY, 0.01, x, y, 300, 32, 1);
    printf("two spirals: accuracy %.3f\n", acc);
    ok &= acc >= 0.97;
    cg_model_free(m), cg_tensor_release(x), cg_tensor_release(y), cg_tensor_release(yf);
    free(sx), free(sy);

    /* sine: 1-32-32-1 tanh, MSE */
    enum { N = 256 };
    float qx[N], qy[N];
    for (int i = 0; i < N; i++) {
        qx[i] = (float)(-PI + 2 * PI * i / (N - 1));
        qy[i] = (float)sin(qx[i]);
    }
    x = tensor(qx, N, 1), y = tensor(qy, N, 1);
    CHECK(cg_model_create(dev, CG_F32, 2, &m));
    CHECK(cg_model_add_dense(m, 1, 32, CG_ACT_TANH));
    CHECK(cg_model_add_dense(m, 32, 32, CG_ACT_TANH));
    CHECK(cg_model_add_dense(m, 32, 1, CG_ACT_NONE));
    double mse = train(m, CG_LOSS_MSE, 0.01, x, y, 300, 32, 0);
    printf("sine regression: mse %.5f\n", mse);
    ok &= mse < 5e-3;
    cg_model_free(m), cg_tensor_release(x), cg_tensor_release(y);
    return ok ? 0 : 1;
}
