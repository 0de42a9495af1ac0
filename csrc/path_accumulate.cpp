// fastattr::path_accumulate_: the Riemann / IDGI accumulate of a chunk of path steps (CPU).
//
//   acc[index[s]] += coef[s] * grads[s]                          (idgi = false, Riemann rule)
//   acc[index[s]] += grads[s]^2 * coef[s] / sum(grads[s]^2)      (idgi = true, coef = dy)
//
// grads (S, D) float32/float64/half/bfloat16, or (S, ...) with D elements per step: a channels-last
// 4-D tensor's rows in its memory order (H, W, C), any other tensor's in its logical order (the
// engine's channels-last gradients go in as they come: a permute + view per chunk cost two
// dispatched ops, microseconds each on a tiny model). coef (S,) float, index (S,) int64 rows of
// acc, acc (N, D) float32 or float64 (mutated). Steps of the same image may appear several times.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <type_traits>
#include <vector>

#include "fastattr/clones.h"
#include "fastattr/path_accumulate.h"

namespace fastattr {
namespace {

void check_args(const at::Tensor& acc, const at::Tensor& grads, const at::Tensor& coef,
                const at::Tensor& index) {
  TORCH_CHECK(acc.dim() == 2 && grads.dim() >= 2, "path_accumulate: acc must be 2-D and grads (S, ...)");
  TORCH_CHECK(grads.numel() == grads.size(0) * acc.size(1), "path_accumulate: acc and grads differ in D");
  TORCH_CHECK(coef.dim() == 1 && coef.size(0) == grads.size(0), "path_accumulate: coef must be (S,)");
  TORCH_CHECK(index.dim() == 1 && index.size(0) == grads.size(0), "path_accumulate: index must be (S,)");
  TORCH_CHECK(index.scalar_type() == at::kLong, "path_accumulate: index must be int64");
  TORCH_CHECK(acc.scalar_type() == at::kFloat || acc.scalar_type() == at::kDouble,
              "path_accumulate: acc must be float32 or float64");
  TORCH_CHECK(acc.is_contiguous(), "path_accumulate: acc must be contiguous");
}

// The float32 loops below are compiled for AVX-512, AVX2 and the baseline and picked at load time
// (GCC target_clones; the portable build's baseline is SSE2): the Riemann pass over a 64 x 3072
// chunk took 35 us on one core with SSE2 and 12.5 us with AVX-512, and 75 -> 61 us right after the
// tiny model's backward, when the gradients are out of cache (bench/bench_overhead.py's model).
// Each element keeps its order of operations (no FMA: -ffp-contract=off, setup.py), so every
// clone gives the baseline's bits.

// sum(g^2) over one step in double. Eight independent partial sums: one accumulator is a chain
// of dependent adds (4-cycle latency, ~1.6 ms for 8 x 150k elements on one core; 8 partials let
// the compiler vectorise it: bench/bench_path_accumulate.py) and pairs rounding errors better.
// (always inlined, so that each clone of sum_squares_f32 vectorises its own copy)
template <typename grad_t>
__attribute__((always_inline)) inline double sum_squares_any(const grad_t* g, int64_t D) {
  double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    for (int k = 0; k < 8; ++k) {
      const double v = static_cast<double>(g[d + k]);
      p[k] += v * v;
    }
  }
  double tail = 0.0;
  for (; d < D; ++d) {
    const double v = static_cast<double>(g[d]);
    tail += v * v;
  }
  return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7])) + tail;
}

FASTATTR_CLONES double sum_squares_f32(const float* g, int64_t D) { return sum_squares_any(g, D); }

template <typename grad_t>
double sum_squares(const grad_t* g, int64_t D) {
  if constexpr (std::is_same_v<grad_t, float>) {
    return sum_squares_f32(g, D);
  } else {
    return sum_squares_any(g, D);
  }
}

// One step's row into its accumulator slice, a[d] += scale * g[d] (Riemann) or
// a[d] += float(double(g[d])^2 * scale) (IDGI), d in [d0, d1). __restrict__: acc and grads never
// overlap (separate tensors), so the loops vectorise.
FASTATTR_CLONES void riemann_row_f32(float* __restrict__ a, const float* __restrict__ g, float sc,
                                     int64_t d0, int64_t d1) {
  for (int64_t d = d0; d < d1; ++d) a[d] += riemann_term(g[d], sc);
}

FASTATTR_CLONES void idgi_row_f32(float* __restrict__ a, const float* __restrict__ g, double sc,
                                  int64_t d0, int64_t d1) {
  for (int64_t d = d0; d < d1; ++d) a[d] += static_cast<float>(idgi_term(static_cast<double>(g[d]), sc));
}

template <typename acc_t, typename grad_t>
void riemann_row(acc_t* a, const grad_t* g, acc_t sc, int64_t d0, int64_t d1) {
  if constexpr (std::is_same_v<acc_t, float> && std::is_same_v<grad_t, float>) {
    riemann_row_f32(a, g, sc, d0, d1);
  } else {
    for (int64_t d = d0; d < d1; ++d) a[d] += riemann_term(static_cast<acc_t>(g[d]), sc);
  }
}

template <typename acc_t, typename grad_t>
void idgi_row(acc_t* a, const grad_t* g, double sc, int64_t d0, int64_t d1) {
  if constexpr (std::is_same_v<acc_t, float> && std::is_same_v<grad_t, float>) {
    idgi_row_f32(a, g, sc, d0, d1);
  } else {
    for (int64_t d = d0; d < d1; ++d) a[d] += static_cast<acc_t>(idgi_term(static_cast<double>(g[d]), sc));
  }
}

template <typename acc_t, typename grad_t>
void accumulate_cpu(acc_t* acc, const grad_t* grads, const double* coef, const int64_t* index,
                    int64_t S, int64_t D, int64_t N, bool idgi) {
  // Per-step scale first: for IDGI this is the one reduction over the step's gradient, done in
  // double (150k-element sums in float would cost completeness at the 1e-6 level).
  std::vector<double> scale(S);
  at::parallel_for(0, S, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      scale[s] = step_scale(idgi, coef[s], idgi ? sum_squares(grads + s * D, D) : 0.0);
    }
  });
  // Then one pass over D, split across threads; each thread owns a slice of every acc row, so
  // steps of the same image never race. The step's slice is still in cache from the reduction
  // when S is small; the loop order keeps acc in registers/L1 per slice.
  at::parallel_for(0, D, 4096, [&](int64_t d0, int64_t d1) {
    for (int64_t s = 0; s < S; ++s) {
      if (scale[s] == 0.0) continue;  // all-zero IDGI step or zero weight contributes nothing
      const grad_t* g = grads + s * D;
      acc_t* a = acc + index[s] * D;
      if (idgi) {
        // In double: for |g| < 1e-19 (probability gradients of a confident model) g*g underflows
        // float to 0 while dy/sum(g^2) overflows it to inf, and 0*inf = NaN. Memory-bound either
        // way (bench/bench_path_accumulate.py).
        idgi_row(a, g, scale[s], d0, d1);
      } else {
        riemann_row(a, g, static_cast<acc_t>(scale[s]), d0, d1);
      }
    }
  });
}

void path_accumulate_cpu(at::Tensor acc, const at::Tensor& grads_in, const at::Tensor& coef_in,
                         const at::Tensor& index_in, bool idgi) {
  check_args(acc, grads_in, coef_in, index_in);
  // (S, D) rows in memory order: a contiguous or channels-last 4-D tensor as it is (no copy)
  const bool dense = grads_in.is_contiguous() ||
                     (grads_in.dim() == 4 && grads_in.is_contiguous(at::MemoryFormat::ChannelsLast));
  auto grads = dense ? grads_in : grads_in.reshape({grads_in.size(0), -1}).contiguous();
  auto coef = coef_in.to(at::kDouble).contiguous();
  auto index = index_in.contiguous();
  const int64_t S = grads.size(0), D = acc.size(1), N = acc.size(0);
  if (S == 0 || D == 0) return;
  // Checked here, not inside the parallel region (exceptions must not leave OpenMP threads).
  const int64_t* idx = index.data_ptr<int64_t>();
  for (int64_t s = 0; s < S; ++s)
    TORCH_CHECK(idx[s] >= 0 && idx[s] < N, "path_accumulate: index ", idx[s], " out of range [0, ", N, ")");
  AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "path_accumulate_acc", [&] {
    using acc_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads.scalar_type(), "path_accumulate_grad", [&] {
      accumulate_cpu<acc_t, scalar_t>(acc.data_ptr<acc_t>(), grads.data_ptr<scalar_t>(),
                                      coef.data_ptr<double>(), index.data_ptr<int64_t>(), S, D, N, idgi);
    });
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastattr, m) {
  m.def("path_accumulate_(Tensor(a!) acc, Tensor grads, Tensor coef, Tensor index, bool idgi) -> ()");
}

TORCH_LIBRARY_IMPL(fastattr, CPU, m) { m.impl("path_accumulate_", &path_accumulate_cpu); }

}  // namespace fastattr
