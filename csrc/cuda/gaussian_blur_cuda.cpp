// Torch glue of the CUDA fastattr::gaussian_blur (kernels in gaussian_blur.cu): checks, buffers,
// stream. float32 on the device (other float dtypes are computed in float32 and cast back).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <cuda_runtime.h>

namespace fastattr {

cudaError_t gaussian_blur_cuda_launch(const float* x, const double* sigma, const int64_t* index,
                                      float* taps, float* dtaps, int* radius, float* v, float* dv,
                                      float* out, float* dout, int64_t P, int64_t C, int64_t H,
                                      int64_t W, cudaStream_t stream);

namespace {

std::tuple<at::Tensor, at::Tensor> gaussian_blur_cuda(const at::Tensor& x_in, const at::Tensor& sigma_in,
                                                      const at::Tensor& index_in, bool derivative) {
  TORCH_CHECK(x_in.dim() == 4, "gaussian_blur: x must be (N, C, H, W), got ", x_in.dim(), " dims");
  TORCH_CHECK(x_in.is_floating_point(), "gaussian_blur: x must be floating point");
  TORCH_CHECK(sigma_in.dim() == 1 && index_in.dim() == 1 && sigma_in.size(0) == index_in.size(0),
              "gaussian_blur: sigma and index must be 1-D of the same length (one per output)");
  TORCH_CHECK(index_in.scalar_type() == at::kLong, "gaussian_blur: index must be int64");
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.to(at::kFloat).contiguous();
  auto sigma = sigma_in.to(x.device(), at::kDouble).contiguous();
  auto index = index_in.to(x.device()).contiguous();
  // Value checks need the host: one small sync per chunk, the price of errors that name the input.
  TORCH_CHECK(at::isfinite(sigma).all().item<bool>() && (sigma >= 0).all().item<bool>(),
              "gaussian_blur: sigma must be finite and >= 0");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = sigma.size(0);
  if (P > 0)
    TORCH_CHECK(index.min().item<int64_t>() >= 0 && index.max().item<int64_t>() < N,
                "gaussian_blur: index out of range [0, ", N, ")");
  const int64_t T = std::max(H, W);
  auto taps = at::empty({P, T}, x.options());
  auto dtaps = derivative ? at::empty({P, T}, x.options()) : at::Tensor();
  auto radius = at::empty({P}, x.options().dtype(at::kInt));
  auto v = at::empty({P, C, H, W}, x.options());
  auto dv = derivative ? at::empty({P, C, H, W}, x.options()) : at::Tensor();
  auto out = at::empty({P, C, H, W}, x.options());
  auto dout = derivative ? at::empty({P, C, H, W}, x.options()) : at::empty({0}, x.options());
  auto err = gaussian_blur_cuda_launch(
      x.data_ptr<float>(), sigma.data_ptr<double>(), index.data_ptr<int64_t>(), taps.data_ptr<float>(),
      derivative ? dtaps.data_ptr<float>() : nullptr, radius.data_ptr<int>(), v.data_ptr<float>(),
      derivative ? dv.data_ptr<float>() : nullptr, out.data_ptr<float>(),
      derivative ? dout.data_ptr<float>() : nullptr, P, C, H, W, at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "gaussian_blur: CUDA launch failed: ", cudaGetErrorString(err));
  return {out.to(x_in.scalar_type()), dout.to(x_in.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastattr, CUDA, m) { m.impl("gaussian_blur", &gaussian_blur_cuda); }

}  // namespace fastattr
