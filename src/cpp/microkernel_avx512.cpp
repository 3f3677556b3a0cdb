// AVX-512F micro-kernels (float32 12 x 32, float64 12 x 16): 24 zmm accumulators, B loaded once per k step and
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
  static R broadcast(const T* p) { return _mm512_set1_ps(*p); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R load_partial(const T* p, int count) { return _mm512_maskz_loadu_ps(__mmask16((1u << count) - 1), p); }
  static T reduce(R x) { return _mm512_reduce_add_ps(x); }
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
  static R broadcast(const T* p) { return _mm512_set1_pd(*p); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R load_partial(const T* p, int count) { return _mm512_maskz_loadu_pd(__mmask8((1u << count) - 1), p); }
  static T reduce(R x) { return _mm512_reduce_add_pd(x); }
  static R step(R x) {
    const __mmask8 ge = _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_GE_OQ);
    const __mmask8 nan = _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_mov_pd(_mm512_maskz_mov_pd(ge, _mm512_set1_pd(1.0)), nan, x);
  }
};

constexpr int kMR = 12;
constexpr int kNV = 2;
constexpr int kDotR = 4, kDotS = 4;  // dot tiles: 16 accumulators, 4 + 4 operand vectors

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
constexpr MicroKernel<T> kKernel{
    "avx512", kMR, kNV * Family<T>::V::kWidth, sizeof(T) == 4 ? 240 : 120, 256, sizeof(T) == 4 ? 4096 : 2048,
    &simd::tile_kernel<typename Family<T>::V, kMR, kNV, false>, &simd::tile_kernel<typename Family<T>::V, kMR, kNV, true>,
    &simd::dot_block<typename Family<T>::V, kDotR, kDotS>, &simd::fma_probe<typename Family<T>::V>};

}  // namespace

template <typename T>
const MicroKernel<T>& avx512_micro_kernel() {
  return kKernel<T>;
}

template const MicroKernel<float>& avx512_micro_kernel<float>();
template const MicroKernel<double>& avx512_micro_kernel<double>();

}  // namespace linneuron
