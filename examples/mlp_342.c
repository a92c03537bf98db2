/* The chapter's 3-4-2 MLP built by hand on the graph: W1 (4,3), b1, ReLU, W2 (2,4), b2,
 * softmax cross-entropy on a few made-up examples, plain SGD steps (cg_add_ under
 * no_grad, cg_zero_grad). Prints the loss; exits non-zero if it did not go down. */
#include <math.h>
#include <stdio.h>

#include "cgrad.h"

#define CHECK(expr)                                                                                           \
    do {                                                                                                      \
        cg_status s_ = (expr);                                                                                \
        if (s_ != CG_OK) {                                                                                    \
            fprintf(stderr, "%s failed: %s: %s\n", #expr, cg_status_str(s_), cg_last_error());                \
            return 2;                                                                                         \
        }                                                                                                     \
    } while (0)

int main(void) {
    /* six examples, three features, two classes: class 1 when x0 + x1 - x2 > 0 */
    const float x[6][3] = {{1, 2, 0}, {0.5f, 1, 3}, {-1, 0.5f, 0}, {2, -1, -1}, {0, 0, 2}, {1, 1, 1}};
    const int64_t y[6] = {1, 0, 0, 1, 0, 1};
    int64_t sx[2] = {6, 3}, sy = 6, sw1[2] = {4, 3}, sb1 = 4, sw2[2] = {2, 4}, sb2 = 2;
    cg_tensor *X, *Y, *W1, *b1, *W2, *b2;
    CHECK(cg_tensor_from_host(x, sx, 2, CG_F32, CG_CPU, &X));
    CHECK(cg_tensor_from_host(y, &sy, 1, CG_I64, CG_CPU, &Y));
    cg_rng rng = cg_rng_make(342);
    CHECK(cg_tensor_rand_normal(sw1, 2, CG_F32, CG_CPU, 0.0, sqrt(2.0 / 3), &rng, &W1)); /* He init */
    CHECK(cg_tensor_zeros(&sb1, 1, CG_F32, CG_CPU, &b1));
    CHECK(cg_tensor_rand_normal(sw2, 2, CG_F32, CG_CPU, 0.0, sqrt(2.0 / 4), &rng, &W2));
    CHECK(cg_tensor_zeros(&sb2, 1, CG_F32, CG_CPU, &b2));
    cg_tensor *params[4] = {W1, b1, W2, b2};
    int64_t count = 0;
    for (int i = 0; i < 4; i++) {
        CHECK(cg_tensor_set_requires_grad(params[i], 1));
        count += cg_tensor_numel(params[i]);
    }
    printf("3-4-2 MLP: %lld parameters\n", (long long)count);

    const double lr = 0.5;
    double first = 0, last = 0;
    for (int step = 0; step < 50; step++) {
        CHECK(cg_scope_begin()); /* every temporary of this step goes when the scope ends */
        cg_tensor *z1, *h1, *a1, *z2, *logits, *loss;
        CHECK(cg_matmul(X, W1, 0, 1, &z1)); /* (6,3) x (4,3)^T */
        CHECK(cg_add(z1, b1, &h1));
        CHECK(cg_relu(h1, &a1));
        CHECK(cg_matmul(a1, W2, 0, 1, &z2));
        CHECK(cg_add(z2, b2, &logits));
        CHECK(cg_softmax_cross_entropy(logits, Y, CG_REDUCE_MEAN, 0.0, &loss));
        double l;
        CHECK(cg_tensor_item(loss, &l));
        CHECK(cg_zero_grad(params, 4));
        CHECK(cg_backward(loss));
        cg_no_grad_begin();
        for (int i = 0; i < 4; i++) CHECK(cg_add_(params[i], -lr, cg_tensor_grad(params[i])));
        cg_no_grad_end();
        CHECK(cg_scope_end());
        if (step == 0) first = l;
        last = l;
        if (step % 10 == 0 || step == 49) printf("step %2d  loss %.4f\n", step, l);
    }
    for (int i = 0; i < 4; i++) cg_tensor_release(params[i]);
    cg_tensor_release(X);
    cg_tensor_release(Y);
    if (!(last < 0.5 * first)) {
        fprintf(stderr, "loss did not go down: %.4f -> %.4f\n", first, last);
        return 1;
    }
    printf("loss went down: %.4f -> %.4f\n", first, last);
    return 0;
}
