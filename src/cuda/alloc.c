/* The caching device allocator and host<->device transfers through pinned staging buffers.
 *
 * Size classes: up to 1 MiB, multiples of 512 bytes; above, four classes per power of two
 * (waste <= 25%). A freed block goes to its class's free list and is handed out again for
 * the next request of that class. All cgrad work on a device is queued on its context's
 * single stream, so reusing a block right after its free is ordered after every kernel
 * that used it (the PyTorch caching-allocator argument, restricted to one stream). The
 * loader's prefetch uploads (upload.c) are the one writer on another stream; they are
 * ordered both ways by events (see there).
 * On cudaMalloc failure the cache is returned to the driver and the call retried once;
 * a second failure is CG_E_OOM with the size asked for and cudaMemGetInfo's numbers.
 * With caching off (cg_cuda_set_caching, CG_CUDA_NO_CACHING=1) a block is exactly the
 * request and goes back to the driver at its free, after the stream has drained: a debug
 * mode in which sanitizers see every overrun past a tensor's end.
 *
 * CUDA graphs (graph.c): while a thread captures, its allocations on the device are the
 * graph's (blk.owner), and so is every block it frees then: a replay writes them again, so
 * none may go back to the shared cache while the graph lives. A freed graph block waits in
 * the graph's own free list and serves later allocations of the same capture (reuse in
 * stream order, as within one stream). When the graph is freed, its free blocks join the
 * cache (its replays ran on the device's stream, before any later use) and its live ones
 * become ordinary blocks. cudaMalloc in a capture runs in relaxed capture mode (it is not
 * stream work); there is no out-of-memory retry then (it would wait for the stream).
 *
 * Transfers: host buffers are pageable user memory, so copies go through a ring of four
 * pinned 4 MiB staging buffers per device, each guarded by an event, taken in turn across
 * calls. H2D returns once the data sits in pinned memory: the host waits only when the
 * buffer it takes is still read by the copy issued four chunks earlier. D2H waits for its
 * data (it must). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define SMALL_LIMIT ((size_t)1 << 20)
#define SMALL_STEP ((size_t)512)
#define N_SMALL (SMALL_LIMIT / SMALL_STEP + 1)
#define N_LARGE (4 * 44) /* 2^20 .. 2^64 */
#define N_BINS (N_SMALL + N_LARGE)
#define N_BUCKETS 4096
#define STAGE_BYTES ((size_t)4 << 20)
#define N_STAGE 4

typedef struct blk {
    void *ptr;
    size_t size, req;
    int exact;              /* allocated with caching off: not class-sized, never cached */
    cg_cuda_gpool *owner;   /* the CUDA graph it belongs to, or NULL */
    struct blk *next;
} blk;

struct cg_cuda_gpool {
    int dev;
    blk *free; /* the graph's freed blocks, for its own later allocations */
};

typedef struct pool {
    pthread_mutex_t lock;
    blk *bins[N_BINS];      /* free blocks by class */
    blk *live[N_BUCKETS];   /* live blocks by pointer hash */
    cg_cuda_mem_stats st;
    int no_cache;           /* caching off: blocks come from and go back to the driver */
    /* staging */
    pthread_mutex_t stage_lock;
    void *stage[N_STAGE];
    cudaEvent_t stage_ev[N_STAGE]; /* the last copy from/to each buffer (never recorded: no wait) */
    int stage_next;                /* the buffer the next chunk takes */
    int stage_ok;                  /* 1 ready, -1 unavailable (pinned alloc failed): direct copies */
} pool;

static pthread_mutex_t g_pools_lock = PTHREAD_MUTEX_INITIALIZER;
static pool *g_pools[64];

static pool *pool_of(int dev) {
    if (dev < 0 || dev >= 64) return NULL;
    pthread_mutex_lock(&g_pools_lock);
    pool *p = g_pools[dev];
    if (!p) {
        p = calloc(1, sizeof *p);
        if (p) {
            pthread_mutex_init(&p->lock, NULL);
            pthread_mutex_init(&p->stage_lock, NULL);
            const char *env = getenv("CG_CUDA_NO_CACHING");
            p->no_cache = env && *env && strcmp(env, "0") != 0;
            g_pools[dev] = p;
        }
    }
    pthread_mutex_unlock(&g_pools_lock);
    return p;
}

/* class index and rounded size */
static size_t size_class(size_t n, size_t *rounded) {
    if (n <= SMALL_LIMIT) {
        size_t k = (n + SMALL_STEP - 1) / SMALL_STEP;
        if (k == 0) k = 1;
        *rounded = k * SMALL_STEP;
        return k;
    }
    int e = 63 - __builtin_clzll((unsigned long long)n); /* 2^e <= n < 2^(e+1), e >= 20 */
    size_t step = (size_t)1 << (e - 2);
    size_t r = (n + step - 1) / step * step; /* may reach 2^(e+1): then it is class 0 of e+1 */
    if (r == ((size_t)1 << (e + 1))) {
        *rounded = r;
        return N_SMALL + (size_t)(e + 1 - 20) * 4;
    }
    *rounded = r;
    return N_SMALL + (size_t)(e - 20) * 4 + (r >> (e - 2)) - 4;
}

static size_t hash_ptr(const void *p) { return (size_t)(((uintptr_t)p >> 9) * 0x9E3779B97F4A7C15ull >> 52) % N_BUCKETS; }

/* Takes every cached block out of the free lists (they can no longer be handed out) and
 * returns them as one list; the caller frees them with free_blocks once the compute stream
 * has finished the kernels queued before they were freed. */
static blk *detach_cache_locked(pool *p) {
    blk *all = NULL;
    for (size_t b = 0; b < N_BINS; b++) {
        blk *k = p->bins[b];
        while (k) {
            blk *nx = k->next;
            p->st.cached -= k->size;
            p->st.reserved -= k->size;
            p->st.n_cuda_free++;
            k->next = all;
            all = k;
            k = nx;
        }
        p->bins[b] = NULL;
    }
    return all;
}

/* Puts detached blocks back into the free lists (the stream wait failed: they may still be
 * read by a kernel, so they are kept rather than freed). */
static void reattach_locked(pool *p, blk *k) {
    while (k) {
        blk *nx = k->next;
        size_t bin = size_class(k->size, &(size_t){0});
        k->next = p->bins[bin];
        p->bins[bin] = k;
        p->st.cached += k->size;
        p->st.reserved += k->size;
        p->st.n_cuda_free--;
        k = nx;
    }
}

static void free_blocks(blk *k) {
    while (k) {
        blk *nx = k->next;
        if (cudaFree(k->ptr) != cudaSuccess) (void)cudaGetLastError(); /* not left for the next launch */
        free(k);
        k = nx;
    }
}

cg_status cg_cuda_malloc(int dev, size_t nbytes, void **ptr) {
    *ptr = NULL;
    if (nbytes == 0) return CG_OK; /* free(NULL) is accepted */
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    pool *p = pool_of(dev);
    if (!p) return CG_FAIL(CG_E_OOM, "cuda:%d: out of host memory for the allocator", dev);
    size_t rounded;
    size_t bin = size_class(nbytes, &rounded);
    if (bin >= N_BINS) return CG_FAIL(CG_E_OOM, "cuda:%d: allocation of %zu bytes is too large", dev, nbytes);
    cg_cuda_gpool *gp = cg_cuda_capture_pool(dev);
    pthread_mutex_lock(&p->lock);
    int exact = p->no_cache;
    if (exact) rounded = nbytes;
    blk *k = NULL;
    if (gp) { /* the capture's own freed blocks first */
        for (blk **pp = &gp->free; *pp; pp = &(*pp)->next)
            if ((*pp)->size == rounded) {
                k = *pp;
                *pp = k->next;
                break;
            }
    }
    if (!k && !exact && p->bins[bin]) {
        k = p->bins[bin];
        p->bins[bin] = k->next;
    }
    if (k) {
        p->st.cached -= k->size;
        p->st.n_cache_hit++;
    } else {
        k = malloc(sizeof *k);
        if (!k) {
            pthread_mutex_unlock(&p->lock);
            return CG_FAIL(CG_E_OOM, "cuda:%d: out of host memory for an allocator record", dev);
        }
        k->size = rounded;
        k->exact = exact;
        k->owner = NULL;
        cudaError_t e;
        if (gp) { /* not stream work: allowed in a capture in relaxed mode (PyTorch does the same) */
            enum cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
            (void)cudaThreadExchangeStreamCaptureMode(&mode);
            e = cudaMalloc(&k->ptr, rounded);
            (void)cudaThreadExchangeStreamCaptureMode(&mode);
        } else {
            e = cudaMalloc(&k->ptr, rounded);
        }
        if (e == cudaErrorMemoryAllocation && !gp) {
            (void)cudaGetLastError();
            p->st.n_oom_retry++;
            /* the cached blocks may still be read by queued kernels: wait for the stream (all
             * cgrad kernels of this device run on it), then give them back, then retry */
            blk *cached = detach_cache_locked(p);
            cudaError_t se = cudaStreamSynchronize(ctx->stream);
            if (se == cudaSuccess) {
                free_blocks(cached);
                e = cudaMalloc(&k->ptr, rounded);
            } else { /* the device failed: keep the blocks, and report that failure, not OOM */
                (void)cudaGetLastError();
                reattach_locked(p, cached);
                e = se;
            }
        }
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            size_t fr = 0, tot = 0;
            if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) (void)cudaGetLastError();
            size_t in_use = p->st.in_use;
            pthread_mutex_unlock(&p->lock);
            free(k);
            if (e == cudaErrorMemoryAllocation)
                return CG_FAIL(CG_E_OOM, "cuda:%d: out of device memory allocating %zu bytes (%zu rounded): %zu of %zu "
                                         "bytes free, %zu in use by cgrad tensors; free tensors or use smaller "
                                         "batches", dev, nbytes, rounded, fr, tot, in_use);
            return CG_CUDA_CALL(e);
        }
        p->st.n_cuda_malloc++;
        p->st.reserved += rounded;
    }
    k->req = nbytes;
    if (gp) k->owner = gp;
    size_t h = hash_ptr(k->ptr);
    k->next = p->live[h];
    p->live[h] = k;
    p->st.in_use += k->size;
    p->st.requested += nbytes;
    p->st.n_alloc++;
    if (p->st.in_use > p->st.peak_in_use) p->st.peak_in_use = p->st.in_use;
    *ptr = k->ptr;
    pthread_mutex_unlock(&p->lock);
    return CG_OK;
}

/* Caching off: the blocks (a list) go back to the driver once the stream has run every
 * kernel queued before their free (not left to cudaFree's implicit synchronisation). When the
 * wait fails the device is broken; they are kept (leaked) rather than freed under a kernel. */
static void release_now(int dev, blk *k) {
    char saved_err[1024]; /* a free reports nothing: the caller's last message stays */
    snprintf(saved_err, sizeof saved_err, "%s", cg_last_error());
    cg_cuda_ctx *ctx = NULL;
    if (cg_cuda_ctx_get(dev, &ctx) == CG_OK && cudaStreamSynchronize(ctx->stream) == cudaSuccess) {
        free_blocks(k);
        return;
    }
    (void)cudaGetLastError();
    cg__restore_error(saved_err);
    while (k) { /* the device memory is kept; the records go */
        blk *nx = k->next;
        free(k);
        k = nx;
    }
}

void cg_cuda_free(int dev, void *ptr) {
    if (!ptr) return;
    pool *p = pool_of(dev);
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    size_t h = hash_ptr(ptr);
    blk **pp = &p->live[h];
    while (*pp && (*pp)->ptr != ptr) pp = &(*pp)->next;
    blk *k = *pp;
    if (!k) {
        pthread_mutex_unlock(&p->lock);
        return;
    }
    *pp = k->next;
    p->st.in_use -= k->size;
    p->st.requested -= k->req;
    cg_cuda_gpool *gp = k->owner ? k->owner : cg_cuda_capture_pool(dev);
    if (gp) { /* a graph's block, or one freed while this thread captures: kept for the graph */
        k->owner = gp;
        k->next = gp->free;
        gp->free = k;
        p->st.cached += k->size;
        pthread_mutex_unlock(&p->lock);
        return;
    }
    if (k->exact || p->no_cache) {
        p->st.reserved -= k->size;
        p->st.n_cuda_free++;
        pthread_mutex_unlock(&p->lock);
        k->next = NULL;
        release_now(dev, k);
        return;
    }
    size_t bin = size_class(k->size, &(size_t){0});
    k->next = p->bins[bin];
    p->bins[bin] = k;
    p->st.cached += k->size;
    pthread_mutex_unlock(&p->lock);
}

cg_status cg_cuda_scratch(int dev, size_t nbytes, void **ptr) { return cg_cuda_malloc(dev, nbytes, ptr); }

cg_status cg_cuda_gpool_create(int dev, cg_cuda_gpool **out) {
    *out = NULL;
    if (!pool_of(dev)) return CG_FAIL(CG_E_OOM, "cuda:%d: out of host memory for the allocator", dev);
    cg_cuda_gpool *gp = calloc(1, sizeof *gp);
    if (!gp) return CG_FAIL(CG_E_OOM, "cuda:%d: out of host memory for a CUDA graph's memory pool", dev);
    gp->dev = dev;
    *out = gp;
    return CG_OK;
}

void cg_cuda_gpool_release(cg_cuda_gpool *gp) {
    if (!gp) return;
    pool *p = pool_of(gp->dev);
    if (!p) return; /* cannot happen: the pool was there at creation */
    blk *uncached = NULL;
    pthread_mutex_lock(&p->lock);
    for (size_t h = 0; h < N_BUCKETS; h++) /* live blocks: ordinary from now on */
        for (blk *k = p->live[h]; k; k = k->next)
            if (k->owner == gp) k->owner = NULL;
    while (gp->free) {
        blk *k = gp->free;
        gp->free = k->next;
        k->owner = NULL;
        if (k->exact || p->no_cache) { /* caching off: back to the driver, as at any free */
            p->st.cached -= k->size;
            p->st.reserved -= k->size;
            p->st.n_cuda_free++;
            k->next = uncached;
            uncached = k;
        } else {
            size_t bin = size_class(k->size, &(size_t){0});
            k->next = p->bins[bin];
            p->bins[bin] = k;
        }
    }
    pthread_mutex_unlock(&p->lock);
    if (uncached) release_now(gp->dev, uncached);
    free(gp);
}

static cg_status memory_stats(int dev, cg_cuda_mem_stats *out) {
    CG_ARG_NOT_NULL(out, "cg_cuda_memory_stats");
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    pool *p = pool_of(dev);
    if (!p) return CG_FAIL(CG_E_OOM, "cg_cuda_memory_stats: out of host memory");
    pthread_mutex_lock(&p->lock);
    *out = p->st;
    pthread_mutex_unlock(&p->lock);
    return CG_OK;
}
cg_status cg_cuda_memory_stats(int dev, cg_cuda_mem_stats *out) { CG_CUDA_RETURN_GUARDED(memory_stats(dev, out)); }

static cg_status reset_peak(int dev) {
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    pool *p = pool_of(dev);
    if (!p) return CG_FAIL(CG_E_OOM, "cg_cuda_reset_peak: out of host memory");
    pthread_mutex_lock(&p->lock);
    p->st.peak_in_use = p->st.in_use;
    pthread_mutex_unlock(&p->lock);
    return CG_OK;
}
cg_status cg_cuda_reset_peak(int dev) { CG_CUDA_RETURN_GUARDED(reset_peak(dev)); }

static cg_status empty_cache(int dev) {
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    pool *p = pool_of(dev);
    if (!p) return CG_FAIL(CG_E_OOM, "cg_cuda_empty_cache: out of host memory");
    /* a cached block may still be read by kernels queued before it was freed. Take the blocks
     * out of the lists first (no later kernel can get them), then wait for the compute stream
     * (the only one that reads them), then hand them to cudaFree, rather than rely on
     * cudaFree's implicit synchronisation. Blocks freed meanwhile stay cached. */
    pthread_mutex_lock(&p->lock);
    blk *cached = detach_cache_locked(p);
    pthread_mutex_unlock(&p->lock);
    cg_status st = CG_CUDA_CALL(cudaStreamSynchronize(ctx->stream));
    if (st != CG_OK) { /* the device failed: keep the blocks rather than free them under a kernel */
        pthread_mutex_lock(&p->lock);
        reattach_locked(p, cached);
        pthread_mutex_unlock(&p->lock);
        return st;
    }
    free_blocks(cached);
    return CG_OK;
}
cg_status cg_cuda_empty_cache(int dev) { CG_CUDA_RETURN_GUARDED(empty_cache(dev)); }

static cg_status set_caching(int dev, int enabled) {
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    pool *p = pool_of(dev);
    if (!p) return CG_FAIL(CG_E_OOM, "cg_cuda_set_caching: out of host memory");
    pthread_mutex_lock(&p->lock);
    p->no_cache = !enabled;
    pthread_mutex_unlock(&p->lock);
    return enabled ? CG_OK : cg_cuda_empty_cache(dev);
}
cg_status cg_cuda_set_caching(int dev, int enabled) { CG_CUDA_RETURN_GUARDED(set_caching(dev, enabled)); }

static cg_status get_caching(int dev, int *enabled) {
    CG_ARG_NOT_NULL(enabled, "cg_cuda_get_caching");
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    pool *p = pool_of(dev);
    if (!p) return CG_FAIL(CG_E_OOM, "cg_cuda_get_caching: out of host memory");
    pthread_mutex_lock(&p->lock);
    *enabled = !p->no_cache;
    pthread_mutex_unlock(&p->lock);
    return CG_OK;
}
cg_status cg_cuda_get_caching(int dev, int *enabled) { CG_CUDA_RETURN_GUARDED(get_caching(dev, enabled)); }

/* ---- transfers ---- */

static int stage_ready(pool *p) {
    if (p->stage_ok) return p->stage_ok > 0;
    p->stage_ok = -1;
    for (int i = 0; i < N_STAGE; i++) {
        if (cudaHostAlloc(&p->stage[i], STAGE_BYTES, cudaHostAllocDefault) != cudaSuccess) goto fail;
        /* an event never recorded: cudaEventSynchronize returns at once */
        if (cudaEventCreateWithFlags(&p->stage_ev[i], cudaEventDisableTiming) != cudaSuccess) goto fail;
    }
    p->stage_ok = 1;
    return 1;
fail: /* give back what was made; transfers then go unstaged */
    for (int i = 0; i < N_STAGE; i++) {
        if (p->stage[i]) cudaFreeHost(p->stage[i]);
        if (p->stage_ev[i]) cudaEventDestroy(p->stage_ev[i]);
        p->stage[i] = NULL;
        p->stage_ev[i] = NULL;
    }
    (void)cudaGetLastError();
    return 0;
}

/* The next staging buffer, once the copy last issued from or to it has finished. */
static cg_status stage_take(pool *p, int *b) {
    *b = p->stage_next;
    p->stage_next = (p->stage_next + 1) % N_STAGE;
    return CG_CUDA_CALL(cudaEventSynchronize(p->stage_ev[*b]));
}

/* Queues the copy of one chunk and records its buffer's event. If the event cannot be
 * recorded after the copy was queued, the event would cover an older point: wait for the
 * stream, so that no later chunk rewrites the buffer under the copy. */
static cg_status stage_copy(cg_cuda_ctx *ctx, pool *p, int b, void *dst, const void *src, size_t len,
                            enum cudaMemcpyKind kind) {
    CG_TRY(CG_CUDA_CALL(cudaMemcpyAsync(dst, src, len, kind, ctx->stream)));
    cg_status st = CG_CUDA_CALL(cudaEventRecord(p->stage_ev[b], ctx->stream));
    if (st != CG_OK) {
        (void)cudaStreamSynchronize(ctx->stream);
        (void)cudaGetLastError();
    }
    return st;
}

static cg_status copy_h2d(cg_cuda_ctx *ctx, pool *p, void *dst, const void *src, size_t nbytes) {
    for (size_t off = 0; off < nbytes; off += STAGE_BYTES) {
        size_t len = nbytes - off < STAGE_BYTES ? nbytes - off : STAGE_BYTES;
        int b;
        CG_TRY(stage_take(p, &b));
        memcpy(p->stage[b], (const char *)src + off, len);
        CG_TRY(stage_copy(ctx, p, b, (char *)dst + off, p->stage[b], len, cudaMemcpyHostToDevice));
    }
    return CG_OK;
}

/* The device writes a buffer only after the copies queued before on the same stream, H2D
 * reads of it included, so the buffers are taken without waiting for those. Each chunk is
 * drained while the next one is in flight. */
static cg_status copy_d2h(cg_cuda_ctx *ctx, pool *p, void *dst, const void *src, size_t nbytes) {
    size_t prev_off = 0, prev_len = 0;
    int prev_b = -1;
    for (size_t off = 0; off < nbytes; off += STAGE_BYTES) {
        size_t len = nbytes - off < STAGE_BYTES ? nbytes - off : STAGE_BYTES;
        int b = p->stage_next;
        p->stage_next = (p->stage_next + 1) % N_STAGE;
        CG_TRY(stage_copy(ctx, p, b, p->stage[b], (const char *)src + off, len, cudaMemcpyDeviceToHost));
        if (prev_b >= 0) {
            CG_TRY(CG_CUDA_CALL(cudaEventSynchronize(p->stage_ev[prev_b])));
            memcpy((char *)dst + prev_off, p->stage[prev_b], prev_len);
        }
        prev_b = b;
        prev_off = off;
        prev_len = len;
    }
    if (prev_b >= 0) {
        CG_TRY(CG_CUDA_CALL(cudaEventSynchronize(p->stage_ev[prev_b])));
        memcpy((char *)dst + prev_off, p->stage[prev_b], prev_len);
    }
    return CG_OK;
}

cg_status cg_cuda_memcpy(int dev, void *dst, const void *src, size_t nbytes, cg_copy_kind kind) {
    if (nbytes == 0) return CG_OK;
    cg_cuda_ctx *ctx = NULL;
    CG_TRY(cg_cuda_ctx_get(dev, &ctx));
    if (kind == CG_COPY_D2D)
        return CG_CUDA_CALL(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, ctx->stream));
    if (cg_cuda_capture_pool(dev)) /* a recorded copy would read a staging buffer reused since */
        return CG_FAIL(CG_E_UNSUPPORTED, "cuda:%d: a copy between host and device (%zu bytes) cannot be recorded in a "
                                         "CUDA graph", dev, nbytes);
    pool *p = pool_of(dev);
    if (!p) return CG_FAIL(CG_E_OOM, "cuda:%d: out of host memory for transfers", dev);
    cg_status st;
    pthread_mutex_lock(&p->stage_lock);
    if (!stage_ready(p)) { /* no pinned memory: plain copies, synchronous for the host buffer */
        enum cudaMemcpyKind k = kind == CG_COPY_H2D ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
        st = CG_CUDA_CALL(cudaMemcpyAsync(dst, src, nbytes, k, ctx->stream));
        if (st == CG_OK) st = CG_CUDA_CALL(cudaStreamSynchronize(ctx->stream));
    } else if (kind == CG_COPY_H2D) {
        st = copy_h2d(ctx, p, dst, src, nbytes);
    } else {
        st = copy_d2h(ctx, p, dst, src, nbytes);
    }
    pthread_mutex_unlock(&p->stage_lock);
    return st;
}

/* Between two devices. The copy runs on the source's stream, so after the work that wrote
 * src and before any later reuse of src's block there; first that stream waits for the
 * destination's (dst may be a block its allocator just recycled from a tensor that queued
 * kernels still read), then the destination's waits for the copy. Each context's peer_ready
 * is only ever recorded on its own stream, and each record is waited on before the lock is
 * let go, so one event per device serves every pair. cudaMemcpyPeerAsync goes device to
 * device where the GPUs can reach each other, through the host where they cannot. On
 * failure the source's stream is drained, so no copy is left in flight. */
static pthread_mutex_t g_peer_lock = PTHREAD_MUTEX_INITIALIZER;

static cg_status peer_event_locked(cg_cuda_ctx *c) { /* c's device current */
    if (c->peer_ready) return CG_OK;
    return CG_CUDA_CALL(cudaEventCreateWithFlags(&c->peer_ready, cudaEventDisableTiming));
}

cg_status cg_cuda_memcpy_peer(int dst_dev, void *dst, int src_dev, const void *src, size_t nbytes) {
    if (nbytes == 0) return CG_OK;
    if (dst_dev == src_dev) return cg_cuda_memcpy(dst_dev, dst, src, nbytes, CG_COPY_D2D);
    cg_cuda_ctx *dc = NULL, *sc = NULL;
    cg_status st;
    int issued = 0;
    pthread_mutex_lock(&g_peer_lock);
    CG_CHECK_GOTO(cg_cuda_ctx_get(dst_dev, &dc));
    CG_CHECK_GOTO(peer_event_locked(dc));
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaEventRecord(dc->peer_ready, dc->stream)));
    CG_CHECK_GOTO(cg_cuda_ctx_get(src_dev, &sc));
    CG_CHECK_GOTO(peer_event_locked(sc));
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaStreamWaitEvent(sc->stream, dc->peer_ready, 0)));
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaMemcpyPeerAsync(dst, dst_dev, src, src_dev, nbytes, sc->stream)));
    issued = 1;
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaEventRecord(sc->peer_ready, sc->stream)));
    CG_CHECK_GOTO(cg_cuda_ctx_get(dst_dev, &dc));
    CG_CHECK_GOTO(CG_CUDA_CALL(cudaStreamWaitEvent(dc->stream, sc->peer_ready, 0)));
    pthread_mutex_unlock(&g_peer_lock);
    return CG_OK;
fail:
    if (issued && cudaSetDevice(src_dev) == cudaSuccess) (void)cudaStreamSynchronize(sc->stream);
    (void)cudaGetLastError(); /* st has the first error */
    pthread_mutex_unlock(&g_peer_lock);
    return st;
}
