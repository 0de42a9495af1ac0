// fastattr._C: the extension module. Ops register through TORCH_LIBRARY(_FRAGMENT) when this
// shared object is imported; the pybind11 module itself only reports build facts.
#include <torch/extension.h>

TORCH_LIBRARY(fastattr, m) {
  // Schemas live next to their kernels (TORCH_LIBRARY_FRAGMENT in each csrc/<op>.cpp).
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastattr C++/CUDA ops (registered as torch.ops.fastattr.*)";
#ifdef FASTATTR_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
