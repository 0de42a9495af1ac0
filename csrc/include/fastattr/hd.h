// Host/device qualifier shared by the CPU build (gcc) and the CUDA build (nvcc), so the
// element-wise math in these headers is the same arithmetic on both.
#pragma once
#if defined(__CUDACC__)
#define FASTATTR_HD __host__ __device__ __forceinline__
#else
#define FASTATTR_HD inline
#endif
