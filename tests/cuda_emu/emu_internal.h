/* Shared between the emulator's parts (not seen by kernels or the library). */
#ifndef CG_EMU_INTERNAL_H
#define CG_EMU_INTERNAL_H

#include <cuda_runtime_api.h>
#include <stddef.h>

namespace cgemu {
/* makes e the runtime's pending error (cudaGetLastError) and prints why */
cudaError_t record_launch_error(cudaError_t e, const char *why);
void note_launch();
/* [p, p + n) lies inside one live device allocation */
bool is_device_range(const void *p, size_t n);
} // namespace cgemu

#endif
