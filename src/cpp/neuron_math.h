// Scalar maths of the neuron shared by the CPU and CUDA kernels: the unit step and its surrogate derivatives.
//
// Both backends include this header, so the forward step and the backward surrogates cannot drift apart.
// Everything here is a pure function of its arguments (no globals, no allocation).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define LINNEURON_HD __host__ __device__ __forceinline__
#else
#define LINNEURON_HD inline
#endif

namespace linneuron {

// Which derivative the backward pass of the step uses. The forward pass is always the exact step.
// Values are part of the binding ABI: keep them in sync with python/linneuron/_surrogate.py.
enum class Surrogate : int32_t {
  None = 0,     // exact derivative of H: 0 everywhere (the delta at 0 is dropped)
  Ste = 1,      // straight-through: 1 where |alpha*z| <= 1, else 0
  Sigmoid = 2,  // alpha * s(alpha*z) * (1 - s(alpha*z)), s the logistic function
  Atan = 3,     // (alpha/2) / (1 + (pi/2 * alpha * z)^2), the derivative of atan(pi/2*alpha*z)/pi + 1/2
};

// H(z) = 1 if z >= 0 else 0; NaN stays NaN. Note -0.0 >= 0 holds, so H(-0.0) = 1, as torch.heaviside(z, 1).
template <typename T>
LINNEURON_HD T unit_step(T z) {
  return z >= T(0) ? T(1) : (z != z ? z : T(0));
}

// dH/dz as the chosen surrogate defines it, evaluated at z. A NaN z gives NaN for every surrogate but None.
template <typename T>
LINNEURON_HD T surrogate_derivative(Surrogate kind, T z, T alpha) {
  switch (kind) {
    case Surrogate::Ste: {
      const T az = alpha * z;
      return (az <= T(1) && az >= T(-1)) ? T(1) : (z != z ? z : T(0));
    }
    case Surrogate::Sigmoid: {
      // s(u)(1 - s(u)) = e / (1 + e)^2 with e = exp(-|u|): no cancellation in 1 - s for large |u|.
      const T e = exp(-fabs(alpha * z));
      return alpha * e / ((T(1) + e) * (T(1) + e));
    }
    case Surrogate::Atan: {
      const T half_pi = T(1.5707963267948966);
      const T u = half_pi * alpha * z;
      return (alpha / T(2)) / (T(1) + u * u);
    }
    case Surrogate::None:
    default:
      return T(0);
  }
}

}  // namespace linneuron
