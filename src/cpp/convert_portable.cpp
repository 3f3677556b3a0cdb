// Baseline x86-64 / any-CPU conversion kernels for bfloat16 and float16 (no F16C): scalar loops the compiler may
// vectorise with the baseline instruction set.
#include <algorithm>

#include "convert.h"

namespace linneuron {
namespace {

void to_f32(LowpType t, int64_t n, const uint16_t* src, float* dst) {
  if (t == LowpType::BFloat16)
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
  else
    for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

void from_f32(LowpType t, int64_t n, const float* src, uint16_t* dst) {
  if (t == LowpType::BFloat16)
    for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
  else
    for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

// Eight partial sums per dot product, so the loop has independent chains (and a fixed summation order).
template <LowpType T>
void dot_rows_t(int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, const uint16_t* w, int64_t w_rs,
                float* c, int64_t c_rs) {
  constexpr int64_t kLanes = 8;
  float wf[256];
  for (int64_t j = j0; j < j1; ++j) {
    const uint16_t* row = w + j * w_rs;
    float acc[4][kLanes];
    for (int64_t i0 = 0; i0 < m; i0 += 4) {
      const int64_t mi = std::min<int64_t>(4, m - i0);
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t l = 0; l < kLanes; ++l) acc[i][l] = 0.0f;
      for (int64_t p0 = 0; p0 < k; p0 += 256) {  // convert a chunk of the W row once for all rows of A
        const int64_t len = std::min<int64_t>(256, k - p0);
        for (int64_t p = 0; p < len; ++p) wf[p] = lowp_to_f32(T, row[p0 + p]);
        for (int64_t i = 0; i < mi; ++i) {
          const float* ai = a + (i0 + i) * k + p0;
          for (int64_t p = 0; p < len; ++p) acc[i][p % kLanes] += ai[p] * wf[p];
        }
      }
      for (int64_t i = 0; i < mi; ++i) {
        float s = 0.0f;
        for (int64_t l = 0; l < kLanes; ++l) s += acc[i][l];
        c[(i0 + i) * c_rs + j] = s;
      }
    }
  }
}

void dot_rows(LowpType t, int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, const uint16_t* w,
              int64_t w_rs, float* c, int64_t c_rs) {
  if (t == LowpType::BFloat16)
    dot_rows_t<LowpType::BFloat16>(m, j0, j1, k, a, w, w_rs, c, c_rs);
  else
    dot_rows_t<LowpType::Float16>(m, j0, j1, k, a, w, w_rs, c, c_rs);
}

template <LowpType T>
void axpy_rows_t(int64_t rows, int64_t p0, int64_t p1, int64_t n, const float* coef, int64_t coef_rs,
                 const uint16_t* m, int64_t m_rs, float* acc) {
  for (int64_t p = p0; p < p1; ++p) {
    const uint16_t* mp = m + p * m_rs;
    for (int64_t r = 0; r < rows; ++r) {
      const float c = coef[r * coef_rs + p];
      float* a = acc + r * n;
      for (int64_t j = 0; j < n; ++j) a[j] += c * lowp_to_f32(T, mp[j]);
    }
  }
}

void axpy_rows(LowpType t, int64_t rows, int64_t p0, int64_t p1, int64_t n, const float* coef, int64_t coef_rs,
               const uint16_t* m, int64_t m_rs, float* acc) {
  if (t == LowpType::BFloat16)
    axpy_rows_t<LowpType::BFloat16>(rows, p0, p1, n, coef, coef_rs, m, m_rs, acc);
  else
    axpy_rows_t<LowpType::Float16>(rows, p0, p1, n, coef, coef_rs, m, m_rs, acc);
}

void outer_rows(LowpType t, int64_t rows, const float* a, const float* b, int64_t n, const float* bias,
                bool accumulate, bool step, uint16_t* c, int64_t c_rs) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < n; ++j)
      c[i * c_rs + j] = finish_element(t, a[i] * b[j], bias, j, accumulate, step, c[i * c_rs + j]);
}

}  // namespace

const LowpKernels& portable_lowp_kernels() {
  static const LowpKernels kernels{"portable", to_f32, from_f32, dot_rows, axpy_rows, outer_rows};
  return kernels;
}

}  // namespace linneuron
