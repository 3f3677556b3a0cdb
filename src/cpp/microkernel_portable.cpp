// Portable micro-kernel (plain C++, compiled for the baseline ISA): correct everywhere, vectorised by the compiler.
#include "microkernel.h"
#include "neuron_math.h"

namespace linneuron {
namespace {

constexpr int64_t kMR = 4;
constexpr int64_t kNR = 8;

template <typename T>
void portable_kernel(int64_t kc, const T* a_panel, const T* b_panel, T* c, int64_t c_rs, int64_t c_cs,
                     int64_t m_valid, int64_t n_valid, bool load_c, const T* bias, bool step) {
  T acc[kMR][kNR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    const T* a = a_panel + p * kMR;
    const T* b = b_panel + p * kNR;
    for (int64_t i = 0; i < kMR; ++i)
      for (int64_t j = 0; j < kNR; ++j) acc[i][j] += a[i] * b[j];
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

}  // namespace

template <typename T>
const MicroKernel<T>& portable_micro_kernel() {
  static const MicroKernel<T> kernel{"portable", kMR, kNR, 128, 256, 4096, &portable_kernel<T>};
  return kernel;
}

template const MicroKernel<float>& portable_micro_kernel<float>();
template const MicroKernel<double>& portable_micro_kernel<double>();

}  // namespace linneuron
