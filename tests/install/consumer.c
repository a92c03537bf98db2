/* A C program built against an installed cgrad through pkg-config (tests/install_consumer.sh
 * compiles it with `pkg-config --cflags --libs cgrad`, and --static): a matmul on fresh random
 * inputs checked against a float64 product, and a bad call answered with a status. */
#include <cgrad.h>

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int main(void) {
    enum { M = 9, K = 13, N = 6 };
    const int64_t sa[2] = {M, K}, sb[2] = {K, N};
    cg_rng rng = cg_rng_make((uint64_t)time(NULL));
    cg_tensor *a = NULL, *b = NULL, *c = NULL;
    float av[M * K], bv[K * N], cv[M * N];
    if (cg_tensor_rand_normal(sa, 2, CG_F32, CG_CPU, 0.0, 1.0, &rng, &a) != CG_OK ||
        cg_tensor_rand_normal(sb, 2, CG_F32, CG_CPU, 0.0, 1.0, &rng, &b) != CG_OK ||
        cg_matmul(a, b, 0, 0, &c) != CG_OK || cg_tensor_to_host(a, av, sizeof av) != CG_OK ||
        cg_tensor_to_host(b, bv, sizeof bv) != CG_OK || cg_tensor_to_host(c, cv, sizeof cv) != CG_OK) {
        fprintf(stderr, "consumer_c: %s\n", cg_last_error());
        return 1;
    }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double want = 0;
            for (int k = 0; k < K; k++) want += (double)av[i * K + k] * bv[k * N + j];
            if (!(fabs(cv[i * N + j] - want) <= 1e-5 + 1e-5 * fabs(want))) {
                fprintf(stderr, "consumer_c: c[%d][%d] = %.9g, want %.9g\n", i, j, cv[i * N + j], want);
                return 1;
            }
        }
    cg_tensor *bad = NULL;
    cg_status s = cg_matmul(a, a, 0, 0, &bad); /* (9,13) x (9,13) does not chain */
    if (s != CG_E_SHAPE || strlen(cg_last_error()) == 0) {
        fprintf(stderr, "consumer_c: a bad matmul gave %s, want CG_E_SHAPE with a message\n", cg_status_str(s));
        return 1;
    }
    cg_tensor_release(a);
    cg_tensor_release(b);
    cg_tensor_release(c);
    printf("consumer_c: ok (%s)\n", cg_cuda_built() ? "CUDA backend built" : "CPU-only build");
    return 0;
}
