// AVX2 + FMA + F16C conversion kernels: bfloat16 by 16-bit shifts (rounding to nearest even in integer
// arithmetic), float16 by vcvtph2ps / vcvtps2ph; and the matrix-vector kernel that converts W on load.
// Compiled with -mavx2 -mfma -mf16c and used only where cpuid reports all three.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "convert.h"

namespace linneuron {
namespace {

template <LowpType T>
inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (T == LowpType::BFloat16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  else
    return _mm256_cvtph_ps(h);
}

template <LowpType T>
inline __m128i round8(__m256 x) {
  if constexpr (T == LowpType::BFloat16) {
    const __m256i u = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb);  // ties to the even neighbour
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    const __m256i r = _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  } else {
    return _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
}

template <LowpType T>
void to_f32_t(int64_t n, const uint16_t* src, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8<T>(src + i));
  for (; i < n; ++i) dst[i] = lowp_to_f32(T, src[i]);
}

template <LowpType T>
void from_f32_t(int64_t n, const float* src, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), round8<T>(_mm256_loadu_ps(src + i)));
  if (i < n) {  // the tail through the same vector code, so every element rounds the same way
    alignas(32) float in[8] = {};
    alignas(16) uint16_t out[8];
    std::copy(src + i, src + n, in);
    _mm_store_si128(reinterpret_cast<__m128i*>(out), round8<T>(_mm256_load_ps(in)));
    std::copy(out, out + (n - i), dst + i);
  }
}

void to_f32(LowpType t, int64_t n, const uint16_t* src, float* dst) {
  if (t == LowpType::BFloat16)
    to_f32_t<LowpType::BFloat16>(n, src, dst);
  else
    to_f32_t<LowpType::Float16>(n, src, dst);
}

void from_f32(LowpType t, int64_t n, const float* src, uint16_t* dst) {
  if (t == LowpType::BFloat16)
    from_f32_t<LowpType::BFloat16>(n, src, dst);
  else
    from_f32_t<LowpType::Float16>(n, src, dst);
}

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// Loads 8 elements of W as float32: converted from 16 bits, or already float32 (a block converted once).
template <LowpType T, typename W>
inline __m256 load_w(const W* p) {
  if constexpr (std::is_same_v<W, float>)
    return _mm256_loadu_ps(p);
  else
    return load8<T>(p);
}
template <LowpType T, typename W>
inline float scalar_w(W v) {
  if constexpr (std::is_same_v<W, float>)
    return v;
  else
    return lowp_to_f32(T, v);
}

// Four rows of W against MB rows of A: 4*MB accumulators, each W vector loaded once and used MB times.
template <LowpType T, int MB, typename W>
void dot_block(int64_t k, const float* a, const W* w, int64_t w_rs, int64_t nw, float* c, int64_t c_rs) {
  __m256 acc[MB][4];
  for (int i = 0; i < MB; ++i)
    for (int r = 0; r < 4; ++r) acc[i][r] = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) {
    __m256 wv[4];
    for (int r = 0; r < 4; ++r) wv[r] = r < nw ? load_w<T>(w + r * w_rs + p) : _mm256_setzero_ps();
    for (int i = 0; i < MB; ++i) {
      const __m256 av = _mm256_loadu_ps(a + i * k + p);
      for (int r = 0; r < 4; ++r) acc[i][r] = _mm256_fmadd_ps(av, wv[r], acc[i][r]);
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int r = 0; r < nw; ++r) {
      float s = hsum(acc[i][r]);
      for (int64_t q = p; q < k; ++q) s += a[i * k + q] * scalar_w<T>(w[r * w_rs + q]);
      c[i * c_rs + r] = s;
    }
}

template <LowpType T, typename W>
void dot_rows_of(int64_t m, const float* a, const W* wj, int64_t w_rs, int64_t nw, int64_t k, float* c, int64_t c_rs) {
  int64_t i = 0;
  for (; i + 2 <= m; i += 2) dot_block<T, 2>(k, a + i * k, wj, w_rs, nw, c + i * c_rs, c_rs);
  if (i < m) dot_block<T, 1>(k, a + i * k, wj, w_rs, nw, c + i * c_rs, c_rs);
}

template <LowpType T>
void dot_rows_t(int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, const uint16_t* w, int64_t w_rs,
                float* c, int64_t c_rs) {
  // With more than two rows of A, each W block would be converted once per pair of rows: convert it once into
  // float32 (4 rows x k, in L1) instead, when it fits.
  constexpr int64_t kMaxBlockK = 1024;
  alignas(32) float block[4 * kMaxBlockK];
  const bool convert_block = m > 2 && k <= kMaxBlockK;
  for (int64_t j = j0; j < j1; j += 4) {
    const int64_t nw = std::min<int64_t>(4, j1 - j);
    const uint16_t* wj = w + j * w_rs;
    if (convert_block) {
      for (int64_t r = 0; r < nw; ++r) to_f32_t<T>(k, wj + r * w_rs, block + r * k);
      dot_rows_of<T>(m, a, static_cast<const float*>(block), k, nw, k, c + j, c_rs);
    } else {
      dot_rows_of<T>(m, a, wj, w_rs, nw, k, c + j, c_rs);
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

// Rows of M four at a time against R rows of coefficients: each accumulator vector is loaded and stored once per
// four rows of M, and each M vector converted once for all R rows. A missing row (p1 - p < 4) is skipped, not
// multiplied by zero (an infinite M would make NaN).
template <LowpType T, int R>
void axpy_rows_t(int64_t p0, int64_t p1, int64_t n, const float* coef, int64_t coef_rs, const uint16_t* m,
                 int64_t m_rs, float* acc) {
  for (int64_t p = p0; p < p1; p += 4) {
    const int np = static_cast<int>(std::min<int64_t>(4, p1 - p));
    float cs[R][4] = {};
    __m256 cv[R][4];
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < 4; ++q) {
        cs[r][q] = q < np ? coef[r * coef_rs + p + q] : 0.0f;
        cv[r][q] = _mm256_set1_ps(cs[r][q]);
      }
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      __m256 a[R];
      for (int r = 0; r < R; ++r) a[r] = _mm256_loadu_ps(acc + r * n + j);
      for (int q = 0; q < np; ++q) {
        const __m256 mv = load8<T>(m + (p + q) * m_rs + j);
        for (int r = 0; r < R; ++r) a[r] = _mm256_fmadd_ps(cv[r][q], mv, a[r]);
      }
      for (int r = 0; r < R; ++r) _mm256_storeu_ps(acc + r * n + j, a[r]);
    }
    for (; j < n; ++j)
      for (int r = 0; r < R; ++r) {
        float s = acc[r * n + j];
        for (int q = 0; q < np; ++q) s = std::fma(cs[r][q], lowp_to_f32(T, m[(p + q) * m_rs + j]), s);
        acc[r * n + j] = s;
      }
  }
}

void axpy_rows(LowpType t, int64_t rows, int64_t p0, int64_t p1, int64_t n, const float* coef, int64_t coef_rs,
               const uint16_t* m, int64_t m_rs, float* acc) {
  if (t == LowpType::BFloat16) {
    if (rows == 2)
      axpy_rows_t<LowpType::BFloat16, 2>(p0, p1, n, coef, coef_rs, m, m_rs, acc);
    else
      axpy_rows_t<LowpType::BFloat16, 1>(p0, p1, n, coef, coef_rs, m, m_rs, acc);
  } else {
    if (rows == 2)
      axpy_rows_t<LowpType::Float16, 2>(p0, p1, n, coef, coef_rs, m, m_rs, acc);
    else
      axpy_rows_t<LowpType::Float16, 1>(p0, p1, n, coef, coef_rs, m, m_rs, acc);
  }
}

template <LowpType T>
void outer_rows_t(int64_t rows, const float* a, const float* b, int64_t n, const float* bias, bool accumulate,
                  bool step, uint16_t* c, int64_t c_rs) {
  for (int64_t i = 0; i < rows; ++i) {
    uint16_t* out = c + i * c_rs;
    const __m256 ai = _mm256_set1_ps(a[i]);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      __m256 v = _mm256_mul_ps(ai, _mm256_loadu_ps(b + j));
      if (accumulate) v = _mm256_add_ps(load8<T>(out + j), v);
      if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
      if (step) {  // 1 where v >= 0, v where NaN, else 0 (unit_step)
        const __m256 fires = _mm256_and_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ), _mm256_set1_ps(1.0f));
        v = _mm256_blendv_ps(fires, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), round8<T>(v));
    }
    for (; j < n; ++j) out[j] = finish_element(T, a[i] * b[j], bias, j, accumulate, step, out[j]);
  }
}

void outer_rows(LowpType t, int64_t rows, const float* a, const float* b, int64_t n, const float* bias,
                bool accumulate, bool step, uint16_t* c, int64_t c_rs) {
  if (t == LowpType::BFloat16)
    outer_rows_t<LowpType::BFloat16>(rows, a, b, n, bias, accumulate, step, c, c_rs);
  else
    outer_rows_t<LowpType::Float16>(rows, a, b, n, bias, accumulate, step, c, c_rs);
}

}  // namespace

const LowpKernels& f16c_lowp_kernels() {
  static const LowpKernels kernels{"avx2+f16c", to_f32, from_f32, dot_rows, axpy_rows, outer_rows};
  return kernels;
}

}  // namespace linneuron
