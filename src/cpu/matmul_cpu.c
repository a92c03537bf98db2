/* CPU matmul through OpenBLAS (sgemm/dgemm), its backward, and a triple-loop double
 * reference used as the test oracle. out = op(A) op(B) with op(A) (M, K), op(B) (K, N).
 * Backward (with B' = op(B), A' = op(A)): dA' = G B'^T, dB' = A'^T G, transposed back
 * into A's / B's own layout when trans_a / trans_b is set. */
#include <cblas.h>
#include <string.h>

#include "cpu_kernels.h"

void cg_cpu_gemm(cg_dtype dt, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, const void *B,
                 void *C, int accumulate) {
    size_t es = cg_dtype_size(dt);
    if (M == 0 || N == 0) return;
    if (K == 0) { /* BLAS rejects lda = 0; the product of empty sums is zero */
        if (!accumulate) memset(C, 0, (size_t)(M * N) * es);
        return;
    }
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    if (dt == CG_F32)
        cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B,
                    (int)ldb, accumulate ? 1.0f : 0.0f, C, (int)N);
    else
        cblas_dgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, 1.0, A, (int)lda, B,
                    (int)ldb, accumulate ? 1.0 : 0.0, C, (int)N);
}

static cg_status check_dims(const cg_tensor *a, const cg_tensor *b, int ta, int tb, int64_t *M, int64_t *N,
                            int64_t *K) {
    if (a->ndim != 2 || b->ndim != 2)
        return CG_FAIL(CG_E_SHAPE, "matmul: inputs must be 2-d, got %d-d and %d-d", a->ndim, b->ndim);
    *M = ta ? a->shape[1] : a->shape[0];
    *K = ta ? a->shape[0] : a->shape[1];
    int64_t kb = tb ? b->shape[1] : b->shape[0];
    *N = tb ? b->shape[0] : b->shape[1];
    if (kb != *K)
        return CG_FAIL(CG_E_SHAPE, "matmul: inner dims %lld != %lld", (long long)*K, (long long)kb);
    if (*M > 0x7fffffff || *N > 0x7fffffff || *K > 0x7fffffff)
        return CG_FAIL(CG_E_SHAPE, "matmul: dims above 2^31 are not supported by BLAS");
    return CG_OK;
}

cg_status cg_matmul_fwd_cpu(const cg_op_call *c) {
    const cg_tensor *a = c->in[0], *b = c->in[1];
    cg_dtype dt = c->out->dtype;
    if (!cg__is_float(dt)) return CG_CPU_BAD_DTYPE("matmul", dt);
    int64_t M = 0, N = 0, K = 0;
    CG_TRY(check_dims(a, b, c->p->trans_a, c->p->trans_b, &M, &N, &K));
    cg_cpu_gemm(dt, c->p->trans_a, c->p->trans_b, M, N, K, cg__ptr(a), cg__ptr(b), cg__ptr(c->out), 0);
    return CG_OK;
}

cg_status cg_matmul_bwd_cpu(const cg_op_call *c, const cg_tensor *gout, cg_tensor *const *gin) {
    const cg_tensor *a = c->in[0], *b = c->in[1];
    cg_dtype dt = gout->dtype;
    if (!cg__is_float(dt)) return CG_CPU_BAD_DTYPE("matmul", dt);
    int ta = c->p->trans_a, tb = c->p->trans_b;
    int64_t M = 0, N = 0, K = 0;
    CG_TRY(check_dims(a, b, ta, tb, &M, &N, &K));
    const void *A = cg__ptr(a), *B = cg__ptr(b), *G = cg__ptr(gout);
    if (gin[0]) {
        if (!ta) /* dA (M, K) = G (M, N) op(B)^T (N, K); op(B)^T = B^T, or B when tb */
            cg_cpu_gemm(dt, 0, !tb, M, K, N, G, B, cg__ptr(gin[0]), 0);
        else /* dA (K, M) = op(B) (K, N) G^T (N, M) */
            cg_cpu_gemm(dt, tb, 1, K, M, N, B, G, cg__ptr(gin[0]), 0);
    }
    if (gin[1]) {
        if (!tb) /* dB (K, N) = op(A)^T (K, M) G (M, N) */
            cg_cpu_gemm(dt, !ta, 0, K, N, M, A, G, cg__ptr(gin[1]), 0);
        else /* dB (N, K) = G^T (N, M) op(A) (M, K) */
            cg_cpu_gemm(dt, 1, ta, N, K, M, G, A, cg__ptr(gin[1]), 0);
    }
    return CG_OK;
}

/* ---- reference ---- */

void cg_matmul_ref_f64(const double *A, const double *B, double *C, int64_t M, int64_t N, int64_t K,
                       int trans_a, int trans_b) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double x = trans_a ? A[k * M + i] : A[i * K + k];
                double y = trans_b ? B[j * K + k] : B[k * N + j];
                s += x * y;
            }
            C[i * N + j] = s;
        }
}

static double ld(const cg_tensor *t, int64_t i) {
    return t->dtype == CG_F32 ? (double)((const float *)cg__ptr(t))[i] : ((const double *)cg__ptr(t))[i];
}

cg_status cg_matmul_ref_cpu(const cg_tensor *a, const cg_tensor *b, int trans_a, int trans_b, cg_tensor *out) {
    CG_ARG_NOT_NULL(a, "cg_matmul_ref_cpu");
    CG_ARG_NOT_NULL(b, "cg_matmul_ref_cpu");
    CG_ARG_NOT_NULL(out, "cg_matmul_ref_cpu");
    if (!cg__is_float(a->dtype)) return CG_CPU_BAD_DTYPE("matmul_ref", a->dtype);
    if (!cg__is_float(b->dtype)) return CG_CPU_BAD_DTYPE("matmul_ref", b->dtype);
    if (!cg__is_float(out->dtype)) return CG_CPU_BAD_DTYPE("matmul_ref", out->dtype);
    int64_t M = 0, N = 0, K = 0;
    CG_TRY(check_dims(a, b, trans_a, trans_b, &M, &N, &K));
    if (out->ndim != 2 || out->shape[0] != M || out->shape[1] != N)
        return CG_FAIL(CG_E_SHAPE, "matmul_ref: out must be (%lld, %lld)", (long long)M, (long long)N);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += ld(a, trans_a ? k * M + i : i * K + k) * ld(b, trans_b ? j * K + k : k * N + j);
            if (out->dtype == CG_F32) ((float *)cg__ptr(out))[i * N + j] = (float)s;
            else ((double *)cg__ptr(out))[i * N + j] = s;
        }
    return CG_OK;
}
