/* Streams and events of the CUDA emulator: deferred work (emu_internal.h). Each stream is a
 * FIFO of closures with counts of work queued and done; an event is a (stream, count) mark,
 * taken when it is recorded (cudaStreamWaitEvent waits for the record made before the call,
 * as on a device), plus the host time at which its mark ran. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "emu_internal.h"

namespace cgemu {
namespace {

struct stream_q {
    std::deque<std::function<void()>> q;
    uint64_t queued = 0, done = 0;
    bool running = false; /* a closure of this stream is executing (a wait inside it flushes others) */
    int dev = -1;         /* the device it was created on; -1: the legacy default stream, any device */
    /* stream capture: work goes to `cap` instead of q; an unsupported call invalidates it */
    std::vector<std::function<void()>> *cap = nullptr;
    bool cap_invalid = false;
    int cap_mode = 0; /* cudaStreamCaptureMode of cudaStreamBeginCapture */
};

struct event_obj {
    unsigned flags;
    int dev = -1; /* the device current at its creation */
    stream_q *stream = nullptr;
    uint64_t mark = 0;
    double t_ms = -1;
};

std::recursive_mutex g_lock;
thread_local stream_q *t_capturing = nullptr;                 /* the capture this thread began */
thread_local int t_mode = cudaStreamCaptureModeGlobal;        /* cudaThreadExchangeStreamCaptureMode */
std::map<cudaStream_t, stream_q *> g_streams;
std::vector<std::unique_ptr<stream_q>> g_retired; /* destroyed streams, freed at exit */
cudaError_t g_sticky = cudaSuccess;

double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

stream_q *q_of(cudaStream_t s) {
    auto it = g_streams.find(s);
    if (it != g_streams.end()) return it->second;
    stream_q *q = new stream_q; /* the legacy default stream (0), made on first use */
    g_streams[s] = q;
    return q;
}

/* runs q's closures until `upto` of them are done */
void run_until(stream_q *q, uint64_t upto) {
    while (q->done < upto && !q->q.empty()) {
        if (q->running) { /* only a wait cycle gets here, which a device would hang on */
            set_sticky(cudaErrorLaunchFailure, "stream waits on work queued after the wait itself");
            return;
        }
        std::function<void()> f = std::move(q->q.front());
        q->q.pop_front();
        q->running = true;
        f();
        q->running = false;
        q->done++;
    }
}

/* a kernel or library call for q from the calling thread: q must belong to the current device */
bool on_current_device(const stream_q *q) {
    int cur = current_device();
    if (q->dev < 0 || q->dev == cur) return true;
    char msg[160];
    snprintf(msg, sizeof msg, "a kernel or library call queued on a stream of cuda:%d while cuda:%d is current "
             "(cudaSetDevice first)", q->dev, cur);
    set_sticky(cudaErrorInvalidResourceHandle, msg);
    return false;
}

void invalidate(stream_q *q, const char *why) {
    if (!q->cap_invalid) fprintf(stderr, "cuda emulator: stream capture invalidated: %s\n", why);
    q->cap_invalid = true;
}

} // namespace

bool capture_allows(const char *call) {
    guard g;
    stream_q *q = t_capturing;
    if (!q || q->cap_mode == cudaStreamCaptureModeRelaxed || t_mode == cudaStreamCaptureModeRelaxed) return true;
    char msg[160];
    snprintf(msg, sizeof msg, "%s while this thread captures a stream (not allowed outside relaxed mode)", call);
    invalidate(q, msg);
    return false;
}

int capture_refusal() {
    const char *r = getenv("CGEMU_CAPTURE_REFUSE"); /* tests of the caller's fallback */
    if (!r || !*r || !strcmp(r, "0")) return 0;
    return strcmp(r, "call") == 0 ? 2 : 1;
}

bool is_capturing(cudaStream_t s) {
    guard g;
    auto it = g_streams.find(s);
    return it != g_streams.end() && it->second->cap;
}

void capture_fail(cudaStream_t s, const char *why) {
    guard g;
    auto it = g_streams.find(s);
    if (it != g_streams.end() && it->second->cap) invalidate(it->second, why);
}

cudaError_t capture_begin(cudaStream_t s, int mode) {
    guard g;
    auto it = g_streams.find(s);
    if (it == g_streams.end()) return cudaErrorStreamCaptureUnsupported; /* the legacy stream */
    stream_q *q = it->second;
    if (q->cap) return cudaErrorIllegalState;
    q->cap = new std::vector<std::function<void()>>;
    q->cap_invalid = false;
    q->cap_mode = mode;
    if (mode != cudaStreamCaptureModeRelaxed) t_capturing = q;
    return cudaSuccess;
}

cudaError_t capture_end(cudaStream_t s, std::vector<std::function<void()>> **work) {
    guard g;
    *work = nullptr;
    auto it = g_streams.find(s);
    if (it == g_streams.end() || !it->second->cap) return cudaErrorIllegalState;
    stream_q *q = it->second;
    if (t_capturing == q) t_capturing = nullptr;
    if (capture_refusal() == 1) invalidate(q, "CGEMU_CAPTURE_REFUSE is set");
    std::vector<std::function<void()>> *w = q->cap;
    q->cap = nullptr;
    if (q->cap_invalid) {
        delete w;
        return cudaErrorStreamCaptureInvalidated;
    }
    *work = w;
    return cudaSuccess;
}

int exchange_mode(int mode) {
    int old = t_mode;
    t_mode = mode;
    return old;
}

guard::guard() { g_lock.lock(); }
guard::~guard() { g_lock.unlock(); }

void enqueue(cudaStream_t s, std::function<void()> work, bool on_device) {
    guard g;
    touch_context();
    stream_q *q = q_of(s);
    if (on_device && !on_current_device(q)) return;
    if (q->cap) { /* captured: runs at each launch of the graph */
        q->cap->push_back(std::move(work));
        return;
    }
    q->q.push_back(std::move(work));
    q->queued++;
}

bool flush_stream(cudaStream_t s) {
    guard g;
    stream_q *q = q_of(s);
    if (q->cap) {
        invalidate(q, "a synchronisation of the capturing stream (its work has not run: it is a graph now)");
        return false;
    }
    run_until(q, q->queued);
    return true;
}

void flush_all() {
    guard g;
    for (bool any = true; any;) { /* closures may queue more work */
        any = false;
        for (auto &kv : g_streams)
            if (!kv.second->running && kv.second->done < kv.second->queued) {
                run_until(kv.second, kv.second->queued);
                any = true;
            }
    }
}

void *event_new(unsigned flags, int dev) {
    event_obj *e = new event_obj;
    e->flags = flags;
    e->dev = dev;
    return e;
}
unsigned event_flags(void *ev) { return ((event_obj *)ev)->flags; }
void event_free(void *ev) {
    guard g;
    delete (event_obj *)ev;
}

void event_record(void *ev, cudaStream_t s) {
    guard g;
    event_obj *e = (event_obj *)ev;
    stream_q *q = q_of(s);
    touch_context();
    if (q->cap) { /* a device would make it a node of the graph; cgrad records none in a capture */
        invalidate(q, "an event recorded on the capturing stream (the emulator does not capture events)");
        return;
    }
    if (e->dev >= 0 && q->dev >= 0 && e->dev != q->dev) {
        char msg[128];
        snprintf(msg, sizeof msg, "an event of cuda:%d recorded on a stream of cuda:%d", e->dev, q->dev);
        set_sticky(cudaErrorInvalidResourceHandle, msg);
        return;
    }
    q->q.push_back([e] { e->t_ms = now_ms(); });
    q->queued++;
    e->stream = q;
    e->mark = q->queued;
}

void event_wait(cudaStream_t s, void *ev) {
    guard g;
    event_obj *e = (event_obj *)ev;
    if (!e->stream) return; /* never recorded: nothing to wait for */
    stream_q *other = e->stream;
    uint64_t mark = e->mark;
    stream_q *q = q_of(s);
    if (q->cap) { /* on a device: an event from outside the capture is an isolation error */
        invalidate(q, "the capturing stream waits on an event recorded outside the capture");
        return;
    }
    q->q.push_back([other, mark] { run_until(other, mark); });
    q->queued++;
}

void event_sync(void *ev) {
    guard g;
    event_obj *e = (event_obj *)ev;
    if (e->stream) run_until(e->stream, e->mark);
}

double event_time(void *ev) {
    guard g;
    return ((event_obj *)ev)->t_ms;
}

cudaStream_t stream_new(int dev) {
    guard g;
    stream_q *q = new stream_q;
    q->dev = dev;
    cudaStream_t s = (cudaStream_t)q; /* a unique handle */
    g_streams[s] = q;
    return s;
}

void stream_free(cudaStream_t s) {
    guard g;
    auto it = g_streams.find(s);
    if (it == g_streams.end()) return;
    run_until(it->second, it->second->queued); /* queued work still completes */
    g_retired.emplace_back(it->second);       /* events recorded on it may still name it */
    g_streams.erase(it);
}

void set_sticky(cudaError_t e, const char *why) {
    guard g;
    if (g_sticky == cudaSuccess) {
        fprintf(stderr, "cuda emulator: %s (sticky: every later call fails)\n", why);
        g_sticky = e;
    }
}

cudaError_t sticky() {
    guard g;
    return g_sticky;
}

} // namespace cgemu
