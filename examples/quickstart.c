/* The README's first example, complete: a 2-layer classifier written with raw ops and the
 * autograd graph, trained with hand-written SGD steps on a made-up problem (the class is
 * the sign pattern of two input features). Exits non-zero unless the loss falls. */
#include <stdio.h>

#include "cgrad.h"

#define CHECK(call)                                                                                           \
    do {                                                                                                      \
        cg_status s_ = (call);                                                                                \
        if (s_ != CG_OK) {                                                                                    \
            fprintf(stderr, "%s: %s\n", #call, cg_last_error());                                              \
            return 2;                                                                                         \
        }                                                                                                     \
    } while (0)

int main(void) {
    cg_rng rng = cg_rng_make(42);
    int64_t xs[2] = {256, 16}, w1s[2] = {32, 16}, w2s[2] = {4, 32}, n = 256;
    cg_tensor *x, *w1, *w2, *labels;
    CHECK(cg_tensor_rand_normal(xs, 2, CG_F32, CG_CPU, 0, 1, &rng, &x));
    CHECK(cg_tensor_rand_normal(w1s, 2, CG_F32, CG_CPU, 0, 0.35, &rng, &w1)); /* ~He: sqrt(2/16) */
    CHECK(cg_tensor_rand_normal(w2s, 2, CG_F32, CG_CPU, 0, 0.25, &rng, &w2));
    CHECK(cg_tensor_set_requires_grad(w1, 1));
    CHECK(cg_tensor_set_requires_grad(w2, 1));
    /* labels: 2 * (x0 > 0) + (x1 > 0) */
    int64_t lab[256];
    const float *xv = cg_tensor_data(x);
    for (int i = 0; i < 256; i++) lab[i] = 2 * (xv[i * 16] > 0) + (xv[i * 16 + 1] > 0);
    CHECK(cg_tensor_from_host(lab, &n, 1, CG_I64, CG_CPU, &labels));

    double first = 0, last = 0;
    for (int step = 0; step < 200; step++) {
        CHECK(cg_scope_begin()); /* every tensor made below is released at cg_scope_end */
        cg_tensor *h, *logits, *loss;
        CHECK(cg_matmul(x, w1, 0, 1, &h)); /* x @ w1^T */
        CHECK(cg_relu(h, &h));
        CHECK(cg_matmul(h, w2, 0, 1, &logits));
        CHECK(cg_softmax_cross_entropy(logits, labels, CG_REDUCE_MEAN, 0.0, &loss));
        CHECK(cg_tensor_item(loss, step == 0 ? &first : &last));
        CHECK(cg_backward(loss)); /* gradients accumulate (+=) into w1 and w2's .grad */
        cg_no_grad_begin();       /* plain SGD, in place, outside the graph */
        CHECK(cg_add_(w1, -0.5, cg_tensor_grad(w1)));
        CHECK(cg_add_(w2, -0.5, cg_tensor_grad(w2)));
        cg_no_grad_end();
        cg_tensor *params[2] = {w1, w2};
        CHECK(cg_zero_grad(params, 2));
        CHECK(cg_scope_end());
    }
    printf("loss %.4f -> %.4f\n", first, last);
    cg_tensor *all[4] = {x, w1, w2, labels};
    for (int i = 0; i < 4; i++) cg_tensor_release(all[i]);
    return last < 0.5 * first ? 0 : 1;
}
