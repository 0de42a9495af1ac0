// fastattr._C.all_finite / rows_equal: see fastattr/host_checks.h. Called through pybind11 (not
// torch.ops) on purpose: they return Python values and run on CPU tensors only.
#include "fastattr/host_checks.h"

#include <cmath>
#include <type_traits>

#include "fastattr/clones.h"

namespace fastattr {
namespace {

void check_host(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, ": expected a CPU tensor");
  TORCH_CHECK(t.is_contiguous(), name, ": expected a contiguous tensor");
}

// One column of scores (B,) is a strided view of the (B, K) outputs: read in place.
template <typename T>
bool finite_strided(const T* p, int64_t n, int64_t stride) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(p[i * stride]);
    if (v - v != 0.0f) return false;
  }
  return true;
}

template <>
bool finite_strided<double>(const double* p, int64_t n, int64_t stride) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(p[i * stride])) return false;
  }
  return true;
}

template <typename T>
bool finite_loop(const T* p, int64_t n) {
  // Eight lanes and one test per block: finite iff x - x == 0 (NaN and inf give NaN), and NaN
  // makes the whole sum NaN, so the block needs no branch per element.
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    float acc = 0.0f;
    for (int k = 0; k < 8; ++k) {
      const float v = static_cast<float>(p[i + k]);
      acc += v - v;
    }
    if (acc != 0.0f) return false;
  }
  for (; i < n; ++i) {
    const float v = static_cast<float>(p[i]);
    if (v - v != 0.0f) return false;
  }
  return true;
}

template <>
bool finite_loop<double>(const double* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(p[i])) return false;
  }
  return true;
}

// One row: (has a non-zero element, all finite). Sixteen lanes: v - v is 0 for finite v and NaN
// for NaN/inf, and a NaN lane stays NaN; the lanes vectorise (one lane would be a chain of
// dependent adds over 200k elements per chunk of the tiny model's gradients).
template <typename T>
__attribute__((always_inline)) inline bool row_nonzero_finite_any(const T* r, int64_t d) {
  float bad[16] = {0};
  int nz[16] = {0};
  int64_t j = 0;
  for (; j + 16 <= d; j += 16) {
    for (int k = 0; k < 16; ++k) {
      const float v = static_cast<float>(r[j + k]);
      bad[k] += v - v;
      nz[k] |= v != 0.0f;
    }
  }
  float b = 0.0f;
  int z = 0;
  for (; j < d; ++j) {
    const float v = static_cast<float>(r[j]);
    b += v - v;
    z |= v != 0.0f;
  }
  for (int k = 0; k < 16; ++k) {
    b += bad[k];
    z |= nz[k];
  }
  return z && b == 0.0f;
}

FASTATTR_CLONES bool row_nonzero_finite_f32(const float* r, int64_t d) { return row_nonzero_finite_any(r, d); }

template <typename T>
bool row_nonzero_finite(const T* r, int64_t d) {
  if constexpr (std::is_same_v<T, float>) {
    return row_nonzero_finite_f32(r, d);
  } else if constexpr (std::is_same_v<T, double>) {
    bool z = false;
    for (int64_t j = 0; j < d; ++j) {
      if (!std::isfinite(r[j])) return false;
      z |= r[j] != 0.0;
    }
    return z;
  } else {
    return row_nonzero_finite_any(r, d);
  }
}

template <typename T>
bool rows_equal_loop(const T* a, const T* b, int64_t d) {
  for (int64_t j = 0; j < d; ++j) {
    if (!(a[j] == b[j])) return false;
  }
  return true;
}

}  // namespace

bool all_finite_host(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "all_finite: expected a CPU tensor");
  const bool strided = t.dim() == 1 && !t.is_contiguous();
  TORCH_CHECK(strided || t.is_contiguous(), "all_finite: expected a contiguous or 1-D tensor");
  if (!t.is_floating_point()) return true;
  bool ok = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "all_finite", [&] {
    const scalar_t* p = t.const_data_ptr<scalar_t>();
    ok = strided ? finite_strided<scalar_t>(p, t.numel(), t.stride(0)) : finite_loop<scalar_t>(p, t.numel());
  });
  return ok;
}

bool all_zero_host(const at::Tensor& t) {
  check_host(t, "all_zero");
  bool ok = true;
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, t.scalar_type(), "all_zero", [&] {
    const scalar_t* p = t.const_data_ptr<scalar_t>();
    const scalar_t zero = static_cast<scalar_t>(0);
    for (int64_t i = 0, n = t.numel(); i < n && ok; ++i) ok = p[i] == zero;
  });
  return ok;
}

bool rows_nonzero_finite_host(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "rows_nonzero_finite: expected a CPU tensor");
  TORCH_CHECK(t.dim() >= 1 && (t.is_contiguous() || (t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast))),
              "rows_nonzero_finite: expected a contiguous or channels-last tensor (N, ...)");
  TORCH_CHECK(t.is_floating_point(), "rows_nonzero_finite: expected a floating tensor");
  const int64_t n = t.size(0), d = n ? t.numel() / n : 0;
  if (d == 0) return n == 0;
  bool ok = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "rows_nonzero_finite", [&] {
    const scalar_t* p = t.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < n && ok; ++i) ok = row_nonzero_finite<scalar_t>(p + i * d, d);
  });
  return ok;
}

std::vector<bool> rows_equal_host(const at::Tensor& a, const at::Tensor& b) {
  check_host(a, "rows_equal");
  check_host(b, "rows_equal");
  TORCH_CHECK(a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type(),
              "rows_equal: a and b must have one shape and dtype");
  TORCH_CHECK(a.dim() >= 1, "rows_equal: expected tensors (N, ...)");
  const int64_t n = a.size(0), d = n ? a.numel() / n : 0;
  std::vector<bool> out(n, true);
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, a.scalar_type(), "rows_equal", [&] {
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pb = b.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) out[i] = rows_equal_loop<scalar_t>(pa + i * d, pb + i * d, d);
  });
  return out;
}

}  // namespace fastattr
