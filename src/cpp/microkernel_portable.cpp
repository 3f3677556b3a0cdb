// Portable micro-kernel (plain C++, compiled for the baseline ISA): correct everywhere, vectorised by the compiler.
#include "microkernel.h"
#include "neuron_math.h"

namespace linneuron {
namespace {

constexpr int64_t kMR = 4;
constexpr int64_t kNR = 8;

// A(i, p) = a[i*a_rs + p*a_cs]; the strides are fixed at compile time where the layout fixes them (1), so the
// same body serves the column-major (packed) and row-major entry points of microkernel.h.
template <typename T, bool kRowMajorA>
void portable_kernel(int64_t kc, const T* a, int64_t a_rs, int64_t a_cs, const T* b, int64_t b_rs, T* c, int64_t c_rs,
                     int64_t c_cs, int64_t m_valid, int64_t n_valid, bool load_c, const T* bias, bool step) {
  const int64_t rs = kRowMajorA ? a_rs : 1, cs = kRowMajorA ? 1 : a_cs;
  T acc[kMR][kNR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    const T* b_row = b + p * b_rs;
    for (int64_t i = 0; i < kMR; ++i) {
      const T a_ip = a[i * rs + p * cs];
      for (int64_t j = 0; j < kNR; ++j) acc[i][j] += a_ip * b_row[j];
    }
  }
  for (int64_t i = 0; i < m_valid; ++i) {
    T* c_row = c + i * c_rs;
    for (int64_t j = 0; j < n_valid; ++j) {
      T v = acc[i][j];
      if (load_c) v += c_row[j * c_cs];
      if (bias) v += bias[j];
      if (step) v = unit_step(v);
      c_row[j * c_cs] = v;
    }
  }
}

// DotKernelFn of microkernel.h: one dot product per output element.
template <typename T>
void portable_dot(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_rs, const T* b, int64_t b_cs, T* c,
                  int64_t c_rs, int64_t c_cs, bool load_c, const T* bias, int64_t bias_stride, bool step) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const T* a_row = a + i * a_rs;
      const T* b_col = b + j * b_cs;
      T v = T(0);
      for (int64_t p = 0; p < k; ++p) v += a_row[p] * b_col[p];
      T& dst = c[i * c_rs + j * c_cs];
      if (load_c) v += dst;
      if (bias) v += bias[j * bias_stride];
      dst = step ? unit_step(v) : v;
    }
}

// SkinnyKernelFn of microkernel.h: the same sums, row by row.
template <typename T>
void portable_skinny(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_rs, int64_t a_cs, const T* b, int64_t b_rs,
                     int64_t b_cs, T* c, int64_t c_rs, int64_t c_cs, bool load_c, const T* bias, int64_t bias_stride,
                     bool step) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      T v = T(0);
      for (int64_t p = 0; p < k; ++p) v += a[i * a_rs + p * a_cs] * b[p * b_rs + j * b_cs];
      T& dst = c[i * c_rs + j * c_cs];
      if (load_c) v += dst;
      if (bias) v += bias[j * bias_stride];
      dst = step ? unit_step(v) : v;
    }
}

// MicroKernel::fma_probe for the baseline ISA: 16 independent scalar chains (the compiler may vectorise them).
template <typename T>
int64_t portable_fma_probe(int64_t iterations, T* sink) {
  constexpr int kChains = 16;
  const T x = T(1) - T(1) / T(1 << 20), y = T(1) / T(1 << 20);
  T acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = T(c) * y;  // distinct, so the compiler cannot merge the chains
  for (int64_t it = 0; it < iterations; ++it)
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * x + y;
  T total = T(0);
  for (int c = 0; c < kChains; ++c) total += acc[c];
  *sink = total;
  return iterations * kChains * 2;
}

}  // namespace

template <typename T>
const MicroKernel<T>& portable_micro_kernel() {
  static const MicroKernel<T> kernel{"portable",
                                     kMR,
                                     kNR,
                                     kNR / 2,  // no vectors: the plan's cost unit as if the tile were two wide
                                     128,
                                     256,
                                     4096,
                                     &portable_kernel<T, false>,
                                     &portable_kernel<T, true>,
                                     &portable_dot<T>,
                                     &portable_skinny<T>,
                                     nullptr,
                                     0,
                                     nullptr,
                                     nullptr,
                                     nullptr,
                                     &portable_fma_probe<T>,
                                     nullptr,
                                     nullptr,
                                     nullptr};
  return kernel;
}

template const MicroKernel<float>& portable_micro_kernel<float>();
template const MicroKernel<double>& portable_micro_kernel<double>();

}  // namespace linneuron
