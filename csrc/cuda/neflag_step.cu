// Raw CUDA kernels of fastattr::neflag_step_ (no torch headers; the glue is neflag_step_cuda.cpp).
// Same element-wise math as the CPU op (fastattr/neflag.h); see csrc/neflag_step.cpp for the
// contract. Checked here with `nvcc -c -arch=sm_90 -Icsrc/include csrc/cuda/neflag_step.cu`.
#include <cuda_runtime.h>
#include <stdint.h>

#include "fastattr/neflag.h"

namespace fastattr {
namespace {

constexpr int kThreads = 256;

// Per sample: negative-flux flag, done flag and (for "l2" and a moving sample) 1/|F|_2.
// One block per sample; the sum of squares is a block reduction in double.
template <typename T>
__global__ void neflag_prepare_kernel(const T* __restrict__ grads, const T* __restrict__ values,
                                      const T* __restrict__ scores, const int64_t* __restrict__ index,
                                      const bool* __restrict__ last, bool* __restrict__ done,
                                      uint8_t* __restrict__ neg, double* __restrict__ inv_norm, int64_t D,
                                      bool l2) {
  __shared__ double partial[kThreads];
  const int64_t s = blockIdx.x;
  const bool is_neg = neflag_negative(static_cast<double>(values[s]), static_cast<double>(scores[index[s]]));
  double sumsq = 0.0;
  if (l2 && !is_neg) {
    const T* g = grads + s * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const double v = static_cast<double>(g[d]);
      sumsq += v * v;
    }
  }
  partial[threadIdx.x] = sumsq;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    neg[s] = is_neg;
    done[s] = is_neg || last[s];
    inv_norm[s] = (l2 && !is_neg) ? neflag_inv_norm(partial[0]) : 0.0;
  }
}

// Element-wise pass: grid (ceil(D / threads), S). Two samples of one image may finish in the same
// call, so the map is updated with atomicAdd (order-dependent rounding only, ~1 ulp).
template <typename T>
__global__ void neflag_step_kernel(T* __restrict__ acc, T* __restrict__ points, const T* __restrict__ x,
                                   const T* __restrict__ grads, const int64_t* __restrict__ index,
                                   const bool* __restrict__ last, const uint8_t* __restrict__ neg,
                                   const double* __restrict__ inv_norm, int64_t D, bool l2, T eps) {
  const int64_t s = blockIdx.y;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= D) return;
  const int64_t i = index[s];
  const T g = grads[s * D + d];
  const T xi = x[i * D + d];
  T* p = points + s * D + d;
  if (neg[s]) {
    atomicAdd(acc + i * D + d, neflag_flux(g, xi, *p));
    return;
  }
  const T q = neflag_move(xi, neflag_direction(g, l2, static_cast<T>(inv_norm[s])), eps);
  *p = q;
  if (last[s]) atomicAdd(acc + i * D + d, neflag_flux(g, xi, q));
}

template <typename T>
void launch(T* acc, T* points, const T* x, const T* grads, const T* values, const T* scores, const int64_t* index,
            const bool* last, bool* done, uint8_t* neg, double* inv_norm, int64_t S, int64_t D, double eps, bool l2,
            cudaStream_t stream) {
  if (S == 0) return;
  neflag_prepare_kernel<T><<<static_cast<unsigned>(S), kThreads, 0, stream>>>(grads, values, scores, index, last, done,
                                                                              neg, inv_norm, D, l2);
  if (D == 0) return;
  const dim3 grid(static_cast<unsigned>((D + kThreads - 1) / kThreads), static_cast<unsigned>(S));
  neflag_step_kernel<T><<<grid, kThreads, 0, stream>>>(acc, points, x, grads, index, last, neg, inv_norm, D, l2,
                                                       static_cast<T>(eps));
}

}  // namespace

// Host launchers (declared in neflag_step_cuda.cpp). scratch_neg (S,) and scratch_inv_norm (S,) are
// device buffers owned by the caller. Returns the launch error, if any.
cudaError_t neflag_step_cuda_launch(float* acc, float* points, const float* x, const float* grads,
                                    const float* values, const float* scores, const int64_t* index, const bool* last,
                                    bool* done, uint8_t* scratch_neg, double* scratch_inv_norm, int64_t S, int64_t D,
                                    double eps, bool l2, cudaStream_t stream) {
  launch<float>(acc, points, x, grads, values, scores, index, last, done, scratch_neg, scratch_inv_norm, S, D, eps, l2,
                stream);
  return cudaGetLastError();
}

cudaError_t neflag_step_cuda_launch(double* acc, double* points, const double* x, const double* grads,
                                    const double* values, const double* scores, const int64_t* index, const bool* last,
                                    bool* done, uint8_t* scratch_neg, double* scratch_inv_norm, int64_t S, int64_t D,
                                    double eps, bool l2, cudaStream_t stream) {
  launch<double>(acc, points, x, grads, values, scores, index, last, done, scratch_neg, scratch_inv_norm, S, D, eps,
                 l2, stream);
  return cudaGetLastError();
}

}  // namespace fastattr
