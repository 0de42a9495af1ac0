// Element-wise math of the path accumulate (Riemann and IDGI), shared by CPU and CUDA.
#pragma once
#include "fastattr/hd.h"

namespace fastattr {

// Per-step scale. IDGI: dy / sum(g^2), or 0 for an all-zero gradient (the authors' code divides
// by zero and yields NaN; fastattr makes such a step contribute nothing, SPEC.md). Riemann: w.
FASTATTR_HD double step_scale(bool idgi, double coef, double sumsq) {
  if (!idgi) return coef;
  return sumsq > 0.0 ? coef / sumsq : 0.0;
}

// One element's contribution: Riemann adds scale*g, IDGI adds g^2 * scale.
template <typename T>
FASTATTR_HD T riemann_term(T g, T scale) { return g * scale; }
template <typename T>
FASTATTR_HD T idgi_term(T g, T scale) { return g * g * scale; }

}  // namespace fastattr
