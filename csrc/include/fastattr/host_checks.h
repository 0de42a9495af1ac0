// Checks the engine reads on the host once per call (or per chunk), for contiguous CPU tensors,
// without the dispatcher: each torch op right after a tiny model's chunk costs 10-50 us (its
// dispatch state is out of cache; bench/bench_overhead.py --cold-ops), these plain loops ~1 us.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace fastattr {

// True when every element of t (a contiguous, or 1-D strided, CPU floating tensor) is finite.
bool all_finite_host(const at::Tensor& t);

// True when every element of t (a contiguous CPU tensor) equals zero (-0.0 included).
bool all_zero_host(const at::Tensor& t);

// True when every row t[i] of a dense CPU floating tensor (N, ...) (contiguous, or channels-last
// 4-D: each row is one block of memory either way) has a non-zero element and every element is
// finite: a chunk of gradients IDGI can sum by the authors' formula (fastattr.paths.IdgiSum).
bool rows_nonzero_finite_host(const at::Tensor& t);

// Per row i of a and b ((N, ...) contiguous CPU tensors of one dtype and shape): a[i] == b[i]
// element-wise (as torch.eq: -0.0 equals 0.0, NaN equals nothing).
std::vector<bool> rows_equal_host(const at::Tensor& a, const at::Tensor& b);

}  // namespace fastattr
