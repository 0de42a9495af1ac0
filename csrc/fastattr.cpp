// fastattr._C: the extension module. Ops register through TORCH_LIBRARY(_FRAGMENT) when this
// shared object is imported; the pybind11 module reports build facts and holds the host checks
// (fastattr/host_checks.h: plain functions returning Python values, no dispatcher).
#include <torch/extension.h>

#include "fastattr/host_checks.h"

TORCH_LIBRARY(fastattr, m) {
  // Schemas live next to their kernels (TORCH_LIBRARY_FRAGMENT in each csrc/<op>.cpp).
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastattr C++/CUDA ops (registered as torch.ops.fastattr.*)";
  m.def("all_finite", &fastattr::all_finite_host, "True when every element of a contiguous CPU tensor is finite");
  m.def("all_zero", &fastattr::all_zero_host, "True when every element of a contiguous CPU tensor is zero");
  m.def("rows_nonzero_finite", &fastattr::rows_nonzero_finite_host,
        "True when every row of a dense CPU tensor has a non-zero element and all are finite");
  m.def("rows_equal", &fastattr::rows_equal_host, "Per row: a[i] == b[i] element-wise (contiguous CPU tensors)");
#ifdef FASTATTR_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
