/* Backend registry: maps a device to its table of kernels. */
#include "backend.h"

#ifndef CG_HAVE_CUDA
int cg_device_count(void) { return 0; }
int cg_cuda_built(void) { return 0; }
#endif

cg_device cg_default_device(void) { return cg_device_count() > 0 ? CG_CUDA(0) : CG_CPU; }

const cg_backend *cg__backend(cg_device dev) {
    if (dev.type == CG_DEVICE_CPU) return &cg_cpu_backend;
#ifdef CG_HAVE_CUDA
    if (dev.type == CG_DEVICE_CUDA) {
        int n = cg_device_count();
        if (dev.index < 0 || dev.index >= n) {
            CG_FAIL(CG_E_DEVICE, "device cuda:%d is not available (%d CUDA device(s) found); use CG_CPU or "
                                 "cg_default_device()", dev.index, n);
            return NULL;
        }
        return &cg_cuda_backend;
    }
#endif
    CG_FAIL(CG_E_DEVICE, "device %s is not available: this cgrad was built without CUDA (CG_CUDA=OFF or no "
                         "toolkit); use CG_CPU",
            cg_device_str(dev));
    return NULL;
}
