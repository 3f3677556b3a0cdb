// The register-blocked micro-kernel body shared by the SIMD families, written once over a vector-traits type.
//
// Each ISA translation unit (microkernel_avx2.cpp, microkernel_avx512.cpp) defines its traits in an anonymous
// namespace and instantiates `tile_kernel` with them, so every instantiation has internal linkage and is compiled
// with that file's target flags only. (Shared inline functions compiled with AVX-512 flags could otherwise be
// picked by the linker for the baseline code and crash on older CPUs; this header therefore calls nothing but
// the traits.)
//
// Shapes and layout are those of microkernel.h: an MR x (NV * V::kWidth) tile of C, accumulated over kc steps.
// Per k step the kernel loads NV vectors of B once and broadcasts each of the MR elements of A's column k, so it
// holds MR*NV accumulators, NV B vectors and one broadcast in registers.
#pragma once

#include <cstdint>

namespace linneuron {
namespace simd {

template <class V, int MR, int NV, bool kRowMajorA>
void tile_kernel(int64_t kc, const typename V::T* a, int64_t a_rs, int64_t a_cs, const typename V::T* b,
                 int64_t b_rs, typename V::T* c, int64_t c_rs, int64_t c_cs, int64_t m_valid, int64_t n_valid,
                 bool load_c, const typename V::T* bias, bool step) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::kWidth;

  R acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

  if (kRowMajorA) {
    // Row pointers stay in registers; each row is read sequentially, one element per k step.
    const T* rows[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) rows[i] = a + i * a_rs;
    for (int64_t p = 0; p < kc; ++p) {
      R bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * W);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        const R ai = V::broadcast(rows[i] + p);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
      }
      b += b_rs;
    }
  } else {
    for (int64_t p = 0; p < kc; ++p) {
      R bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * W);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        const R ai = V::broadcast(a + i);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
      }
      a += a_cs;
      b += b_rs;
    }
  }

  // Epilogue, in registers: [+ C] [+ bias] [then H]. Full vectors of a unit-stride C go straight to memory;
  // partial or strided ones pass through a small buffer so that nothing past the valid tile is touched.
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    if (i >= m_valid) break;
    T* c_row = c + i * c_rs;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const int64_t j0 = int64_t(v) * W;
      if (j0 >= n_valid) break;
      const int64_t count = n_valid - j0 < W ? n_valid - j0 : W;
      R x = acc[i][v];
      if (count == W && c_cs == 1) {
        if (load_c) x = V::add(x, V::load(c_row + j0));
        if (bias) x = V::add(x, V::load(bias + j0));
        if (step) x = V::step(x);
        V::store(c_row + j0, x);
      } else {
        alignas(64) T buf[W];
        if (load_c) {
          for (int l = 0; l < W; ++l) buf[l] = l < count ? c_row[(j0 + l) * c_cs] : T(0);
          x = V::add(x, V::load(buf));
        }
        if (bias) {
          for (int l = 0; l < W; ++l) buf[l] = l < count ? bias[j0 + l] : T(0);
          x = V::add(x, V::load(buf));
        }
        if (step) x = V::step(x);
        V::store(buf, x);
        for (int l = 0; l < count; ++l) c_row[(j0 + l) * c_cs] = buf[l];
      }
    }
  }
}

}  // namespace simd
}  // namespace linneuron
