// Element-wise math of one NeFLAG sign iteration (paper Algorithm 1 / Lemma 1, SPEC.md "NeFLAG"),
// shared by the CPU op (csrc/neflag_step.cpp) and the CUDA kernel (csrc/cuda/neflag_step.cu), so
// the CPU tests check the arithmetic the GPU runs.
//
// Per sample s of image i, with point p = x~, gradient F = g(p), output y = f_c(p), fx = f_c(x):
//   y < fx  (negative flux, eq. 6):  acc_i += F * (x - p)                      sample done
//   else                          :  p = x - eps * dir(F)                     sample moves
//                                    and if this was its m-th evaluation:
//                                    acc_i += F * (x - p_new)                  sample done
// dir(F) = sign(F) for norm="linf" (Algorithm 1, line 5), F / |F|_2 for norm="l2" (Lemma 1, eq. 7).
#pragma once
#include <math.h>

#include "fastattr/hd.h"

namespace fastattr {

// Negative flux test of eq. 6: the flux at p is ~ (f(p) - f(x)) / eps, negative iff f(p) < f(x).
// Strict: a point with f(p) == f(x) keeps iterating.
FASTATTR_HD bool neflag_negative(double y, double fx) { return y < fx; }

// 1 / |F|_2 from sum(F^2), or 0 for an all-zero gradient (no direction: the point moves to x,
// the same as sign(0) = 0 does element-wise for "linf").
FASTATTR_HD double neflag_inv_norm(double sumsq) { return sumsq > 0.0 ? 1.0 / sqrt(sumsq) : 0.0; }

// Update direction of one element: sign(F) ("linf", inv_norm ignored) or F / |F|_2 ("l2").
template <typename T>
FASTATTR_HD T neflag_direction(T g, bool l2, T inv_norm) {
  if (l2) return g * inv_norm;
  return static_cast<T>((g > T(0)) - (g < T(0)));
}

// The moved point x - eps * dir(F).
template <typename T>
FASTATTR_HD T neflag_move(T x, T dir, T eps) { return x - eps * dir; }

// One element of the flux term F * (x - p) added to the image's map.
template <typename T>
FASTATTR_HD T neflag_flux(T g, T x, T p) { return g * (x - p); }

}  // namespace fastattr
