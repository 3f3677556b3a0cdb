// The one GEMM of linneuron, with general strides and a fused epilogue, plus the kernels around it.
//
//   C(m, n) = [C(m, n) if accumulate] + sum_k A(m, k) * B(k, n) [+ bias(n)], then [H(.) if step]
//
// Every operand is given by a pointer and two element strides, A(m, k) = a[m*a_rs + k*a_cs], so transposed,
// sliced, negative-stride and stride-0 views need no copy. This single routine serves
//   forward     Y  = X Wᵀ + b      A = X (M, K),  B = Wᵀ  (W is (N, K) as in nn.Linear: b_rs = w_cs, b_cs = w_rs)
//   neuron      Y  = H(X Wᵀ + b)   same, with step = true (Z is never written to memory)
//   grad input  dX = dY W          A = dY (M, N), B = W (N, K)
//   grad weight dW = dYᵀ X         A = dYᵀ,       B = X
// All sizes and strides are int64. No Python or torch in here; callers validate arguments first.
#pragma once

#include <cstdint>
#include <string>

#include "neuron_math.h"

namespace linneuron {

template <typename T>
struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const T* a = nullptr;
  int64_t a_rs = 0, a_cs = 0;  // A is (m, k)
  const T* b = nullptr;
  int64_t b_rs = 0, b_cs = 0;  // B is (k, n)
  T* c = nullptr;
  int64_t c_rs = 0, c_cs = 0;  // C is (m, n); must not overlap A, B or bias
  const T* bias = nullptr;     // optional, bias(n) = bias[n * bias_stride]
  int64_t bias_stride = 1;
  bool accumulate = false;  // C += A B (for gradient accumulation) instead of C = A B
  bool step = false;        // apply the unit step after the bias
};

// Computes the GEMM above on the calling thread's OpenMP team of num_threads() threads.
// k == 0 is allowed: C becomes [C +] bias (then stepped). m == 0 or n == 0 does nothing.
template <typename T>
void gemm(const GemmArgs<T>& args);

// The path gemm() takes for these sizes and strides (pointers are not read) on this CPU and thread count: "dot",
// "tall", "blocked", ... as gemm.cpp names them; "transposed <path>" where it computes Cᵀ = Bᵀ Aᵀ by that path.
// For tests and benchmarks that need to know which kernel they exercise.
template <typename T>
std::string gemm_plan(const GemmArgs<T>& args);

// out(r, c) = H(in(r, c)) over a rows x cols grid with element strides.
template <typename T>
void step_forward(int64_t rows, int64_t cols, const T* in, int64_t in_rs, int64_t in_cs, T* out, int64_t out_rs,
                  int64_t out_cs);

// grad_z(r, c) = grad_y(r, c) * surrogate_derivative(z(r, c)); all three are rows x cols with their own strides.
template <typename T>
void step_backward(int64_t rows, int64_t cols, const T* z, int64_t z_rs, int64_t z_cs, const T* grad_y,
                   int64_t gy_rs, int64_t gy_cs, T* grad_z, int64_t gz_rs, int64_t gz_cs, Surrogate kind, T alpha);

// db(n) = [db(n) +] sum_m dY(m, n): the bias gradient. dY is (m, n) with strides; db has stride db_stride.
// The summation order is fixed by the shape alone, so the result is identical for every thread count.
template <typename T>
void bias_grad(int64_t m, int64_t n, const T* dy, int64_t dy_rs, int64_t dy_cs, T* db, int64_t db_stride,
               bool accumulate);

}  // namespace linneuron
