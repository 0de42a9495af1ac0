// fastattr::neflag_step_: one fused NeFLAG iteration for a batch of samples (CPU).
//
//   neflag_step_(acc (N, D)!, points (S, D)!, x (N, D), grads (S, D), values (S,), scores (N,),
//                index (S,) int64, last (S,) bool, eps, l2) -> done (S,) bool
//
// Sample s belongs to image index[s]; points[s] was evaluated: values[s] = f_c(points[s]),
// grads[s] = g(points[s]); scores[i] = f_c(x[i]); last[s]: that was the sample's m-th evaluation.
// Negative flux (values[s] < scores[index[s]]): acc[index[s]] += grads[s] * (x - points[s]), done.
// Otherwise points[s] = x - eps * dir(grads[s]) (math in fastattr/neflag.h) and, if last[s],
// acc[index[s]] += grads[s] * (x - points[s]) with the moved point (SPEC.md: A += F * (x - x~)
// after the loop, F from the last evaluation), done. acc, points, x, grads: one floating dtype.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <vector>

#include "fastattr/neflag.h"

namespace fastattr {
namespace {

void check_args(const at::Tensor& acc, const at::Tensor& points, const at::Tensor& x, const at::Tensor& grads,
                const at::Tensor& values, const at::Tensor& scores, const at::Tensor& index,
                const at::Tensor& last, double eps) {
  TORCH_CHECK(acc.dim() == 2 && points.dim() == 2 && x.dim() == 2 && grads.dim() == 2,
              "neflag_step: acc, points, x and grads must be 2-D");
  const int64_t N = acc.size(0), D = acc.size(1), S = points.size(0);
  TORCH_CHECK(x.size(0) == N && x.size(1) == D, "neflag_step: x must be (N, D) like acc");
  TORCH_CHECK(points.size(1) == D && grads.size(0) == S && grads.size(1) == D,
              "neflag_step: points and grads must be (S, D) with acc's D");
  TORCH_CHECK(values.dim() == 1 && values.size(0) == S, "neflag_step: values must be (S,)");
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == N, "neflag_step: scores must be (N,)");
  TORCH_CHECK(index.dim() == 1 && index.size(0) == S && index.scalar_type() == at::kLong,
              "neflag_step: index must be (S,) int64");
  TORCH_CHECK(last.dim() == 1 && last.size(0) == S && last.scalar_type() == at::kBool,
              "neflag_step: last must be (S,) bool");
  TORCH_CHECK(acc.scalar_type() == at::kFloat || acc.scalar_type() == at::kDouble,
              "neflag_step: acc must be float32 or float64");
  TORCH_CHECK(points.scalar_type() == acc.scalar_type() && x.scalar_type() == acc.scalar_type() &&
                  grads.scalar_type() == acc.scalar_type(),
              "neflag_step: acc, points, x and grads must share one dtype");
  // In-place outputs are written through raw pointers: no hidden copies allowed.
  TORCH_CHECK(acc.is_contiguous() && points.is_contiguous(), "neflag_step: acc and points must be contiguous");
  TORCH_CHECK(eps > 0.0, "neflag_step: eps must be > 0, got ", eps);
}

template <typename T>
void step_cpu(T* acc, T* points, const T* x, const T* grads, const std::vector<uint8_t>& neg,
              const bool* last, const double* inv_norm, const int64_t* index, int64_t S, int64_t D,
              bool l2, T eps) {
  // One pass over D split across threads; each thread owns a slice of every row, so two samples
  // of the same image finishing in one call never race on acc.
  at::parallel_for(0, D, 4096, [&](int64_t d0, int64_t d1) {
    for (int64_t s = 0; s < S; ++s) {
      const T* g = grads + s * D;
      const T* xi = x + index[s] * D;
      T* p = points + s * D;
      T* a = acc + index[s] * D;
      if (neg[s]) {
        for (int64_t d = d0; d < d1; ++d) a[d] += neflag_flux(g[d], xi[d], p[d]);
        continue;
      }
      const T inv = static_cast<T>(inv_norm[s]);
      if (last[s]) {
        for (int64_t d = d0; d < d1; ++d) {
          const T q = neflag_move(xi[d], neflag_direction(g[d], l2, inv), eps);
          p[d] = q;
          a[d] += neflag_flux(g[d], xi[d], q);
        }
      } else {
        for (int64_t d = d0; d < d1; ++d) p[d] = neflag_move(xi[d], neflag_direction(g[d], l2, inv), eps);
      }
    }
  });
}

at::Tensor neflag_step_cpu(at::Tensor acc, at::Tensor points, const at::Tensor& x_in, const at::Tensor& grads_in,
                           const at::Tensor& values_in, const at::Tensor& scores_in, const at::Tensor& index_in,
                           const at::Tensor& last_in, double eps, bool l2) {
  check_args(acc, points, x_in, grads_in, values_in, scores_in, index_in, last_in, eps);
  auto x = x_in.contiguous();
  auto grads = grads_in.contiguous();
  auto values = values_in.to(at::kDouble).contiguous();
  auto scores = scores_in.to(at::kDouble).contiguous();
  auto index = index_in.contiguous();
  auto last = last_in.contiguous();
  const int64_t N = acc.size(0), D = acc.size(1), S = points.size(0);
  auto done = at::empty({S}, last.options());
  // Per-sample decisions first, serially (S is a chunk, a few dozen at most; checks must not throw
  // inside the parallel region).
  const int64_t* idx = index.data_ptr<int64_t>();
  const double* y = values.data_ptr<double>();
  const double* fx = scores.data_ptr<double>();
  const bool* lst = last.data_ptr<bool>();
  bool* dn = done.data_ptr<bool>();
  std::vector<uint8_t> neg(S);
  for (int64_t s = 0; s < S; ++s) {
    TORCH_CHECK(idx[s] >= 0 && idx[s] < N, "neflag_step: index ", idx[s], " out of range [0, ", N, ")");
    neg[s] = neflag_negative(y[s], fx[idx[s]]);
    dn[s] = neg[s] || lst[s];
  }
  if (S == 0 || D == 0) return done;
  AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "neflag_step", [&] {
    const scalar_t* g = grads.data_ptr<scalar_t>();
    // "l2" needs |F|_2 of each moving sample before its pass: one reduction, in double (a
    // 150k-element float sum would move the point at the 1e-6 level).
    std::vector<double> inv_norm(S, 0.0);
    if (l2) {
      at::parallel_for(0, S, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) {
          if (neg[s]) continue;
          double sumsq = 0.0;
          for (int64_t d = 0; d < D; ++d) { const double v = static_cast<double>(g[s * D + d]); sumsq += v * v; }
          inv_norm[s] = neflag_inv_norm(sumsq);
        }
      });
    }
    step_cpu<scalar_t>(acc.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), g, neg, lst,
                       inv_norm.data(), idx, S, D, l2, static_cast<scalar_t>(eps));
  });
  return done;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastattr, m) {
  m.def("neflag_step_(Tensor(a!) acc, Tensor(b!) points, Tensor x, Tensor grads, Tensor values, Tensor scores, "
        "Tensor index, Tensor last, float eps, bool l2) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastattr, CPU, m) { m.impl("neflag_step_", &neflag_step_cpu); }

}  // namespace fastattr
