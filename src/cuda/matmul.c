/* Matmul on the GPU: cuBLASLt with a per-shape algorithm cache, cuBLAS as the fallback.
 *
 * Row-major C (M, N) = op(A) op(B) is computed as the column-major product
 * C^T (N, M) = op(B)^T op(A)^T: the operands are swapped and each keeps its own transpose
 * flag, so no data moves. Precision (cg_cuda_set_matmul_precision) picks the compute type
 * for f32: CUBLAS_COMPUTE_32F (exact), _FAST_TF32 or _FAST_16BF (tensor cores, inputs
 * rounded inside cuBLAS, fp32 accumulation and output); f64 always uses COMPUTE_64F.
 *
 * Algorithm cache: the first call for a (device, M, N, K, ta, tb, dtype, precision,
 * epilogue, operand pointer alignments) asks cublasLtMatmulAlgoGetHeuristic for the best
 * algorithm under the context's workspace and those alignments; the answer (or "Lt
 * refused") is kept in a small table. Refused shapes go to cublasSgemm / cublasGemmEx /
 * cublasDgemm.
 *
 * Epilogues (f32): bias, ReLU/GELU + bias (forward), and the bias gradient BGRADB, which
 * sums Lt's B = our A over the gemm's k: with the linear backward's dW = gz^T x (ta = 1)
 * that is db = column sums of gz, computed by the dW gemm itself. The bias and aux
 * pointers take part in the key: Lt's heuristic derives their expected alignment from
 * their values. A refused epilogue returns CG_E_UNSUPPORTED; callers keep their own
 * unfused path. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cuda_internal.h"

#define CACHE_SIZE 512

typedef struct algo_key { /* no padding (compared with memcmp, copied by assignment) */
    int64_t dev;
    int64_t M, N, K;
    int ta, tb, dt, prec, epi;
    uint32_t align_a, align_b, align_c; /* pointer alignments (bytes, <= 256): the algorithm depends on them */
    uint32_t align_bias, align_aux;     /* epilogue pointers (0 when unused): the heuristic reads them too */
} algo_key;

_Static_assert(sizeof(algo_key) == 8 * 4 + 4 * 5 + 4 * 5, "algo_key has padding");

typedef struct algo_entry {
    algo_key key;
    int used;
    int refused; /* Lt had no algorithm: use cuBLAS */
    cublasLtMatmulAlgo_t algo;
} algo_entry;

static pthread_mutex_t g_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static algo_entry g_cache[CACHE_SIZE];
static int g_cache_next;
static cg_cuda_gemm_paths g_paths; /* under g_cache_lock */

void cg__cuda_gemm_paths(cg_cuda_gemm_paths *out) {
    pthread_mutex_lock(&g_cache_lock);
    *out = g_paths;
    pthread_mutex_unlock(&g_cache_lock);
}

void cg__cuda_gemm_paths_str(char *buf, size_t n) {
    cg_cuda_gemm_paths p;
    cg__cuda_gemm_paths(&p);
    snprintf(buf, n,
             "gemm paths: Lt %lld, cuBLAS %lld; epilogues fused/unfused: bias %lld/%lld, relu+bias %lld/%lld, "
             "gelu+bias %lld/%lld, bgrad %lld/%lld; heuristic errors %lld%s%s",
             p.lt, p.fallback, p.fused[CG_EPI_BIAS], p.unfused[CG_EPI_BIAS], p.fused[CG_EPI_RELU_BIAS],
             p.unfused[CG_EPI_RELU_BIAS], p.fused[CG_EPI_GELU_BIAS], p.unfused[CG_EPI_GELU_BIAS], p.fused[CG_EPI_BGRAD],
             p.unfused[CG_EPI_BGRAD], p.heuristic_errors, p.heuristic_errors ? ", last " : "", p.last_error);
}

enum { PATH_EMPTY, PATH_LT, PATH_BLAS, PATH_REFUSED };

static void count_path(int epi, int path) {
    pthread_mutex_lock(&g_cache_lock);
    if (epi == CG_EPI_NONE) {
        if (path == PATH_LT) g_paths.lt++;
        else if (path == PATH_BLAS) g_paths.fallback++;
    } else if (epi > 0 && epi < CG_EPI_COUNT) {
        if (path == PATH_LT) g_paths.fused[epi]++;
        else if (path == PATH_REFUSED) g_paths.unfused[epi]++;
    }
    pthread_mutex_unlock(&g_cache_lock);
}

static void count_heuristic_error(cublasStatus_t hs) {
    pthread_mutex_lock(&g_cache_lock);
    g_paths.heuristic_errors++;
    snprintf(g_paths.last_error, sizeof g_paths.last_error, "%s", cublasGetStatusName(hs));
    pthread_mutex_unlock(&g_cache_lock);
}

static int key_eq(const algo_key *a, const algo_key *b) { return memcmp(a, b, sizeof *a) == 0; }

static int cache_find(const algo_key *k, algo_entry *out) {
    int hit = 0;
    pthread_mutex_lock(&g_cache_lock);
    for (int i = 0; i < CACHE_SIZE; i++)
        if (g_cache[i].used && key_eq(&g_cache[i].key, k)) {
            *out = g_cache[i];
            hit = 1;
            break;
        }
    pthread_mutex_unlock(&g_cache_lock);
    return hit;
}

static void cache_put(const algo_entry *e) {
    pthread_mutex_lock(&g_cache_lock);
    g_cache[g_cache_next] = *e; /* round-robin replacement */
    g_cache[g_cache_next].used = 1;
    g_cache_next = (g_cache_next + 1) % CACHE_SIZE;
    pthread_mutex_unlock(&g_cache_lock);
}

/* Marks every entry of k refused (cuBLASLt refused the heuristic's pick at run time), or
 * adds a refused entry. */
static void cache_refuse(const algo_entry *e) {
    int hit = 0;
    pthread_mutex_lock(&g_cache_lock);
    for (int i = 0; i < CACHE_SIZE; i++)
        if (g_cache[i].used && key_eq(&g_cache[i].key, &e->key)) g_cache[i].refused = hit = 1;
    pthread_mutex_unlock(&g_cache_lock);
    if (!hit) {
        algo_entry r = *e;
        r.refused = 1;
        cache_put(&r);
    }
}

/* Descriptors of one call; destroyed by lt_free. */
typedef struct lt_call {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
} lt_call;

static void lt_free(lt_call *l) {
    if (l->op) cublasLtMatmulDescDestroy(l->op);
    if (l->a) cublasLtMatrixLayoutDestroy(l->a);
    if (l->b) cublasLtMatrixLayoutDestroy(l->b);
    if (l->c) cublasLtMatrixLayoutDestroy(l->c);
}

/* Largest power of two <= 256 that divides the address. cuBLASLt's heuristic assumes
 * 256-byte aligned operands unless told otherwise, and views (slice_rows, offsets) reach
 * the matmul with pointers aligned only to their element size. */
static uint32_t ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

static cublasComputeType_t compute_type(cg_dtype dt, int prec) {
    if (dt == CG_F64) return CUBLAS_COMPUTE_64F;
    if (prec == CG_MATMUL_TF32) return CUBLAS_COMPUTE_32F_FAST_TF32;
    if (prec == CG_MATMUL_BF16) return CUBLAS_COMPUTE_32F_FAST_16BF;
    return CUBLAS_COMPUTE_32F;
}

/* Build descriptors for the swapped column-major problem (m, n, k) = (N, M, K). */
static cg_status lt_build(lt_call *l, cg_dtype dt, int prec, int ta, int tb, int64_t M, int64_t N, int64_t K,
                          cg_cuda_epilogue epi, const void *bias, void *aux) {
    cudaDataType_t ty = dt == CG_F64 ? CUDA_R_64F : CUDA_R_32F;
    CG_TRY(CG_CUBLAS_CALL(cublasLtMatmulDescCreate(&l->op, compute_type(dt, prec), ty)));
    cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    CG_TRY(CG_CUBLAS_CALL(cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa)));
    CG_TRY(CG_CUBLAS_CALL(cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb)));
    /* Lt's A is our B: stored col-major as (N, K) ld N, or (K, N) ld K when tb */
    CG_TRY(CG_CUBLAS_CALL(cublasLtMatrixLayoutCreate(&l->a, ty, tb ? (uint64_t)K : (uint64_t)N, tb ? (uint64_t)N : (uint64_t)K,
                                                tb ? K : N)));
    /* Lt's B is our A: (K, M) ld K, or (M, K) ld M when ta */
    CG_TRY(CG_CUBLAS_CALL(cublasLtMatrixLayoutCreate(&l->b, ty, ta ? (uint64_t)M : (uint64_t)K, ta ? (uint64_t)K : (uint64_t)M,
                                                ta ? M : K)));
    CG_TRY(CG_CUBLAS_CALL(cublasLtMatrixLayoutCreate(&l->c, ty, (uint64_t)N, (uint64_t)M, N)));
    if (epi != CG_EPI_NONE) {
        cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_BIAS;
        /* Lt's B is our A (op(A)^T as k x n): BGRADB reduces it over k into n = M sums.
         * The gradient has the output's type (f32), so no BIAS_DATA_TYPE is set. */
        if (epi == CG_EPI_BGRAD) e = CUBLASLT_EPILOGUE_BGRADB;
        if (epi == CG_EPI_RELU_BIAS) e = aux ? CUBLASLT_EPILOGUE_RELU_AUX_BIAS : CUBLASLT_EPILOGUE_RELU_BIAS;
        if (epi == CG_EPI_GELU_BIAS) e = aux ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS;
        CG_TRY(CG_CUBLAS_CALL(cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e)));
        CG_TRY(CG_CUBLAS_CALL(cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias)));
        if (aux) {
            /* GELU aux holds the pre-activation (ld N); ReLU aux is a bit mask whose ld must
             * be a multiple of 128 elements: the caller sizes it (N rounded up to 128) x M bits */
            int64_t ld = epi == CG_EPI_RELU_BIAS ? (N + 127) / 128 * 128 : N;
            CG_TRY(CG_CUBLAS_CALL(
                cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux)));
            CG_TRY(CG_CUBLAS_CALL(cublasLtMatmulDescSetAttribute(l->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld)));
        }
    }
    return CG_OK;
}

static cg_status blas_fallback(cg_cuda_ctx *ctx, cg_dtype dt, int prec, int ta, int tb, int64_t M, int64_t N,
                               int64_t K, const void *A, const void *B, void *C) {
    cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    int lda = (int)(tb ? K : N), ldb = (int)(ta ? M : K);
    if (dt == CG_F64) {
        const double one = 1.0, zero = 0.0;
        return CG_CUBLAS_CALL(cublasDgemm(ctx->blas, opa, opb, (int)N, (int)M, (int)K, &one, B, lda, A, ldb, &zero, C,
                                     (int)N));
    }
    const float one = 1.0f, zero = 0.0f;
    if (prec == CG_MATMUL_FP32)
        return CG_CUBLAS_CALL(cublasSgemm(ctx->blas, opa, opb, (int)N, (int)M, (int)K, &one, B, lda, A, ldb, &zero, C,
                                     (int)N));
    return CG_CUBLAS_CALL(cublasGemmEx(ctx->blas, opa, opb, (int)N, (int)M, (int)K, &one, B, CUDA_R_32F, lda, A,
                                  CUDA_R_32F, ldb, &zero, C, CUDA_R_32F, (int)N, compute_type(dt, prec),
                                  CUBLAS_GEMM_DEFAULT));
}

static cg_status gemm_ex_impl(cg_cuda_ctx *ctx, cg_dtype dt, int ta, int tb, int64_t M, int64_t N, int64_t K,
                              const void *A, const void *B, void *C, cg_cuda_epilogue epi, const void *bias, void *aux,
                              int *path) {
    *path = PATH_REFUSED; /* what every CG_E_UNSUPPORTED below means */
    if (dt != CG_F32 && dt != CG_F64)
        return CG_FAIL(CG_E_DTYPE, "matmul: dtype %s not supported on cuda; use f32 or f64", cg_dtype_name(dt));
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return CG_FAIL(CG_E_SHAPE, "matmul: dims above 2^31 are not supported (M %lld, N %lld, K %lld)",
                       (long long)M, (long long)N, (long long)K);
    if (epi != CG_EPI_NONE && (dt != CG_F32 || !bias))
        return CG_FAIL(CG_E_INVALID, "matmul epilogue: needs f32 and a bias vector");
    /* Cases left to the caller's unfused path: an unaligned bias / aux (a view; Lt's
     * heuristic would look for a kernel that takes it, but the common, well-trodden case is
     * 16 bytes), a GELU aux whose ld (= N, dense, read back by our backward) is not a
     * multiple of 8 as Lt requires, and a bias gradient that an empty product would leave
     * unwritten. */
    if (epi != CG_EPI_NONE && (((uintptr_t)bias & 15) || ((uintptr_t)aux & 15)))
        return CG_FAIL(CG_E_UNSUPPORTED, "matmul epilogue: bias/aux pointer not 16-byte aligned");
    if (epi == CG_EPI_GELU_BIAS && aux && N % 8)
        return CG_FAIL(CG_E_UNSUPPORTED, "matmul epilogue: GELU aux ld %lld is not a multiple of 8", (long long)N);
    if (epi == CG_EPI_BGRAD && M > 0 && (N == 0 || K == 0))
        return CG_FAIL(CG_E_UNSUPPORTED, "matmul epilogue: bias gradient of an empty product");
    *path = PATH_EMPTY;
    if (M == 0 || N == 0) return CG_OK;
    if (K == 0) { /* empty sums: zeros (the epilogue would add the bias; not offered for K = 0) */
        if (epi != CG_EPI_NONE) return CG_FAIL(CG_E_SHAPE, "matmul epilogue: K = 0 is not supported");
        return CG_CUDA_CALL(cudaMemsetAsync(C, 0, (size_t)(M * N) * cg_dtype_size(dt), ctx->stream));
    }
    int prec = dt == CG_F64 ? 0 : (int)cg_cuda_get_matmul_precision();
    algo_key key;
    memset(&key, 0, sizeof key);
    key.dev = ctx->dev;
    key.M = M;
    key.N = N;
    key.K = K;
    key.ta = ta;
    key.tb = tb;
    key.dt = (int)dt;
    key.prec = prec;
    key.epi = (int)epi;
    key.align_a = ptr_align(A);
    key.align_b = ptr_align(B);
    key.align_c = ptr_align(C);
    key.align_bias = epi != CG_EPI_NONE ? ptr_align(bias) : 0;
    key.align_aux = aux ? ptr_align(aux) : 0;
    algo_entry e;
    int cached = cache_find(&key, &e);
    *path = epi != CG_EPI_NONE ? PATH_REFUSED : PATH_BLAS;
    if (cached && e.refused) {
        if (epi != CG_EPI_NONE) return CG_FAIL(CG_E_UNSUPPORTED, "matmul epilogue: cuBLASLt has no algorithm for this case");
        return blas_fallback(ctx, dt, prec, ta, tb, M, N, K, A, B, C);
    }
    lt_call l = {0};
    cg_status st = lt_build(&l, dt, prec, ta, tb, M, N, K, epi, bias, aux);
    if (st == CG_OK && !cached) {
        memset(&e, 0, sizeof e);
        e.key = key;
        cublasLtMatmulPreference_t pref = NULL;
        cublasLtMatmulHeuristicResult_t res;
        int nres = 0;
        memset(&res, 0, sizeof res);
        cublasStatus_t hs = cublasLtMatmulPreferenceCreate(&pref);
        if (hs == CUBLAS_STATUS_SUCCESS)
            hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ctx->lt_ws_bytes,
                                                      sizeof ctx->lt_ws_bytes);
        /* Lt's A is our B, Lt's B our A; C and D are the same buffer */
        if (hs == CUBLAS_STATUS_SUCCESS)
            hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align_b,
                                                      sizeof key.align_b);
        if (hs == CUBLAS_STATUS_SUCCESS)
            hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align_a,
                                                      sizeof key.align_a);
        if (hs == CUBLAS_STATUS_SUCCESS)
            hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_c,
                                                      sizeof key.align_c);
        if (hs == CUBLAS_STATUS_SUCCESS)
            hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_c,
                                                      sizeof key.align_c);
        if (hs == CUBLAS_STATUS_SUCCESS)
            hs = cublasLtMatmulAlgoGetHeuristic(ctx->lt, l.op, l.a, l.b, l.c, l.c, pref, 1, &res, &nres);
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        if (hs != CUBLAS_STATUS_SUCCESS && hs != CUBLAS_STATUS_NOT_SUPPORTED) count_heuristic_error(hs);
        if (hs != CUBLAS_STATUS_SUCCESS || nres < 1) {
            e.refused = 1;
        } else {
            e.algo = res.algo;
        }
        cache_put(&e);
    }
    if (st == CG_OK && e.refused) {
        lt_free(&l);
        if (epi != CG_EPI_NONE) return CG_FAIL(CG_E_UNSUPPORTED, "matmul epilogue: cuBLASLt has no algorithm for this case");
        return blas_fallback(ctx, dt, prec, ta, tb, M, N, K, A, B, C);
    }
    if (st == CG_OK) {
        const float onef = 1.0f, zerof = 0.0f;
        const double oned = 1.0, zerod = 0.0;
        const void *alpha = dt == CG_F64 ? (const void *)&oned : (const void *)&onef;
        const void *beta = dt == CG_F64 ? (const void *)&zerod : (const void *)&zerof;
        cublasStatus_t ms = cublasLtMatmul(ctx->lt, l.op, alpha, B, l.a, A, l.b, beta, C, l.c, C, l.c, &e.algo,
                                           ctx->lt_ws, ctx->lt_ws_bytes, ctx->stream);
        if (ms == CUBLAS_STATUS_NOT_SUPPORTED) { /* the heuristic's pick refused at run time: not again */
            cache_refuse(&e);
            lt_free(&l);
            if (epi != CG_EPI_NONE)
                return CG_FAIL(CG_E_UNSUPPORTED, "matmul epilogue: cuBLASLt refused the algorithm for this case");
            return blas_fallback(ctx, dt, prec, ta, tb, M, N, K, A, B, C);
        }
        st = cg__cublas_status(ms, "cublasLtMatmul", __FILE__, __LINE__);
        *path = PATH_LT;
    }
    lt_free(&l);
    return st;
}

cg_status cg_cuda_gemm_ex(cg_cuda_ctx *ctx, cg_dtype dt, int ta, int tb, int64_t M, int64_t N, int64_t K,
                          const void *A, const void *B, void *C, cg_cuda_epilogue epi, const void *bias, void *aux) {
    int path = PATH_EMPTY;
    cg_status st = gemm_ex_impl(ctx, dt, ta, tb, M, N, K, A, B, C, epi, bias, aux, &path);
    if (st == CG_OK || st == CG_E_UNSUPPORTED) count_path((int)epi, path);
    return st;
}

cg_status cg_cuda_gemm(cg_cuda_ctx *ctx, cg_dtype dt, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A,
                       const void *B, void *C) {
    return cg_cuda_gemm_ex(ctx, dt, ta, tb, M, N, K, A, B, C, CG_EPI_NONE, NULL, NULL);
}
