/* cuBLAS and cuBLASLt, emulated on the host with OpenBLAS (tests/cuda_emu/README.md).
 *
 * cuBLAS: Sgemm, Dgemm, GemmEx (f32 storage; the TF32 and BF16 compute types round both
 * operands to 10 or 7 mantissa bits, to nearest even, before an fp32 product).
 * cuBLASLt: matmul descriptors, layouts, preferences, the heuristic and the matmul, with the
 * epilogues as the cuBLASLt documentation defines them for a column-major D (m x n):
 *   BIAS        D[i, j] += bias[i]                     (bias has m entries)
 *   RELU_BIAS   max(D + bias, 0), NaN to 0 (fmaxf)
 *   GELU_BIAS   gelu_tanh(D + bias); GELU_AUX_BIAS also stores D + bias to aux (ld aux_ld)
 *   BGRADA      bias[i] = sum over k of op(A)[i, k]    (m entries)
 *   BGRADB      bias[j] = sum over k of op(B)[k, j]    (n entries)
 * The heuristic answers NOT_SUPPORTED for what it does not emulate (the ReLU bit-mask aux,
 * dReLU/dGELU, other types) and for what the documentation forbids (an aux ld that is not a
 * multiple of 8, a layout that does not fit the operation); the matmul checks the shapes
 * again. CGEMU_LT_REFUSE=1 makes the heuristic refuse everything, =half about half the
 * problems (the fallback paths; refused_by_setting). */
#include <cblas.h>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "emu_internal.h"

namespace {

struct handle_obj {
    int magic;
    cudaStream_t stream = 0;
};

struct layout_obj {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
};

struct desc_obj {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = nullptr;
    void *aux = nullptr;
    int64_t aux_ld = 0;
};

struct pref_obj {
    uint64_t workspace = 0;
    uint32_t align[4] = {256, 256, 256, 256};
};

const uint64_t ALGO_MARK = 0xc0ffee5eedULL;

float round_mantissa(float v, int keep) { /* to nearest even, keeping `keep` of float's 23 bits */
    if (!isfinite(v) || keep >= 23) return v;
    uint32_t u;
    memcpy(&u, &v, 4);
    int drop = 23 - keep;
    uint32_t half = 1u << (drop - 1), lsb = (u >> drop) & 1u;
    u = (u + half - 1 + lsb) & ~((1u << drop) - 1);
    memcpy(&v, &u, 4);
    return v;
}

int kept_bits(cublasComputeType_t c) {
    return c == CUBLAS_COMPUTE_32F_FAST_TF32 ? 10 : c == CUBLAS_COMPUTE_32F_FAST_16BF ? 7 : 23;
}

/* a column-major rows x cols matrix with leading dimension ld, copied and rounded */
std::vector<float> rounded(const float *p, int64_t rows, int64_t cols, int64_t ld, int keep) {
    std::vector<float> out((size_t)(ld * (cols - 1) + rows));
    for (int64_t j = 0; j < cols; j++)
        for (int64_t i = 0; i < rows; i++) out[(size_t)(i + j * ld)] = round_mantissa(p[i + j * ld], keep);
    return out;
}

CBLAS_TRANSPOSE tr(cublasOperation_t o) { return o == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

bool valid_op(cublasOperation_t o) { return o == CUBLAS_OP_N || o == CUBLAS_OP_T; }

/* cuBLAS's argument checks: sizes non-negative, leading dimensions large enough */
bool gemm_args_ok(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb, int ldc) {
    if (!valid_op(ta) || !valid_op(tb) || m < 0 || n < 0 || k < 0) return false;
    int ra = ta == CUBLAS_OP_N ? m : k, rb = tb == CUBLAS_OP_N ? k : n;
    return lda >= (ra > 1 ? ra : 1) && ldb >= (rb > 1 ? rb : 1) && ldc >= (m > 1 ? m : 1);
}

bool dev(const void *p, size_t bytes) { return bytes == 0 || cgemu::is_device_range(p, bytes); }

/* bytes an operand spans: ld * (cols - 1) + rows elements */
size_t span(int64_t rows, int64_t cols, int64_t ld, size_t es) {
    return rows == 0 || cols == 0 ? 0 : (size_t)(ld * (cols - 1) + rows) * es;
}

float gelu_tanh(float x) {
    const float c = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

} // namespace

extern "C" {

/* ---------------------------------------------------------------- cuBLAS */

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    cgemu::touch_context(); /* a library handle needs the device's context */
    *h = (cublasHandle_t) new handle_obj{1};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    delete (handle_obj *)h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    ((handle_obj *)h)->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void *ws, size_t bytes) {
    return dev(ws, bytes) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
const char *cublasGetStatusName(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    default: return "CUBLAS_STATUS_INTERNAL_ERROR";
    }
}
const char *cublasGetStatusString(cublasStatus_t s) { return cublasGetStatusName(s); }

cublasStatus_t cublasSgemm_v2(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                              float *C, int ldc) {
    if (!gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    float al = *alpha, be = *beta; /* host pointer mode: read at the call */
    cgemu::enqueue(((handle_obj *)h)->stream, [=] {
        cblas_sgemm(CblasColMajor, tr(ta), tr(tb), m, n, k, al, A, lda, B, ldb, be, C, ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDgemm_v2(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const double *alpha, const double *A, int lda, const double *B, int ldb,
                              const double *beta, double *C, int ldc) {
    if (!gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    double al = *alpha, be = *beta;
    cgemu::enqueue(((handle_obj *)h)->stream, [=] {
        cblas_dgemm(CblasColMajor, tr(ta), tr(tb), m, n, k, al, A, lda, B, ldb, be, C, ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t) {
    if (Atype != CUDA_R_32F || Btype != CUDA_R_32F || Ctype != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32 &&
        compute != CUBLAS_COMPUTE_32F_FAST_16BF)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    float al = *(const float *)alpha, be = *(const float *)beta;
    int keep = kept_bits(compute);
    cgemu::enqueue(((handle_obj *)h)->stream, [=] {
        if (k == 0) {
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) ((float *)C)[i + (int64_t)j * ldc] *= be;
            return;
        }
        int ra = ta == CUBLAS_OP_N ? m : k, ca = ta == CUBLAS_OP_N ? k : m;
        int rb = tb == CUBLAS_OP_N ? k : n, cb = tb == CUBLAS_OP_N ? n : k;
        std::vector<float> a = rounded((const float *)A, ra, ca, lda, keep);
        std::vector<float> b = rounded((const float *)B, rb, cb, ldb, keep);
        cblas_sgemm(CblasColMajor, tr(ta), tr(tb), m, n, k, al, a.data(), lda, b.data(), ldb, be, (float *)C, ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}

/* ---------------------------------------------------------------- cuBLASLt */

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    cgemu::touch_context(); /* a library handle needs the device's context */
    *h = (cublasLtHandle_t) new handle_obj{2};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete (handle_obj *)h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    if (ld < (int64_t)(rows > 1 ? rows : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    *l = (cublasLtMatrixLayout_t) new layout_obj{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete (layout_obj *)l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
    desc_obj *o = new desc_obj;
    o->compute = compute;
    o->scale = scale;
    *d = (cublasLtMatmulDesc_t)o;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete (desc_obj *)d;
    return CUBLAS_STATUS_SUCCESS;
}

#define SET_FIELD(field)                                                                                       \
    do {                                                                                                       \
        if (size != sizeof o->field) return CUBLAS_STATUS_INVALID_VALUE;                                       \
        memcpy(&o->field, buf, size);                                                                          \
        return CUBLAS_STATUS_SUCCESS;                                                                          \
    } while (0)

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size) {
    desc_obj *o = (desc_obj *)d;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: SET_FIELD(ta);
    case CUBLASLT_MATMUL_DESC_TRANSB: SET_FIELD(tb);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: SET_FIELD(epi);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: SET_FIELD(bias);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: SET_FIELD(aux);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: SET_FIELD(aux_ld);
    default: return CUBLAS_STATUS_NOT_SUPPORTED; /* an attribute the emulator does not model */
    }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = (cublasLtMatmulPreference_t) new pref_obj;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete (pref_obj *)p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size) {
    pref_obj *o = (pref_obj *)p;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: SET_FIELD(workspace);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: SET_FIELD(align[0]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: SET_FIELD(align[1]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: SET_FIELD(align[2]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: SET_FIELD(align[3]);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

namespace {

struct problem {
    int64_t m, n, k;
    size_t es;
};

/* the shapes of D = op(A) op(B) (+ C) from the layouts; false when they do not fit */
bool shapes(const desc_obj *d, const layout_obj *a, const layout_obj *b, const layout_obj *c, const layout_obj *dd,
            problem *p) {
    if (!valid_op(d->ta) || !valid_op(d->tb)) return false;
    int64_t am = d->ta == CUBLAS_OP_N ? a->rows : a->cols, ak = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    int64_t bk = d->tb == CUBLAS_OP_N ? b->rows : b->cols, bn = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (ak != bk || (int64_t)c->rows != am || (int64_t)c->cols != bn || dd->rows != c->rows || dd->cols != c->cols)
        return false;
    if (a->type != b->type || a->type != c->type || c->type != dd->type) return false;
    p->m = am, p->n = bn, p->k = ak;
    p->es = a->type == CUDA_R_64F ? 8 : 4;
    return true;
}

bool supported(const desc_obj *d, const layout_obj *a, const layout_obj *c, const problem &p) {
    if (a->type == CUDA_R_32F) {
        if (d->compute != CUBLAS_COMPUTE_32F && d->compute != CUBLAS_COMPUTE_32F_FAST_TF32 &&
            d->compute != CUBLAS_COMPUTE_32F_FAST_16BF)
            return false;
        if (d->scale != CUDA_R_32F) return false;
    } else if (a->type == CUDA_R_64F) {
        if (d->compute != CUBLAS_COMPUTE_64F || d->scale != CUDA_R_64F || d->epi != CUBLASLT_EPILOGUE_DEFAULT)
            return false;
    } else {
        return false;
    }
    switch (d->epi) {
    case CUBLASLT_EPILOGUE_DEFAULT: return true;
    case CUBLASLT_EPILOGUE_BIAS:
    case CUBLASLT_EPILOGUE_RELU_BIAS:
    case CUBLASLT_EPILOGUE_GELU_BIAS:
    case CUBLASLT_EPILOGUE_BGRADA:
    case CUBLASLT_EPILOGUE_BGRADB: return d->bias != nullptr;
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
        /* cublasLt.h: the aux leading dimension must be divisible by 8 and at least the rows */
        return d->bias && d->aux && d->aux_ld % 8 == 0 && d->aux_ld >= (int64_t)c->rows && p.m > 0;
    default: return false; /* the ReLU bit mask, dReLU/dGELU: not emulated */
    }
}

/* CGEMU_LT_REFUSE=1: every query refused; =half: about half the problems, picked by a
   hash of (m, n, k, epilogue), so one run takes both the Lt and the fallback paths */
bool refused_by_setting(const problem &p, cublasLtEpilogue_t epi) {
    const char *e = getenv("CGEMU_LT_REFUSE");
    if (!e) return false;
    if (!strcmp(e, "1")) return true;
    if (strcmp(e, "half")) return false;
    uint64_t h = (uint64_t)p.m * 0x9e3779b97f4a7c15ULL ^ (uint64_t)p.n * 0xc2b2ae3d27d4eb4fULL ^
                 (uint64_t)p.k * 0x165667b19e3779f9ULL ^ (uint64_t)epi;
    return ((h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ULL) >> 63;
}

/* D = alpha op(A) op(B) + beta C and the epilogue, when the stream's work runs */
void lt_run(const desc_obj &d, const problem &p, double alpha, const void *A, const layout_obj &la, const void *B,
            const layout_obj &lb, double beta, const void *C, const layout_obj &lc, void *D, const layout_obj &ld) {
    int64_t m = p.m, n = p.n, k = p.k;
    if (m == 0 || n == 0) return;
    if (C != D) /* D = alpha op(A) op(B) + beta C */
        for (int64_t j = 0; j < n; j++) memmove((char *)D + j * ld.ld * p.es, (const char *)C + j * lc.ld * p.es, m * p.es);
    if (p.es == 8) {
        cblas_dgemm(CblasColMajor, tr(d.ta), tr(d.tb), (int)m, (int)n, (int)k, alpha,
                    (const double *)A, (int)la.ld, (const double *)B, (int)lb.ld, beta, (double *)D,
                    (int)ld.ld);
        return;
    }
    int keep = kept_bits(d.compute);
    float *out = (float *)D;
    int64_t ldd = ld.ld;
    const float *bias = (const float *)d.bias;
    if (d.epi == CUBLASLT_EPILOGUE_BGRADA || d.epi == CUBLASLT_EPILOGUE_BGRADB) {
        bool is_a = d.epi == CUBLASLT_EPILOGUE_BGRADA;
        int64_t len = is_a ? m : n;
        /* the reduced operand, unrounded as stored: op(A) is m x k, op(B) is k x n */
        const float *src = is_a ? (const float *)A : (const float *)B;
        int64_t lds = is_a ? la.ld : lb.ld;
        bool trans = is_a ? d.ta == CUBLAS_OP_T : d.tb == CUBLAS_OP_T;
        for (int64_t v = 0; v < len; v++) {
            double s = 0;
            for (int64_t q = 0; q < k; q++) {
                /* op(A)[v, q] or op(B)[q, v] */
                int64_t r = is_a ? (trans ? q : v) : (trans ? v : q), c = is_a ? (trans ? v : q) : (trans ? q : v);
                s += src[r + c * lds];
            }
            ((float *)d.bias)[v] = (float)s;
        }
    }
    if (k > 0) {
        std::vector<float> a = rounded((const float *)A, la.rows, la.cols, la.ld, keep);
        std::vector<float> b = rounded((const float *)B, lb.rows, lb.cols, lb.ld, keep);
        cblas_sgemm(CblasColMajor, tr(d.ta), tr(d.tb), (int)m, (int)n, (int)k, (float)alpha, a.data(),
                    (int)la.ld, b.data(), (int)lb.ld, (float)beta, out, (int)ldd);
    } else
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) out[i + j * ldd] *= (float)beta;
    if (d.epi == CUBLASLT_EPILOGUE_BIAS || d.epi == CUBLASLT_EPILOGUE_RELU_BIAS ||
        d.epi == CUBLASLT_EPILOGUE_GELU_BIAS || d.epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
        float *aux = (float *)d.aux;
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) {
                float z = out[i + j * ldd] + bias[i];
                if (d.epi == CUBLASLT_EPILOGUE_RELU_BIAS) z = fmaxf(z, 0.0f);
                if (d.epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) aux[i + j * d.aux_ld] = z;
                if (d.epi == CUBLASLT_EPILOGUE_GELU_BIAS || d.epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) z = gelu_tanh(z);
                out[i + j * ldd] = z;
            }
    }
}

} // namespace

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t A,
                                              cublasLtMatrixLayout_t B, cublasLtMatrixLayout_t C,
                                              cublasLtMatrixLayout_t D, cublasLtMatmulPreference_t pref,
                                              int requested, cublasLtMatmulHeuristicResult_t *res, int *count) {
    desc_obj *d = (desc_obj *)desc;
    *count = 0;
    if (requested < 1 || !pref) return CUBLAS_STATUS_INVALID_VALUE;
    problem p;
    if (!shapes(d, (layout_obj *)A, (layout_obj *)B, (layout_obj *)C, (layout_obj *)D, &p))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (refused_by_setting(p, d->epi) || !supported(d, (layout_obj *)A, (layout_obj *)C, p))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    memset(res, 0, sizeof *res);
    res->algo.data[0] = ALGO_MARK;
    res->state = CUBLAS_STATUS_SUCCESS;
    res->wavesCount = 1.0f;
    *count = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t Adesc, const void *B, cublasLtMatrixLayout_t Bdesc,
                              const void *beta, const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo, void *ws,
                              size_t ws_bytes, cudaStream_t stream) {
    if (cgemu::sticky()) return CUBLAS_STATUS_EXECUTION_FAILED;
    desc_obj *d = (desc_obj *)desc;
    layout_obj *la = (layout_obj *)Adesc, *lb = (layout_obj *)Bdesc, *lc = (layout_obj *)Cdesc, *ld = (layout_obj *)Ddesc;
    problem p;
    if (!algo || algo->data[0] != ALGO_MARK) return CUBLAS_STATUS_INVALID_VALUE;
    if (!shapes(d, la, lb, lc, ld, &p) || !supported(d, la, lc, p)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!dev(A, span(la->rows, la->cols, la->ld, p.es)) || !dev(B, span(lb->rows, lb->cols, lb->ld, p.es)) ||
        !dev(C, span(lc->rows, lc->cols, lc->ld, p.es)) || !dev(D, span(ld->rows, ld->cols, ld->ld, p.es)) ||
        !dev(ws, ws_bytes)) {
        cgemu::record_launch_error(cudaErrorIllegalAddress, "cublasLtMatmul: an operand is not in device memory");
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    if (p.es == 4 && (d->epi == CUBLASLT_EPILOGUE_BGRADA || d->epi == CUBLASLT_EPILOGUE_BGRADB) &&
        !dev(d->bias, (d->epi == CUBLASLT_EPILOGUE_BGRADA ? p.m : p.n) * 4))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    if (p.es == 4 && d->epi != CUBLASLT_EPILOGUE_DEFAULT && d->epi != CUBLASLT_EPILOGUE_BGRADA &&
        d->epi != CUBLASLT_EPILOGUE_BGRADB &&
        (!dev(d->bias, p.m * 4) ||
         (d->epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS && !dev(d->aux, span(p.m, p.n, d->aux_ld, 4)))))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    /* the descriptors as they are now, the scalars read now (host pointer mode) */
    desc_obj dc = *d;
    layout_obj a = *la, b = *lb, c = *lc, o = *ld;
    double al = p.es == 8 ? *(const double *)alpha : *(const float *)alpha;
    double be = p.es == 8 ? *(const double *)beta : *(const float *)beta;
    cgemu::enqueue(stream, [=] { lt_run(dc, p, al, A, a, B, b, be, C, c, D, o); });
    return CUBLAS_STATUS_SUCCESS;
}

} // extern "C"
