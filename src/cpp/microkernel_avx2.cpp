// AVX2 + FMA micro-kernels (float32 6 x 16, float64 6 x 8): 12 ymm accumulators, two B vectors and one
// broadcast fill the 16 ymm registers. Compiled with -mavx2 -mfma and used only on CPUs that report both.
#include <immintrin.h>

#include "microkernel.h"
#include "microkernel_simd.h"

namespace linneuron {
namespace {

struct F32x8 {
  using T = float;
  using R = __m256;
  static constexpr int kWidth = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, R x) { _mm256_storeu_ps(p, x); }
  static void stream(T* p, R x) { _mm256_stream_ps(p, x); }  // p aligned to the vector
  static void store_fence() { _mm_sfence(); }
  static R broadcast(const T* p) { return _mm256_broadcast_ss(p); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R load_partial(const T* p, int count) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes));
  }
  static void store_partial(T* p, R x, int count) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes), x);
  }
  static T reduce(R x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // Lane q of the result: the sum of v[q]'s lanes, for 8 vectors at once, added in reduce's order (lanes j and j + 4,
  // then j + 2, j + 1): 15 shuffles and 7 adds for 8 sums.
  [[gnu::always_inline]] static R sum_lanes(const R v[8]) {
    R w[4], x[2];
    for (int p = 0; p < 4; ++p)  // 128-bit halves: [v2p (4), v2p+1 (4)]
      w[p] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * p], v[2 * p + 1], 0x20),
                           _mm256_permute2f128_ps(v[2 * p], v[2 * p + 1], 0x31));
    for (int p = 0; p < 2; ++p) {  // 64-bit pairs: block i holds v[4p + i] and v[4p + 2 + i], 2 lanes each
      const __m256d a = _mm256_castps_pd(w[2 * p]), b = _mm256_castps_pd(w[2 * p + 1]);
      x[p] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(a, b)), _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)));
    }
    // Lane 4i + t holds v[4(t / 2) + 2(t % 2) + i] (block 0: v0 v2 v4 v6, block 1: v1 v3 v5 v7).
    const R z = _mm256_add_ps(_mm256_shuffle_ps(x[0], x[1], 0x88), _mm256_shuffle_ps(x[0], x[1], 0xDD));
    return _mm256_permutevar8x32_ps(z, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  }
  static __m256i lane_times(int32_t stride) {
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
  }
  static R gather(const T* base, __m256i index) { return _mm256_i32gather_ps(base, index, 4); }
  // H(x): 1 where x >= 0 (also -0.0), 0 where x < 0, NaN kept.
  static R step(R x) {
    const R ge = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
    const R nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    return _mm256_blendv_ps(_mm256_and_ps(ge, _mm256_set1_ps(1.0f)), x, nan);
  }
};

struct F64x4 {
  using T = double;
  using R = __m256d;
  static constexpr int kWidth = 4;
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, R x) { _mm256_storeu_pd(p, x); }
  static void stream(T* p, R x) { _mm256_stream_pd(p, x); }  // p aligned to the vector
  static void store_fence() { _mm_sfence(); }
  static R broadcast(const T* p) { return _mm256_broadcast_sd(p); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R load_partial(const T* p, int count) {
    const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_maskload_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), lanes));
  }
  static void store_partial(T* p, R x, int count) {
    const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
    _mm256_maskstore_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), lanes), x);
  }
  static T reduce(R x) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(x), _mm256_extractf128_pd(x, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
  // F32x8::sum_lanes for 4 vectors of 4 lanes.
  [[gnu::always_inline]] static R sum_lanes(const R v[4]) {
    const R w0 = _mm256_add_pd(_mm256_permute2f128_pd(v[0], v[1], 0x20), _mm256_permute2f128_pd(v[0], v[1], 0x31));
    const R w1 = _mm256_add_pd(_mm256_permute2f128_pd(v[2], v[3], 0x20), _mm256_permute2f128_pd(v[2], v[3], 0x31));
    const R z = _mm256_add_pd(_mm256_unpacklo_pd(w0, w1), _mm256_unpackhi_pd(w0, w1));  // lanes: v0 v2 v1 v3
    return _mm256_permute4x64_pd(z, 0xD8);
  }
  static __m128i lane_times(int32_t stride) {
    return _mm_mullo_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32(stride));
  }
  static R gather(const T* base, __m128i index) { return _mm256_i32gather_pd(base, index, 8); }
  static R step(R x) {
    const R ge = _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_GE_OQ);
    const R nan = _mm256_cmp_pd(x, x, _CMP_UNORD_Q);
    return _mm256_blendv_pd(_mm256_and_pd(ge, _mm256_set1_pd(1.0)), x, nan);
  }
};

constexpr int kMR = 6;
constexpr int kNV = 2;
constexpr int kDotR = 2, kDotS = 4;  // dot tiles: 8 accumulators, 2 + 4 operand vectors
constexpr int kLongKRows1 = 12, kLongKRows2 = 6;  // long-k kernel: C rows in registers for n <= W, n <= 2W
constexpr int kTallCols = 4;  // tall kernel: 4 accumulators next to the 8 (f32) or 4 (f64) column registers

// In-register transposes for MicroKernel::pack_b_transposed: r[i] holds row i of a W x W block on entry and
// column i on exit (unpacks within 128-bit lanes, then lane swaps).
inline void transpose_block(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int h = 0; h < 2; ++h) {  // rows 4h .. 4h + 3
    __m256* q = r + 4 * h;
    t[4 * h] = _mm256_unpacklo_ps(q[0], q[1]);
    t[4 * h + 1] = _mm256_unpackhi_ps(q[0], q[1]);
    t[4 * h + 2] = _mm256_unpacklo_ps(q[2], q[3]);
    t[4 * h + 3] = _mm256_unpackhi_ps(q[2], q[3]);
    // u[4h + c], low lane: column c of rows 4h .. 4h + 3; high lane: column c + 4.
    u[4 * h] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
    u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
    u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

inline void transpose_block(__m256d r[4]) {
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
  r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
  r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
  r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

// Family<T>: the vector traits for element type T.
template <typename T>
struct Family;
template <>
struct Family<float> {
  using V = F32x8;
};
template <>
struct Family<double> {
  using V = F64x4;
};

// Columns of a dense row-major block (a_rs == K, a_cs == 1): col[p] lane l = block[l*K + p] for p < K, the W rows
// of the block being K whole vectors. K = 1 is one load; K = 2 one shuffle of two loads per column (rows come out
// as 0 1 4 5 2 3 6 7 and a 64-bit permute puts them back); other K load the W rows from their starts (each load
// reads up to W - K elements into the rows after the block, or ceil(K / W) vectors of the row for float64) and
// transpose them in registers.
template <int K>
inline void dense_columns(const float* block, __m256 col[8]) {
  if constexpr (K == 1) {
    col[0] = _mm256_loadu_ps(block);
  } else if constexpr (K == 2) {
    const __m256 v0 = _mm256_loadu_ps(block), v1 = _mm256_loadu_ps(block + 8);
    col[0] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(v0, v1, 0x88)), 0xD8));
    col[1] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(v0, v1, 0xDD)), 0xD8));
  } else {
#pragma GCC unroll 8
    for (int l = 0; l < 8; ++l) col[l] = _mm256_loadu_ps(block + l * K);
    transpose_block(col);
  }
}
template <int K>
inline void dense_columns(const double* block, __m256d col[8]) {
  if constexpr (K == 1) {
    col[0] = _mm256_loadu_pd(block);
  } else if constexpr (K == 2) {
    const __m256d v0 = _mm256_loadu_pd(block), v1 = _mm256_loadu_pd(block + 4);
    col[0] = _mm256_permute4x64_pd(_mm256_unpacklo_pd(v0, v1), 0xD8);
    col[1] = _mm256_permute4x64_pd(_mm256_unpackhi_pd(v0, v1), 0xD8);
  } else {
#pragma GCC unroll 2
    for (int h = 0; h < (K + 3) / 4; ++h) {
#pragma GCC unroll 4
      for (int l = 0; l < 4; ++l) col[4 * h + l] = _mm256_loadu_pd(block + l * K + 4 * h);
      transpose_block(col + 4 * h);
    }
  }
}

// MicroKernel::skinny for a dense row-major A (a_rs == k, a_cs == 1, k <= 8): the columns of W rows of A are formed
// in registers (dense_columns) once and serve all n outputs. AVX2 has no two-source permute (the AVX-512 family's
// dense kernel uses it), and on AMD's cores an eight-lane gather costs several times those shuffles: Zen 3, the
// forward 65536 x 2 -> 1 float32 ran at 0.38x of MKL with gathers (60 us for the gathers of one call alone, 13 us
// with shuffles). Blocks whose loads would read past A's end, and other layouts, take the gathering kernel; each
// output is the same FMA chain over k from zero in both, then [+ C] [+ bias] [H].
template <class V, int K>
void skinny_dense_k(int64_t m, int64_t n, const typename V::T* a, const typename V::T* b, int64_t b_rs, int64_t b_cs,
                    typename V::T* c, int64_t c_rs, int64_t c_cs, bool load_c, const typename V::T* bias,
                    int64_t bias_stride, bool step) {
  using R = typename V::R;
  constexpr int W = V::kWidth;
  // Elements read from a block's start: up to row W - 1's start plus a whole number of vectors.
  constexpr int64_t kReach = K <= 2 ? int64_t(K) * W : int64_t(W - 1) * K + int64_t((K + W - 1) / W) * W;
  const int64_t m_dense = m * K >= kReach ? ((m * K - kReach) / (W * K) + 1) * W : 0;
  for (int64_t i0 = 0; i0 < m_dense; i0 += W) {
    R col[8];
    dense_columns<K>(a + i0 * K, col);
    for (int64_t j = 0; j < n; ++j) {
      R x = V::zero();
#pragma GCC unroll 8
      for (int p = 0; p < K; ++p) x = V::fma(col[p], V::broadcast(b + p * b_rs + j * b_cs), x);
      simd::finish_column<V>(c + i0 * c_rs + j * c_cs, c_rs, x, load_c, bias ? bias + j * bias_stride : nullptr, step);
    }
  }
  if (m_dense < m)
    simd::skinny_rows<V>(m_dense, m, n, K, a, K, 1, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
}

template <class V>
void skinny_dense(int64_t m, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                  const typename V::T* b, int64_t b_rs, int64_t b_cs, typename V::T* c, int64_t c_rs, int64_t c_cs,
                  bool load_c, const typename V::T* bias, int64_t bias_stride, bool step) {
  if (a_cs == 1 && a_rs == k && n <= 8) {
    switch (k) {
      case 1: return skinny_dense_k<V, 1>(m, n, a, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
      case 2: return skinny_dense_k<V, 2>(m, n, a, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
      case 3: return skinny_dense_k<V, 3>(m, n, a, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
      case 4: return skinny_dense_k<V, 4>(m, n, a, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
      case 5: return skinny_dense_k<V, 5>(m, n, a, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
      case 6: return skinny_dense_k<V, 6>(m, n, a, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
      case 7: return skinny_dense_k<V, 7>(m, n, a, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
      case 8: return skinny_dense_k<V, 8>(m, n, a, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
      default: break;
    }
  }
  simd::skinny_block<V>(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
}

// Blocking: kc x nr B sliver (16 KiB f32 at kc = 256) in L1, mc x kc A block in L2, kc x nc B panel in L3.
// The tables are constant-initialised (no code with this file's target flags runs unless the CPU has the ISA).
template <typename T>
constexpr MicroKernel<T> kKernel{"avx2",
                                 kMR,
                                 kNV * Family<T>::V::kWidth,
                                 Family<T>::V::kWidth,
                                 sizeof(T) == 4 ? 240 : 120,
                                 256,
                                 sizeof(T) == 4 ? 4096 : 2048,
                                 &simd::tile_edges<typename Family<T>::V, kMR, kNV, false>,
                                 &simd::tile_edges<typename Family<T>::V, kMR, kNV, true>,
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
                                 &simd::pack_b_rows<typename Family<T>::V, kNV>,
                                 true};

}  // namespace

template <typename T>
const MicroKernel<T>& avx2_micro_kernel() {
  return kKernel<T>;
}

template const MicroKernel<float>& avx2_micro_kernel<float>();
template const MicroKernel<double>& avx2_micro_kernel<double>();

}  // namespace linneuron
