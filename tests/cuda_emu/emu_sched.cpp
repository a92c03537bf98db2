/* The emulator's thread scheduler: each CUDA thread of a block is a fiber with its own stack
 * on the launching host thread; blocks run one after another. A fiber runs until it ends or
 * waits at a barrier (__syncthreads, or a warp exchange for a shuffle); the scheduler then
 * goes round the block's fibers (upwards in even blocks, downwards in odd ones), resuming
 * those whose barrier has opened. A barrier opens when every thread still running in its
 * scope has arrived (threads that returned no longer count, as on current GPUs). Nothing
 * runnable while some fiber waits is a deadlock: the
 * launch fails with cudaErrorLaunchFailure and a message. So does a full-mask shuffle in a
 * warp with lanes that already returned, which is undefined on a device.
 *
 * The fiber switch is 14 instructions of x86-64 assembly (callee-saved registers and the
 * stack pointer), so a barrier costs a few nanoseconds per thread. A launch checks its
 * configuration and queues the grid on its stream (emu_stream.cpp: it runs when the host
 * must see its results); a fault while it runs is a sticky error. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <functional>

#include "emu_internal.h"
#include "emu_kernel.h"

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

extern "C" void cgemu_switch(void **save_sp, void *to_sp);
__asm__(".text\n"
        ".globl cgemu_switch\n"
        ".type cgemu_switch,@function\n"
        "cgemu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size cgemu_switch,.-cgemu_switch\n");

namespace cgemu {

uint3 g_thread, g_block;
dim3 g_block_dim, g_grid_dim;

namespace {

enum { READY, WAIT_BLOCK, WAIT_WARP, DONE };
constexpr size_t STACK_BYTES = 256 * 1024; /* register-row kernels keep rows of up to 64 floats in locals */
constexpr int MAX_THREADS = 1024;
constexpr size_t SMEM_LIMIT = 48 * 1024; /* dynamic + static; cgrad never raises the default */

struct fiber {
    void *sp;
    int state;
    unsigned wait_gen;
};

struct block_state {
    int n, live, cur;
    unsigned gen, arrived;
    unsigned wgen[32], warrived[32], wlive[32];
    uint64_t slots[MAX_THREADS];
    fiber f[MAX_THREADS];
    void *sched_sp;
    const char *fault; /* set when the launch must fail */
    const std::function<void()> *body;
};

block_state g_b;
char *g_stacks;
alignas(16) unsigned char g_smem[SMEM_LIMIT];

void yield_to_scheduler() { cgemu_switch(&g_b.f[g_b.cur].sp, g_b.sched_sp); }

void fault(const char *what) {
    if (!g_b.fault) g_b.fault = what;
}

void open_if_complete() {
    if (g_b.arrived > 0 && g_b.arrived == (unsigned)g_b.live) g_b.arrived = 0, g_b.gen++;
}

void open_warp_if_complete(int w) {
    if (g_b.warrived[w] > 0 && g_b.warrived[w] == g_b.wlive[w]) g_b.warrived[w] = 0, g_b.wgen[w]++;
}

[[noreturn]] void fiber_main() {
    (*g_b.body)();
    int w = g_b.cur >> 5;
    g_b.f[g_b.cur].state = DONE;
    g_b.live--;
    g_b.wlive[w]--;
    open_if_complete();
    open_warp_if_complete(w);
    cgemu_switch(&g_b.f[g_b.cur].sp, g_b.sched_sp);
    abort(); /* a finished fiber is never resumed */
}

char *stack_of(int i) { return g_stacks + (size_t)i * (STACK_BYTES + 4096) + 4096; /* guard page below */ }

bool init_stacks() {
    if (g_stacks) return true;
    size_t total = (size_t)MAX_THREADS * (STACK_BYTES + 4096);
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    g_stacks = (char *)p;
    for (int i = 0; i < MAX_THREADS; i++) mprotect(stack_of(i) - 4096, 4096, PROT_NONE);
    return true;
}

void start_fiber(int i) {
    uintptr_t top = ((uintptr_t)stack_of(i) + STACK_BYTES) & ~(uintptr_t)15;
    void **sp = (void **)(top - 64); /* 6 callee-saved registers, then the return address */
    for (int r = 0; r < 6; r++) sp[r] = 0;
    sp[6] = (void *)&fiber_main;
    sp[7] = 0;
    g_b.f[i].sp = sp;
    g_b.f[i].state = READY;
}

void set_thread(int i) {
    unsigned bx = g_block_dim.x, by = g_block_dim.y;
    g_thread.x = i % bx;
    g_thread.y = (i / bx) % by;
    g_thread.z = i / (bx * by);
}

/* runs one block to the end, going round its fibers upwards, or downwards when `down`
   (alternate blocks: a read that a missing barrier leaves racing its write then sees
   stale data whichever of the two threads has the lower index); false on a fault */
bool run_block(bool down) {
    int n = g_b.n;
    g_b.live = n;
    g_b.gen = g_b.arrived = 0;
    for (int w = 0; w < 32; w++) {
        g_b.wgen[w] = g_b.warrived[w] = 0;
        int lanes = n - w * 32;
        g_b.wlive[w] = lanes < 0 ? 0 : lanes > 32 ? 32 : (unsigned)lanes;
    }
    for (int i = 0; i < n; i++) start_fiber(i);
    int done = 0;
    while (done < n) {
        bool progress = false;
        for (int t = 0; t < n; t++) {
            int i = down ? n - 1 - t : t;
            fiber *f = &g_b.f[i];
            if (f->state == DONE) continue;
            if (f->state == WAIT_BLOCK && f->wait_gen == g_b.gen) continue;
            if (f->state == WAIT_WARP && f->wait_gen == g_b.wgen[i >> 5]) continue;
            f->state = READY;
            g_b.cur = i;
            set_thread(i);
            cgemu_switch(&g_b.sched_sp, f->sp);
            progress = true;
            if (f->state == DONE) done++;
            if (g_b.fault) return false;
        }
        if (!progress) {
            fault("deadlock: threads wait at a barrier that the rest of the block (or warp) never reaches");
            return false;
        }
    }
    return true;
}

} // namespace

void block_barrier() {
    g_b.arrived++;
    if (g_b.arrived == (unsigned)g_b.live) {
        g_b.arrived = 0;
        g_b.gen++;
        return;
    }
    fiber *f = &g_b.f[g_b.cur];
    f->state = WAIT_BLOCK;
    f->wait_gen = g_b.gen;
    int me = g_b.cur;
    yield_to_scheduler();
    g_b.cur = me;
}

/* a shuffle: every lane posts its value, waits for the warp, reads the source lane's, and
   waits again so that no lane overwrites its slot before the others have read it */
void warp_exchange(const void *mine, void *theirs, int src_lane, unsigned mask, size_t bytes) {
    int me = g_b.cur, w = me >> 5;
    unsigned expect = g_b.wlive[w];
    int lanes_in_block = g_b.n - w * 32 < 32 ? g_b.n - w * 32 : 32;
    if (mask == 0xffffffffu && (lanes_in_block != 32 || expect != 32))
        fault("a full-mask shuffle in a warp whose 32 lanes are not all running (undefined on a device)");
    memcpy(&g_b.slots[me], mine, bytes);
    for (int phase = 0; phase < 2; phase++) {
        g_b.warrived[w]++;
        if (g_b.warrived[w] == g_b.wlive[w]) {
            g_b.warrived[w] = 0;
            g_b.wgen[w]++;
        } else {
            fiber *f = &g_b.f[me];
            f->state = WAIT_WARP;
            f->wait_gen = g_b.wgen[w];
            yield_to_scheduler();
            g_b.cur = me;
            set_thread(me);
        }
        if (phase == 0) memcpy(theirs, &g_b.slots[(w << 5) | src_lane], bytes);
    }
}

void *dynamic_smem() { return g_smem; }

namespace {

void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
    if (sticky()) return; /* after a fault a device runs nothing more */
    if (!init_stacks()) {
        set_sticky(cudaErrorMemoryAllocation, "launch: no memory for fiber stacks");
        return;
    }
    g_b.n = (int)(block.x * block.y * block.z);
    g_b.fault = NULL;
    g_b.body = &body;
    g_block_dim = block;
    g_grid_dim = grid;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                g_block.x = x, g_block.y = y, g_block.z = z;
                memset(g_smem, 0xcd, smem); /* dynamic shared memory starts as garbage */
                if (!run_block(((x ^ y ^ z) & 1) != 0)) {
                    char msg[256];
                    snprintf(msg, sizeof msg, "kernel fault in block (%u,%u,%u), thread %d: %s", x, y, z, g_b.cur,
                             g_b.fault);
                    set_sticky(cudaErrorLaunchFailure, msg);
                    return;
                }
            }
}

} // namespace

cudaError_t queue_grid(dim3 grid, dim3 block, size_t smem, cudaStream_t s, std::function<void()> body) {
    if (sticky()) return record_launch_error(sticky(), "launch after an earlier kernel fault");
    uint64_t nthreads = (uint64_t)block.x * block.y * block.z;
    if (nthreads == 0 || nthreads > MAX_THREADS || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu)
        return record_launch_error(cudaErrorInvalidConfiguration, "launch: bad grid or block dimensions");
    if (smem > SMEM_LIMIT)
        return record_launch_error(cudaErrorInvalidValue,
                                   "launch: more than 48 KiB of dynamic shared memory without the opt-in attribute");
    if (capture_refusal() == 2 && is_capturing(s)) {
        capture_fail(s, "CGEMU_CAPTURE_REFUSE=call: a kernel launched into the capture");
        return record_launch_error(cudaErrorStreamCaptureUnsupported, "launch refused in a capture (CGEMU_CAPTURE_REFUSE)");
    }
    enqueue(s, [grid, block, smem, body] { run_grid(grid, block, smem, body); });
    if (sticky()) return record_launch_error(sticky(), "launch refused (see above)");
    return cudaSuccess;
}

} // namespace cgemu
