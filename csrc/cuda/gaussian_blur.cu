// Raw CUDA kernels of fastattr::gaussian_blur (no torch headers; glue in gaussian_blur_cuda.cpp).
// Same algorithm and the same tap arithmetic (fastattr/gaussian.h) as the CPU op: a direct
// separable pass with taps clipped to the image, rows then columns, optional exact d/dsigma.
//
// Buffers (float, contiguous): x (N, C, H, W); sigma (P,) double; index (P,) int64;
// taps / dtaps (P, T) with T = max(H, W) (entry k = w_k, zero beyond the pair's radius);
// radius (P,) int = min(radius(sigma), T - 1); v, dv, out, dout (P, C, H, W).
#include <cuda_runtime.h>
#include <stdint.h>

#include "fastattr/gaussian.h"

namespace fastattr {
namespace {

// One thread per (pair, tap k): the normaliser is recomputed per thread (<= 4 sigma + 1 terms),
// cheaper than a second launch for the P x T taps of a chunk.
__global__ void taps_kernel(const double* __restrict__ sigma, float* __restrict__ taps,
                            float* __restrict__ dtaps, int* __restrict__ radius, int64_t P, int T) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= P * T) return;
  const int64_t p = i / T;
  const int k = (int)(i % T);
  const double s = sigma[p];
  const int r = min(gaussian_radius(s), T - 1);
  if (k == 0) radius[p] = r;
  float w = 0.f, dw = 0.f;
  if (k <= r) {
    const GaussianNorm n = gaussian_norm(s);
    w = (float)gaussian_weight(k, s, n);
    dw = (float)gaussian_weight_dsigma(k, s, n);
  }
  taps[i] = w;
  if (dtaps) dtaps[i] = dw;
}

// Along H: v[p,c,h,w] = sum_j taps[p,|j-h|] x[index[p],c,j,w] (and dv with dtaps); one thread
// per output element, consecutive threads along W read consecutive addresses.
__global__ void rows_kernel(const float* __restrict__ x, const int64_t* __restrict__ index,
                            const float* __restrict__ taps, const float* __restrict__ dtaps,
                            const int* __restrict__ radius, float* __restrict__ v, float* __restrict__ dv,
                            int64_t P, int64_t C, int64_t H, int64_t W, int T) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= P * C * H * W) return;
  const int64_t w = i % W, h = (i / W) % H, c = (i / (W * H)) % C, p = i / (W * H * C);
  const float* src = x + (index[p] * C + c) * H * W + w;
  const float* tp = taps + p * T;
  const int64_t r = radius[p];
  const int64_t j0 = h - r > 0 ? h - r : 0, j1 = h + r < H - 1 ? h + r : H - 1;
  float acc = 0.f, dacc = 0.f;
  for (int64_t j = j0; j <= j1; ++j) {
    const int64_t k = j > h ? j - h : h - j;
    const float xv = src[j * W];
    acc += tp[k] * xv;
    if (dtaps) dacc += dtaps[p * T + k] * xv;
  }
  v[i] = acc;
  if (dtaps) dv[i] = dacc;
}

// Along W: out = sum_k taps[|k|] v[.., w+k]; dout = sum_k taps[|k|] dv[.., w+k] + dtaps[|k|] v[.., w+k].
__global__ void cols_kernel(const float* __restrict__ v, const float* __restrict__ dv,
                            const float* __restrict__ taps, const float* __restrict__ dtaps,
                            const int* __restrict__ radius, float* __restrict__ out, float* __restrict__ dout,
                            int64_t P, int64_t C, int64_t H, int64_t W, int T) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= P * C * H * W) return;
  const int64_t w = i % W, p = i / (W * H * C);
  const float* row = v + (i - w);
  const float* tp = taps + p * T;
  const int64_t r = radius[p];
  const int64_t j0 = w - r > 0 ? w - r : 0, j1 = w + r < W - 1 ? w + r : W - 1;
  float acc = 0.f, dacc = 0.f;
  for (int64_t j = j0; j <= j1; ++j) {
    const int64_t k = j > w ? j - w : w - j;
    acc += tp[k] * row[j];
    if (dtaps) dacc += tp[k] * dv[i - w + j] + dtaps[p * T + k] * row[j];
  }
  out[i] = acc;
  if (dtaps) dout[i] = dacc;
}

inline unsigned blocks(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

}  // namespace

// Host launcher: blur P (image, sigma) pairs; dtaps/dv/dout null when no derivative is wanted.
// Returns the first launch error (cudaSuccess when all launches were queued).
cudaError_t gaussian_blur_cuda_launch(const float* x, const double* sigma, const int64_t* index,
                                      float* taps, float* dtaps, int* radius, float* v, float* dv,
                                      float* out, float* dout, int64_t P, int64_t C, int64_t H,
                                      int64_t W, cudaStream_t stream) {
  const int threads = 256;
  const int T = (int)(H > W ? H : W);
  const int64_t n = P * C * H * W;
  if (P == 0 || n == 0) return cudaSuccess;
  taps_kernel<<<blocks(P * T, threads), threads, 0, stream>>>(sigma, taps, dtaps, radius, P, T);
  rows_kernel<<<blocks(n, threads), threads, 0, stream>>>(x, index, taps, dtaps, radius, v, dv, P, C, H, W, T);
  cols_kernel<<<blocks(n, threads), threads, 0, stream>>>(v, dv, taps, dtaps, radius, out, dout, P, C, H, W, T);
  return cudaGetLastError();
}

}  // namespace fastattr
