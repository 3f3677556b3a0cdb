// AVX-512F micro-kernels (float32 12 x 32, float64 8 x 24): 24 zmm accumulators, B loaded once per k step and
// A broadcast from memory straight into the FMA. Compiled with -mavx512f and used only on CPUs that report it.
#include <immintrin.h>

#include "microkernel.h"
#include "microkernel_simd.h"

namespace linneuron {
namespace {

struct F32x16 {
  using T = float;
  using R = __m512;
  static constexpr int kWidth = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, R x) { _mm512_storeu_ps(p, x); }
  static void stream(T* p, R x) { _mm512_stream_ps(p, x); }  // p aligned to the vector
  static void store_fence() { _mm_sfence(); }
  static R broadcast(const T* p) { return _mm512_set1_ps(*p); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R load_partial(const T* p, int count) { return _mm512_maskz_loadu_ps(__mmask16((1u << count) - 1), p); }
  static void store_partial(T* p, R x, int count) { _mm512_mask_storeu_ps(p, __mmask16((1u << count) - 1), x); }
  static T reduce(R x) { return _mm512_reduce_add_ps(x); }
  // Lane q of the result: the sum of v[q]'s lanes, for 16 vectors at once, added in reduce's order (lanes j and j + 8,
  // then j + 4, j + 2, j + 1) so the bits are reduce's. Each level halves the vectors: 31 shuffles and 15 adds for 16
  // sums, against 64 of each for 16 reduces.
  [[gnu::always_inline]] static R sum_lanes(const R v[16]) {
    R w[8], x[4], y[2];
    for (int p = 0; p < 8; ++p)  // 256-bit halves: [v2p lanes j + j+8 (8), v2p+1 (8)]
      w[p] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0x44),
                           _mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0xEE));
    for (int p = 0; p < 4; ++p)  // 128-bit blocks: [v4p (4), v4p+1 (4), v4p+2 (4), v4p+3 (4)]
      x[p] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * p], w[2 * p + 1], 0x88),
                           _mm512_shuffle_f32x4(w[2 * p], w[2 * p + 1], 0xDD));
    for (int p = 0; p < 2; ++p) {  // 64-bit pairs: block i holds v[4(2p) + i] and v[4(2p + 1) + i], 2 lanes each
      const __m512d a = _mm512_castps_pd(x[2 * p]), b = _mm512_castps_pd(x[2 * p + 1]);
      y[p] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    // Lane 4i + t of the last sum holds v[4t + i]; one permute puts v[q] in lane q.
    const R z = _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x88), _mm512_shuffle_ps(y[0], y[1], 0xDD));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), z);
  }
  static __m512i lane_times(int32_t stride) {
    return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32(stride));
  }
  static R gather(const T* base, __m512i index) { return _mm512_i32gather_ps(index, base, 4); }
  using Mask = __mmask16;
  static __m512i index_vector(const int32_t* lanes) { return _mm512_loadu_si512(lanes); }
  static R permute2(R a, __m512i index, R b) { return _mm512_permutex2var_ps(a, index, b); }
  static R merge(R dst, Mask m, R src) { return _mm512_mask_mov_ps(dst, m, src); }
  // H(x): 1 where x >= 0 (also -0.0), 0 where x < 0, NaN kept.
  static R step(R x) {
    const __mmask16 ge = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_mov_ps(_mm512_maskz_mov_ps(ge, _mm512_set1_ps(1.0f)), nan, x);
  }
};

struct F64x8 {
  using T = double;
  using R = __m512d;
  static constexpr int kWidth = 8;
  static R zero() { return _mm512_setzero_pd(); }
  static R load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, R x) { _mm512_storeu_pd(p, x); }
  static void stream(T* p, R x) { _mm512_stream_pd(p, x); }  // p aligned to the vector
  static void store_fence() { _mm_sfence(); }
  static R broadcast(const T* p) { return _mm512_set1_pd(*p); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R load_partial(const T* p, int count) { return _mm512_maskz_loadu_pd(__mmask8((1u << count) - 1), p); }
  static void store_partial(T* p, R x, int count) { _mm512_mask_storeu_pd(p, __mmask8((1u << count) - 1), x); }
  static T reduce(R x) { return _mm512_reduce_add_pd(x); }
  // F32x16::sum_lanes for 8 vectors of 8 lanes: 15 shuffles and 7 adds for 8 sums.
  [[gnu::always_inline]] static R sum_lanes(const R v[8]) {
    R w[4], x[2];
    for (int p = 0; p < 4; ++p)  // 256-bit halves
      w[p] = _mm512_add_pd(_mm512_shuffle_f64x2(v[2 * p], v[2 * p + 1], 0x44),
                           _mm512_shuffle_f64x2(v[2 * p], v[2 * p + 1], 0xEE));
    for (int p = 0; p < 2; ++p)  // 128-bit blocks: [v4p (2), v4p+1 (2), v4p+2 (2), v4p+3 (2)]
      x[p] = _mm512_add_pd(_mm512_shuffle_f64x2(w[2 * p], w[2 * p + 1], 0x88),
                           _mm512_shuffle_f64x2(w[2 * p], w[2 * p + 1], 0xDD));
    // Lane 2i + t holds v[4t + i].
    const R z = _mm512_add_pd(_mm512_unpacklo_pd(x[0], x[1]), _mm512_unpackhi_pd(x[0], x[1]));
    return _mm512_permutexvar_pd(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), z);
  }
  static __m256i lane_times(int32_t stride) {
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
  }
  static R gather(const T* base, __m256i index) { return _mm512_i32gather_pd(index, base, 8); }
  using Mask = __mmask8;
  static __m512i index_vector(const int32_t* lanes) {
    return _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes)));
  }
  static R permute2(R a, __m512i index, R b) { return _mm512_permutex2var_pd(a, index, b); }
  static R merge(R dst, Mask m, R src) { return _mm512_mask_mov_pd(dst, m, src); }
  static R step(R x) {
    const __mmask8 ge = _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_GE_OQ);
    const __mmask8 nan = _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_mov_pd(_mm512_maskz_mov_pd(ge, _mm512_set1_pd(1.0)), nan, x);
  }
};

// Register tiles: float32 12 x 2 vectors (12 x 32), float64 8 x 3 vectors (8 x 24); 24 accumulators either way.
// float64 ran 4-7 % faster in 8 x 24 tiles than in 12 x 16 ones on a Xeon (AVX-512, 48 KiB L1d), on packed
// operands in the panel order (78-79 % of the FMA peak against 81-85 %; MKL's dgemm kernel is 24 x 8 too), while
// float32 ran alike in 12 x 32, 8 x 48 and 6 x 64 (86-88 %).
template <typename T>
constexpr int kMR = sizeof(T) == 4 ? 12 : 8;
template <typename T>
constexpr int kNV = sizeof(T) == 4 ? 2 : 3;
constexpr int kDotR = 4, kDotS = 4;  // dot tiles: 16 accumulators, 4 + 4 operand vectors
constexpr int kLongKRows1 = 16, kLongKRows2 = 8;  // long-k kernel: C rows in registers for n <= W, n <= 2W
constexpr int kTallCols = 8;  // tall kernel: 8 accumulators next to the 16 (f32) or 8 (f64) column registers

// MicroKernel::skinny for a dense row-major A (a_rs == k, a_cs == 1, k <= 8): W rows of A are k whole vectors,
// and column p of those rows is picked out of them with two-source permutes (element l*k + p of the block goes to
// lane l), several times cheaper than a gather. K is a template parameter so that everything stays in registers.
// Other layouts take the gathering kernel.
template <class V, int K>
void skinny_dense_k(int64_t m, int64_t n, const typename V::T* a, const typename V::T* b, int64_t b_rs, int64_t b_cs,
                    typename V::T* c, int64_t c_rs, int64_t c_cs, bool load_c, const typename V::T* bias,
                    int64_t bias_stride, bool step) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::kWidth;
  constexpr int kPairs = (K + 1) / 2;
  // For column p and vector pair t (elements [2tW, 2tW + 2W) of the block): lane l takes element l*K + p if it
  // falls in that pair, at position (l*K + p) mod 2W of the pair.
  __m512i index[K];
  typename V::Mask in_pair[K][kPairs];
  for (int p = 0; p < K; ++p) {
    alignas(64) int32_t lanes[W];
    for (int l = 0; l < W; ++l) lanes[l] = (l * K + p) % (2 * W);
    index[p] = V::index_vector(lanes);
    for (int t = 0; t < kPairs; ++t) {
      unsigned bits = 0;
      for (int l = 0; l < W; ++l) bits |= unsigned((l * K + p) / (2 * W) == t) << l;
      in_pair[p][t] = static_cast<typename V::Mask>(bits);
    }
  }
  const int64_t m_full = m - m % W;
  for (int64_t j = 0; j < n; ++j) {
    T w[K];
    for (int p = 0; p < K; ++p) w[p] = b[p * b_rs + j * b_cs];
    R w_vec[K];
#pragma GCC unroll 8
    for (int p = 0; p < K; ++p) w_vec[p] = V::broadcast(&w[p]);
    const R bias_vec = bias ? V::broadcast(bias + j * bias_stride) : V::zero();
    T* c_col = c + j * c_cs;
    for (int64_t i0 = 0; i0 < m_full; i0 += W) {
      const T* block = a + i0 * K;
      R v[2 * kPairs];
#pragma GCC unroll 8
      for (int q = 0; q < K; ++q) v[q] = V::load(block + q * W);
      if (K % 2) v[K] = V::zero();
      R x = bias_vec;
#pragma GCC unroll 8
      for (int p = 0; p < K; ++p) {
        R column = V::permute2(v[0], index[p], v[1]);
#pragma GCC unroll 4
        for (int t = 1; t < kPairs; ++t)
          column = V::merge(column, in_pair[p][t], V::permute2(v[2 * t], index[p], v[2 * t + 1]));
        x = V::fma(column, w_vec[p], x);
      }
      simd::finish_column<V>(c_col + i0 * c_rs, c_rs, x, load_c, nullptr, step);  // the bias is in x already
    }
  }
  if (m_full < m)  // the last rows: the gathering kernel's vector over the block's last W rows
    simd::skinny_rows<V>(m_full, m, n, K, a, K, 1, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
}

template <class V>
void skinny_dense(int64_t m, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                  const typename V::T* b, int64_t b_rs, int64_t b_cs, typename V::T* c, int64_t c_rs, int64_t c_cs,
                  bool load_c, const typename V::T* bias, int64_t bias_stride, bool step) {
  if (a_cs == 1 && a_rs == k && m >= V::kWidth) {
#define LINNEURON_SKINNY_CASE(K) \
  case K:                        \
    return skinny_dense_k<V, K>(m, n, a, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
    switch (k) {
      LINNEURON_SKINNY_CASE(1)
      LINNEURON_SKINNY_CASE(2)
      LINNEURON_SKINNY_CASE(3)
      LINNEURON_SKINNY_CASE(4)
      LINNEURON_SKINNY_CASE(5)
      LINNEURON_SKINNY_CASE(6)
      LINNEURON_SKINNY_CASE(7)
      LINNEURON_SKINNY_CASE(8)
      default:
        break;
    }
#undef LINNEURON_SKINNY_CASE
  }
  simd::skinny_block<V>(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
}

// In-register transposes for MicroKernel::pack_b_transposed: r[i] holds row i of a W x W block on entry and
// column i on exit. Three rounds of shuffles: within 128-bit lanes, then across lanes with shuffle_f32x4/f64x2.
inline void transpose_block(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4i + c], 128-bit lane L: column 4L + c of rows 4i .. 4i + 3.
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
    r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
    r[4 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
  }
}

inline void transpose_block(__m512d r[8]) {
  __m512d t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
  }
  // t[2i + c], 128-bit lane L: column 2L + c of rows 2i, 2i + 1.
  for (int c = 0; c < 2; ++c) {
    const __m512d v0 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0x88), v1 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0xDD);
    const __m512d w0 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0x88);
    const __m512d w1 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0xDD);
    r[c] = _mm512_shuffle_f64x2(v0, w0, 0x88);
    r[4 + c] = _mm512_shuffle_f64x2(v0, w0, 0xDD);
    r[2 + c] = _mm512_shuffle_f64x2(v1, w1, 0x88);
    r[6 + c] = _mm512_shuffle_f64x2(v1, w1, 0xDD);
  }
}

// Family<T>: the vector traits for element type T.
template <typename T>
struct Family;
template <>
struct Family<float> {
  using V = F32x16;
};
template <>
struct Family<double> {
  using V = F64x8;
};

// Blocking for 48 KiB L1d / 1 MiB L2: the kc x nr B sliver (32 KiB f32, 32 KiB f64 at kc = 256) stays in L1
// while A slivers stream from an mc x kc block in L2; the kc x nc B panel lives in L3.
// The tables are constant-initialised (no code with this file's target flags runs unless the CPU has the ISA).
template <typename T>
constexpr MicroKernel<T> kKernel{"avx512",
                                 kMR<T>,
                                 kNV<T> * Family<T>::V::kWidth,
                                 Family<T>::V::kWidth,
                                 sizeof(T) == 4 ? 240 : 120,
                                 256,
                                 sizeof(T) == 4 ? 4096 : 2048,
                                 &simd::tile_edges<typename Family<T>::V, kMR<T>, kNV<T>, false>,
                                 &simd::tile_edges<typename Family<T>::V, kMR<T>, kNV<T>, true>,
                                 &simd::dot_block<typename Family<T>::V, kDotR, kDotS>,
                                 &skinny_dense<typename Family<T>::V>,
                                 &simd::tall_block<typename Family<T>::V, &transpose_block, kTallCols>,
                                 kTallCols,
                                 &simd::long_k_block<typename Family<T>::V, kLongKRows1, kLongKRows2>,
                                 &simd::short_k_rows<typename Family<T>::V>,
                                 &simd::stream_rows<typename Family<T>::V>,
                                 &simd::fma_probe<typename Family<T>::V>,
                                 &simd::pack_b_transposed<typename Family<T>::V, &transpose_block>,
                                 &simd::transpose_out<typename Family<T>::V, &transpose_block>,
                                 &simd::pack_b_rows<typename Family<T>::V, kNV<T>>,
                                 true};

}  // namespace

template <typename T>
const MicroKernel<T>& avx512_micro_kernel() {
  return kKernel<T>;
}

template const MicroKernel<float>& avx512_micro_kernel<float>();
template const MicroKernel<double>& avx512_micro_kernel<double>();

}  // namespace linneuron
