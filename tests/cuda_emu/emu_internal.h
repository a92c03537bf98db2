/* Shared between the emulator's parts (not seen by kernels or the library). */
#ifndef CG_EMU_INTERNAL_H
#define CG_EMU_INTERNAL_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include <functional>
#include <vector>

namespace cgemu {

/* ---- emu_runtime.cpp ---- */
/* makes e the calling thread's pending error (cudaGetLastError) and prints why */
cudaError_t record_launch_error(cudaError_t e, const char *why);
/* [p, p + n) lies inside one live device allocation */
bool is_device_range(const void *p, size_t n);
/* the calling thread's current device (cudaSetDevice) */
int current_device();
/* a call that needs a context was made: the current device's primary context is now
 * active, as on a device (cuDevicePrimaryCtxGetState, reached by
 * cudaGetDriverEntryPointByVersion, reports it) */
void touch_context();

/* ---- emu_stream.cpp: deferred work ----
 * Work queued on a stream runs only when the host must see it: a synchronisation of the
 * stream, of an event recorded on it, of the device, a blocking copy, or a free (cudaFree
 * and cudaFreeHost synchronise the device). A stream that waits on an event runs the other
 * stream's work up to that event first. Everything else stays queued, so a missing wait
 * shows as stale data. One recursive lock covers all of it: host threads take turns. */
/* a copy or memset (on_device = false) may be queued on another device's stream, as on a
 * device; a kernel or library call (true) only while the stream's device is current */
void enqueue(cudaStream_t s, std::function<void()> work, bool on_device = true);
/* false (and the capture invalidated) when s is capturing */
bool flush_stream(cudaStream_t s);
void flush_all();
/* events: `ev` names the emulator's event object */
void event_record(void *ev, cudaStream_t s);
void event_wait(cudaStream_t s, void *ev);
void event_sync(void *ev);
double event_time(void *ev); /* host ms when it ran, < 0 when never recorded */
void *event_new(unsigned flags, int dev); /* an event of device dev */
unsigned event_flags(void *ev);
void event_free(void *ev);
/* a stream of device `dev`: a kernel or library call queued on it while another device is
 * current, or an event of another device recorded on it, is an error (sticky,
 * cudaErrorInvalidResourceHandle), as on a device */
cudaStream_t stream_new(int dev);
void stream_free(cudaStream_t s);
/* an error of deferred work (a kernel fault): sticky, as a device's launch failures are */
void set_sticky(cudaError_t e, const char *why);
cudaError_t sticky();
/* Stream capture (CUDA graphs). While a stream captures, work queued on it is kept for the
 * graph instead of queued; a synchronisation of it, an event recorded on it or waited on
 * by it invalidates the capture (cudaStreamEndCapture then fails), as does a potentially
 * unsafe call (capture_allows: cudaMalloc, cudaFree, blocking copies, device
 * synchronisation, pinned allocation) from the capturing thread outside relaxed mode.
 * CGEMU_CAPTURE_REFUSE (tests of the caller's fallback): =1 every capture fails at its end;
 * =call the first kernel launched into a capture fails (cudaErrorStreamCaptureUnsupported),
 * as when a driver refuses a call there. capture_refusal(): 0, 1 or 2 (call). */
cudaError_t capture_begin(cudaStream_t s, int mode);
cudaError_t capture_end(cudaStream_t s, std::vector<std::function<void()>> **work);
bool capture_allows(const char *call); /* false: the caller fails with cudaErrorStreamCaptureUnsupported */
bool is_capturing(cudaStream_t s);
int capture_refusal();
void capture_fail(cudaStream_t s, const char *why); /* invalidates s's capture, if any */
int exchange_mode(int mode);                         /* the thread's interaction mode; returns the old one */
/* holds the emulator's lock for a scope */
struct guard {
    guard();
    ~guard();
};

} // namespace cgemu

#endif
