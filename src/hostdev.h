/* CG_HOSTDEV: a function compiled for both the host and the device in nvcc builds, and a
 * plain static inline function in C builds. The headers that backends share (philox.h,
 * dtype_convert.h, optim_math.h) define their functions with it. */
#ifndef CG_HOSTDEV_H
#define CG_HOSTDEV_H

#ifdef __CUDACC__
#define CG_HOSTDEV __host__ __device__ __forceinline__
#else
#define CG_HOSTDEV static inline
#endif

#endif
