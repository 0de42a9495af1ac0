// Torch glue of fastattr::neflag_step_ on CUDA: checks, dtype dispatch, scratch buffers, stream.
// The kernels are in neflag_step.cu (raw pointers, no torch headers); the schema and the contract
// are in csrc/neflag_step.cpp. Compiled only when torch has CUDA (setup.py).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <cuda_runtime.h>

namespace fastattr {

cudaError_t neflag_step_cuda_launch(float* acc, float* points, const float* x, const float* grads,
                                    const float* values, const float* scores, const int64_t* index, const bool* last,
                                    bool* done, uint8_t* scratch_neg, double* scratch_inv_norm, int64_t S, int64_t D,
                                    double eps, bool l2, cudaStream_t stream);
cudaError_t neflag_step_cuda_launch(double* acc, double* points, const double* x, const double* grads,
                                    const double* values, const double* scores, const int64_t* index, const bool* last,
                                    bool* done, uint8_t* scratch_neg, double* scratch_inv_norm, int64_t S, int64_t D,
                                    double eps, bool l2, cudaStream_t stream);

namespace {

at::Tensor neflag_step_cuda(at::Tensor acc, at::Tensor points, const at::Tensor& x_in, const at::Tensor& grads_in,
                            const at::Tensor& values_in, const at::Tensor& scores_in, const at::Tensor& index_in,
                            const at::Tensor& last_in, double eps, bool l2) {
  TORCH_CHECK(acc.dim() == 2 && points.dim() == 2 && x_in.dim() == 2 && grads_in.dim() == 2,
              "neflag_step: acc, points, x and grads must be 2-D");
  const int64_t N = acc.size(0), D = acc.size(1), S = points.size(0);
  TORCH_CHECK(x_in.size(0) == N && x_in.size(1) == D, "neflag_step: x must be (N, D) like acc");
  TORCH_CHECK(points.size(1) == D && grads_in.size(0) == S && grads_in.size(1) == D,
              "neflag_step: points and grads must be (S, D) with acc's D");
  TORCH_CHECK(values_in.dim() == 1 && values_in.size(0) == S && scores_in.dim() == 1 && scores_in.size(0) == N,
              "neflag_step: values must be (S,) and scores (N,)");
  TORCH_CHECK(index_in.dim() == 1 && index_in.size(0) == S && index_in.scalar_type() == at::kLong,
              "neflag_step: index must be (S,) int64");
  TORCH_CHECK(last_in.dim() == 1 && last_in.size(0) == S && last_in.scalar_type() == at::kBool,
              "neflag_step: last must be (S,) bool");
  TORCH_CHECK(acc.scalar_type() == at::kFloat || acc.scalar_type() == at::kDouble,
              "neflag_step: acc must be float32 or float64");
  TORCH_CHECK(points.scalar_type() == acc.scalar_type() && x_in.scalar_type() == acc.scalar_type() &&
                  grads_in.scalar_type() == acc.scalar_type(),
              "neflag_step: acc, points, x and grads must share one dtype");
  TORCH_CHECK(acc.is_contiguous() && points.is_contiguous(), "neflag_step: acc and points must be contiguous");
  TORCH_CHECK(eps > 0.0, "neflag_step: eps must be > 0, got ", eps);
  // index is not range-checked here (that would synchronise every chunk); the CPU op checks it and
  // the method builds it from arange over the images.
  const c10::cuda::CUDAGuard guard(acc.device());
  auto x = x_in.contiguous();
  auto grads = grads_in.contiguous();
  auto values = values_in.to(acc.scalar_type()).contiguous();
  auto scores = scores_in.to(acc.scalar_type()).contiguous();
  auto index = index_in.contiguous();
  auto last = last_in.contiguous();
  auto done = at::empty({S}, last.options());
  auto neg = at::empty({S}, last.options().dtype(at::kByte));
  auto inv_norm = at::empty({S}, last.options().dtype(at::kDouble));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "neflag_step_cuda", [&] {
    const cudaError_t err = neflag_step_cuda_launch(
        acc.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), grads.data_ptr<scalar_t>(),
        values.data_ptr<scalar_t>(), scores.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), last.data_ptr<bool>(),
        done.data_ptr<bool>(), neg.data_ptr<uint8_t>(), inv_norm.data_ptr<double>(), S, D, eps, l2, stream);
    TORCH_CHECK(err == cudaSuccess, "neflag_step: CUDA launch failed: ", cudaGetErrorString(err));
  });
  return done;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastattr, CUDA, m) { m.impl("neflag_step_", &neflag_step_cuda); }

}  // namespace fastattr
