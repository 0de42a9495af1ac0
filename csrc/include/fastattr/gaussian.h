// Element-wise math of the truncated, normalised Gaussian kernel (scipy.ndimage.gaussian_filter
// with truncate=4, mode="constant") and of its exact derivative with respect to sigma, shared by
// the CPU op (csrc/gaussian_blur.cpp) and the CUDA kernels (csrc/cuda/gaussian_blur.cu).
//
//   radius r = int(4 sigma + 0.5);  w_k = exp(-k^2 / (2 sigma^2)) / Z,  Z = sum_{|j|<=r} exp(...)
//   d w_k / d sigma = w_k (k^2 - m2) / sigma^3,  m2 = sum_{|j|<=r} w_j j^2
// (r is piecewise constant in sigma, so this is the derivative between radius jumps; it is also
// the limit of a central difference that does not cross a jump).
#pragma once
#include <math.h>

#include "fastattr/hd.h"

namespace fastattr {

// scipy: radius = int(truncate * sd + 0.5) with truncate = 4.
FASTATTR_HD int gaussian_radius(double sigma) { return static_cast<int>(4.0 * sigma + 0.5); }

// Unnormalised tap exp(-k^2 / (2 sigma^2)); sigma > 0 (sigma == 0 means radius 0, w_0 = 1).
FASTATTR_HD double gaussian_tap(int k, double sigma) {
  if (sigma <= 0.0) return k == 0 ? 1.0 : 0.0;
  const double kk = static_cast<double>(k) * k;
  return exp(-0.5 * kk / (sigma * sigma));
}

// Normaliser Z and second moment m2 of the normalised kernel over |k| <= radius.
struct GaussianNorm {
  double z;   // sum of unnormalised taps
  double m2;  // sum of w_k k^2 with w_k normalised
};

FASTATTR_HD GaussianNorm gaussian_norm(double sigma) {
  const int r = gaussian_radius(sigma);
  double z = 1.0, s2 = 0.0;  // the k = 0 tap is exp(0) = 1 and adds nothing to the moment
  for (int k = 1; k <= r; ++k) {
    const double t = gaussian_tap(k, sigma);
    z += 2.0 * t;
    s2 += 2.0 * t * static_cast<double>(k) * k;
  }
  GaussianNorm n;
  n.z = z;
  n.m2 = s2 / z;
  return n;
}

// Normalised weight w_k (|k| <= radius; callers never ask beyond the radius).
FASTATTR_HD double gaussian_weight(int k, double sigma, GaussianNorm n) {
  return gaussian_tap(k, sigma) / n.z;
}

// d w_k / d sigma of the normalised truncated kernel; 0 when sigma == 0 (radius 0, identity).
FASTATTR_HD double gaussian_weight_dsigma(int k, double sigma, GaussianNorm n) {
  if (sigma <= 0.0) return 0.0;
  const double kk = static_cast<double>(k) * k;
  return gaussian_weight(k, sigma, n) * (kk - n.m2) / (sigma * sigma * sigma);
}

}  // namespace fastattr
