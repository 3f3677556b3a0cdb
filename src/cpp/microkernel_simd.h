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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "microkernel.h"
#include "neuron_math.h"

namespace linneuron {
namespace simd {

template <class V, int MR, int NV, bool kRowMajorA, bool kPartialB>
void tile_kernel(int64_t kc, const typename V::T* a, int64_t a_rs, int64_t a_cs, const typename V::T* b, int64_t b_rs,
                 typename V::T* c, int64_t c_rs, int64_t c_cs, int64_t m_valid, int64_t n_valid, bool load_c,
                 const typename V::T* bias, bool step) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::kWidth;

  R acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

  // C tiles of a large product were last touched a whole k block ago and live in L3 or memory. Two sets of
  // prefetches hide that latency: this tile's rows into L1 now (the kc-long loop below covers an L2 hit), and the
  // rows of the tile below it, the one the driver's row loop computes next, into L2 over the first 2 MR k steps,
  // one line per step so the misses do not queue up at once. Prefetches never fault, so the tile below may lie
  // past the end of C (its address is formed as an integer, so no out-of-range pointer exists; __builtin_prefetch
  // is a compiler builtin, not a linked function). Measured on Zen 5 with the C tiles of a 672 x 4096 block in L3:
  // 71-75 % of the FMA peak with only the first set, 83-85 % with both.
  if (c_cs == 1) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      if (i >= m_valid) break;
      __builtin_prefetch(c + i * c_rs, 1, 3);
      __builtin_prefetch(c + i * c_rs + (n_valid - 1), 1, 3);
    }
  }
  const uintptr_t c_next = reinterpret_cast<uintptr_t>(c) + uintptr_t(MR * c_rs) * sizeof(T);
  const uintptr_t c_row_bytes = uintptr_t(c_rs) * sizeof(T), c_last_bytes = uintptr_t(n_valid - 1) * sizeof(T);
  // Not over a short k block (under kMinSpreadK steps), whose tile is done long before the driver comes to the
  // tile below, and whose loop the prefetches would lengthen by a good part (Zen 3, 239 x 9 -> 336 float32 +15 %,
  // 151 x 48 -> 606 +10 %, 50983 x 41 -> 240 alike).
  constexpr int64_t kMinSpreadK = 96;
  const int64_t p_spread =
      c_cs == 1 && kc >= kMinSpreadK && (c_row_bytes % 4096) != 0 ? (kc < 2 * MR ? kc : 2 * MR) : 0;

  // Row-major A: row pointers stay in registers; each row is read sequentially, one element per k step.
  // Packed (or column-major) A: both operands stream linearly, A from L2 and B, on the first A sliver of each
  // B sliver, from L3. Software prefetches a few steps ahead cover the latency the hardware prefetcher leaves
  // at the start of each stream; the load ports have room for them next to the 2 + MR operand loads. A column of
  // a packed A sliver wider than a cache line (float64: 96 bytes) gets a second prefetch for its last element, or
  // every third line of the stream would be left to the hardware prefetcher.
  constexpr int64_t kAheadA = 16, kAheadB = 8;  // k steps; measured on Zen 3 (AVX2) with 6 x 16 tiles
  // Rows past m_valid of a row-major A repeat the last valid one: their sums are never stored, and no row of A
  // outside the tile is read (so an edge tile runs on A in place, not on a padded copy).
  const T* rows[MR];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) rows[i] = a + (i < m_valid ? i : m_valid - 1) * a_rs;
  // kPartialB: the last vector of B's row is cut at n_valid (masked loads, which read nothing past it), so the
  // edge sliver of a B read in place needs no padded copy.
  const int last_lanes = static_cast<int>(n_valid - int64_t(NV - 1) * W);
  // Row-major A of more than 8 rows, all valid: row i read at group[i / 4] + (i % 4) * a_rs, the group pointers
  // moving one element a k step. x86 addresses base + index * scale, so a group of four rows takes one pointer next
  // to the strides a_rs and 3 a_rs (2 a_rs is a scale of a_rs), where a pointer a row took MR registers, more than
  // the loop had beside B's, its count and the prefetch addresses: the compiler kept some on the stack and reloaded
  // them every k step. Xeon, AVX-512 float32 12 x 32, A and B in L1: 87 -> 93 % of the FMA peak at k = 450, 12 x 16
  // 71 -> 76 %; dX of k = 20-80 (the tiles over a row-major dY) 3-5 % faster.
  constexpr bool kGroupedRows = kRowMajorA && MR > 8;
  constexpr int kGroups = (MR + 3) / 4;
  const T* group[kGroups];
#pragma GCC unroll 8
  for (int g = 0; g < kGroups; ++g) group[g] = a + int64_t(4 * g) * a_rs;
  const int64_t a_rs3 = 3 * a_rs;
  auto steps = [&](int64_t p, int64_t p_end, auto spread, auto in_groups) {
    if (decltype(in_groups)::value) {
#pragma GCC unroll 8
      for (int g = 0; g < kGroups; ++g) group[g] += p;
    }
#pragma GCC unroll 4
    for (; p < p_end; ++p) {
      if (decltype(spread)::value)
        __builtin_prefetch(reinterpret_cast<const void*>(c_next + uintptr_t(p >> 1) * c_row_bytes +
                                                         uintptr_t(p & 1) * c_last_bytes),
                           1, 2);
      if (!kRowMajorA) {
        __builtin_prefetch(a + kAheadA * a_cs, 0, 3);
        if (MR * sizeof(T) > 64) __builtin_prefetch(a + kAheadA * a_cs + (MR - 1), 0, 3);
        __builtin_prefetch(b + kAheadB * b_rs, 0, 3);
      }
      R bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        bv[v] = kPartialB && v == NV - 1 ? V::load_partial(b + v * W, last_lanes) : V::load(b + v * W);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        const R ai = decltype(in_groups)::value
                         ? V::broadcast(group[i / 4] + (i % 4 == 3 ? a_rs3 : (i % 4) * a_rs))
                         : kRowMajorA ? V::broadcast(rows[i] + p) : V::broadcast(a + i);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
      }
      if (!kRowMajorA) a += a_cs;
      if (decltype(in_groups)::value) {
#pragma GCC unroll 8
        for (int g = 0; g < kGroups; ++g) group[g] += 1;
      }
      b += b_rs;
    }
    if (decltype(in_groups)::value) {
#pragma GCC unroll 8
      for (int g = 0; g < kGroups; ++g) group[g] -= p_end;
    }
  };
  // Two direct calls a branch: with the pair wrapped in one more lambda, GCC 12 kept the accumulators in memory
  // (every tile 2x slower).
  if (kGroupedRows && m_valid == MR) {
    steps(0, p_spread, std::true_type{}, std::bool_constant<kGroupedRows>{});
    steps(p_spread, kc, std::false_type{}, std::bool_constant<kGroupedRows>{});
  } else {
    steps(0, p_spread, std::true_type{}, std::false_type{});
    steps(p_spread, kc, std::false_type{}, std::false_type{});
  }

  // Epilogue, in registers: [+ C] [+ bias] [then H]. Vectors of a unit-stride C go straight to memory (partial
  // ones masked); strided ones pass through a small buffer so that nothing past the valid tile is touched.
  // A whole tile of a unit-stride C takes a path without the per-vector checks of edges and strides, which cost as
  // much as a short k block's FMAs (Zen 3, 239 x 9 -> 336 float32: 1.13x with this path, 1.02-1.04x at k 21-37).
  if (!kPartialB && c_cs == 1 && m_valid == MR && n_valid == NV * W) {
    R bias_v[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bias_v[v] = bias ? V::load(bias + v * W) : V::zero();
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      T* c_row = c + i * c_rs;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        R x = acc[i][v];
        if (load_c) x = V::add(x, V::load(c_row + v * W));
        if (bias) x = V::add(x, bias_v[v]);
        if (step) x = V::step(x);
        V::store(c_row + v * W, x);
      }
    }
    return;
  }
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
      } else if (c_cs == 1) {
        // A partial vector of a unit-stride C (the last columns, or an n below one vector): masked loads and
        // stores touch only the valid elements.
        const int lanes = static_cast<int>(count);
        if (load_c) x = V::add(x, V::load_partial(c_row + j0, lanes));
        if (bias) x = V::add(x, V::load_partial(bias + j0, lanes));
        if (step) x = V::step(x);
        V::store_partial(c_row + j0, x, lanes);
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

// The micro-kernel entry of the tile drivers: an edge tile (the last columns of a product whose n is not a multiple
// of nr, the last rows of one whose m is not a multiple of mr) runs the smallest register tile that covers it, one
// vector narrower or four rows shorter at a time (one row with a row-major A, see below), instead of computing the
// whole tile and masking the stores. The
// operands' layout does not change (a narrower tile reads the first vectors of each B row, a shorter one the first
// rows of A), nor does any element's sum (the same FMA chain over k from zero), so results are the same bits. Xeon,
// 68 x 484 -> 38 float64 (tiles of 12 x 16 then: the last sliver 6 columns wide, the last strip 8 rows tall): the
// whole tile wasted a quarter of the FMAs.
template <class V, int MR, int NV, bool kRowMajorA>
void tile_edges(int64_t kc, const typename V::T* a, int64_t a_rs, int64_t a_cs, const typename V::T* b, int64_t b_rs,
                typename V::T* c, int64_t c_rs, int64_t c_cs, int64_t m_valid, int64_t n_valid, bool load_c,
                const typename V::T* bias, bool step) {
  if constexpr (NV > 1) {
    if (n_valid <= (NV - 1) * V::kWidth)
      return tile_edges<V, MR, NV - 1, kRowMajorA>(kc, a, a_rs, a_cs, b, b_rs, c, c_rs, c_cs, m_valid, n_valid, load_c,
                                                   bias, step);
  }
  // A row-major A is read in place to its last valid row (the driver copies no edge of it), so its edge tiles can
  // have exactly the valid rows (a batch of 5 rows: 5 broadcasts a k step, not 8) -- down to the tile whose
  // accumulators still cover the FMA latency (kMinChains); fewer rows would wait on their chains as long.
  constexpr int kMinChains = 8;
  constexpr int kStep = kRowMajorA ? 1 : kTileEdgeRowStep;
  if constexpr (MR > kStep && (!kRowMajorA || (MR - 1) * NV >= kMinChains)) {
    if (m_valid <= MR - kStep)
      return tile_edges<V, MR - kStep, NV, kRowMajorA>(kc, a, a_rs, a_cs, b, b_rs, c, c_rs, c_cs, m_valid, n_valid,
                                                       load_c, bias, step);
  }
  if (n_valid < NV * V::kWidth)
    tile_kernel<V, MR, NV, kRowMajorA, true>(kc, a, a_rs, a_cs, b, b_rs, c, c_rs, c_cs, m_valid, n_valid, load_c, bias,
                                             step);
  else
    tile_kernel<V, MR, NV, kRowMajorA, false>(kc, a, a_rs, a_cs, b, b_rs, c, c_rs, c_cs, m_valid, n_valid, load_c,
                                              bias, step);
}

}  // namespace simd
}  // namespace linneuron

namespace linneuron {
namespace simd {

constexpr int64_t kDotAhead = 512;  // bytes; Zen 5, 53340x906->2 float32 from memory: 8.5 -> 7.9 ms
// Into L1 and L2 (prefetcht0), not non-temporal: on Intel (Xeon, 2 MiB L2) a prefetchnta line skips L2, so a row
// block re-read for the next column tile came back from L3 at a third of the speed (2663x659->19 float64 0.52 ->
// 0.74x torch, 40246x713->1 0.57 -> 0.97x).
constexpr int kDotLocality = 3;

// Sums of R x S dot products of length k: out[r][s] = sum_p a[r*a_rs + p] * b[s*b_cs + p]. Vectors run along k
// (both operands are contiguous there); the last partial vector is read with a masked load, so nothing past
// element k-1 of a row is touched. Each accumulator is reduced to a scalar once at the end. The operand that streams
// through the block (kStreamB: B, whose rows are W's when the batch is short; else A) is prefetched kDotAhead bytes
// ahead in each of its rows, the other one stays in L1 (Xeon, B prefetched too: 2 x 327 -> 1022 float32 and
// 3 x 341 -> 444 float64 +8-10 %; A's rows of a tall product prefetched alone, as before).
template <class V, int R, int S, bool kStreamB>
inline void dot_tile(int64_t k, const typename V::T* a, int64_t a_rs, const typename V::T* b, int64_t b_cs,
                     typename V::T out[R][S]) {
  using R_ = typename V::R;
  constexpr int W = V::kWidth;
  R_ acc[R][S];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int s = 0; s < S; ++s) acc[r][s] = V::zero();
  int64_t p = 0;
  for (; p + W <= k; p += W) {
    R_ av[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      if (!kStreamB) __builtin_prefetch(a + r * a_rs + p + kDotAhead / sizeof(typename V::T), 0, kDotLocality);
      av[r] = V::load(a + r * a_rs + p);
    }
#pragma GCC unroll 16
    for (int s = 0; s < S; ++s) {
      if (kStreamB) __builtin_prefetch(b + s * b_cs + p + kDotAhead / sizeof(typename V::T), 0, kDotLocality);
      R_ bv = V::load(b + s * b_cs + p);
      // Kept in a register: GCC otherwise folds this load into each of the R FMAs, R loads of one vector, and the
      // tile turns load-bound (Xeon: 2x395->429 0.68 -> 0.89x MKL, 3x327->164 float64 0.66 -> 0.97x).
      __asm__("" : "+v"(bv));
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r][s] = V::fma(av[r], bv, acc[r][s]);
    }
  }
  if (p < k) {
    const int count = static_cast<int>(k - p);
    R_ av[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) av[r] = V::load_partial(a + r * a_rs + p, count);
#pragma GCC unroll 16
    for (int s = 0; s < S; ++s) {
      const R_ bv = V::load_partial(b + s * b_cs + p, count);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r][s] = V::fma(av[r], bv, acc[r][s]);
    }
  }
  if constexpr (R * S >= W / 2) {
    // Many sums at once through the family's sum_lanes (a halving tree of shuffles, the same additions as reduce's,
    // so the same bits in any tile shape), W accumulators at a time: a short k is mostly these reductions (Xeon,
    // 5 x 57 -> 433 float32: 4 FMAs an output against 8 shuffles and adds of a reduce each).
    constexpr int kGroups = (R * S + W - 1) / W;
    alignas(64) typename V::T sums[kGroups * W];
#pragma GCC unroll 4
    for (int g = 0; g < kGroups; ++g) {
      R_ v[W];
#pragma GCC unroll 16
      for (int q = 0; q < W; ++q) v[q] = g * W + q < R * S ? acc[(g * W + q) / S][(g * W + q) % S] : V::zero();
      V::store(sums + g * W, V::sum_lanes(v));
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int s = 0; s < S; ++s) out[r][s] = sums[r * S + s];
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int s = 0; s < S; ++s) out[r][s] = V::reduce(acc[r][s]);
  }
}

template <class V, int R, int S, bool kStreamB>
inline void dot_tile_store(int64_t k, const typename V::T* a, int64_t a_rs, const typename V::T* b, int64_t b_cs,
                           typename V::T* c, int64_t c_rs, int64_t c_cs, bool load_c, const typename V::T* bias,
                           int64_t bias_stride, bool step) {
  using T = typename V::T;
  T sums[R][S];
  dot_tile<V, R, S, kStreamB>(k, a, a_rs, b, b_cs, sums);
  for (int r = 0; r < R; ++r)
    for (int s = 0; s < S; ++s) {
      T v = sums[r][s];
      T& dst = c[r * c_rs + s * c_cs];
      if (load_c) v += dst;
      if (bias) v += bias[s * bias_stride];
      if (step) v = unit_step(v);
      dst = v;
    }
}

// dot_tile_store with S = cols (1 <= cols <= S): the edge columns of a block in one tile rather than one tile each,
// so that A's rows are read once for them (36327 x 152 -> 3 float32 read its 22 MB three times: 0.5x torch).
template <class V, int R, int S, bool kStreamB>
inline void dot_tile_cols(int cols, int64_t k, const typename V::T* a, int64_t a_rs, const typename V::T* b,
                          int64_t b_cs, typename V::T* c, int64_t c_rs, int64_t c_cs, bool load_c,
                          const typename V::T* bias, int64_t bias_stride, bool step) {
  if constexpr (S > 1) {
    if (cols < S)
      return dot_tile_cols<V, R, S - 1, kStreamB>(cols, k, a, a_rs, b, b_cs, c, c_rs, c_cs, load_c, bias,
                                                  bias_stride, step);
  }
  dot_tile_store<V, R, S, kStreamB>(k, a, a_rs, b, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
}

// dot_tile_cols with R = rows (1 <= rows <= R) as well: the edge rows of a block in one tile, so that B's columns are
// read once for them (3 x 327 -> 164 float64 on a Xeon, one row at a time: 0.61x MKL, in one tile 0.68x). Every
// output is the same sum in any tile shape (its own accumulator over the same vectors, reduced the same way).
template <class V, int R, int S, bool kStreamB>
inline void dot_tile_rows(int rows, int cols, int64_t k, const typename V::T* a, int64_t a_rs, const typename V::T* b,
                          int64_t b_cs, typename V::T* c, int64_t c_rs, int64_t c_cs, bool load_c,
                          const typename V::T* bias, int64_t bias_stride, bool step) {
  if constexpr (R > 1) {
    if (rows < R)
      return dot_tile_rows<V, R - 1, S, kStreamB>(rows, cols, k, a, a_rs, b, b_cs, c, c_rs, c_cs, load_c, bias,
                                                  bias_stride, step);
  }
  dot_tile_cols<V, R, S, kStreamB>(cols, k, a, a_rs, b, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
}

// One output column (n == 1: a matrix-vector product with a row-major A, the backward dX = dY W of a one-input
// layer) for `rows` <= W rows: out[i] = sum_p a[i*a_rs + p] * b[p]. One accumulator vector per row along k, then
// the family's sum_lanes adds up all W accumulators at once, so the W row sums come out as one vector: a horizontal
// reduction per row (about 8 dependent instructions) was the whole cost when k is short (52502 x 9 -> 1 float32:
// 2x torch's time). Rows past `rows` read as zeros and are not stored. Every row's lanes are added in the same
// order wherever the row falls in a block, so results do not depend on how rows are split between threads.
template <class V>
inline void dot_column(int rows, int64_t k, const typename V::T* a, int64_t a_rs, const typename V::T* b,
                       typename V::T* c, int64_t c_rs, bool load_c, const typename V::T* bias, bool step) {
  using T = typename V::T;
  using R_ = typename V::R;
  constexpr int W = V::kWidth;
  R_ acc[W];
#pragma GCC unroll 16
  for (int i = 0; i < W; ++i) acc[i] = V::zero();
  int64_t p = 0;
  for (; p + W <= k; p += W) {
    const R_ bv = V::load(b + p);
#pragma GCC unroll 16
    for (int i = 0; i < W; ++i) {
      if (i >= rows) break;
      if (kDotAhead) __builtin_prefetch(a + i * a_rs + p + kDotAhead / sizeof(T), 0, kDotLocality);
      acc[i] = V::fma(V::load(a + i * a_rs + p), bv, acc[i]);
    }
  }
  if (p < k) {
    const int count = static_cast<int>(k - p);
    const R_ bv = V::load_partial(b + p, count);
#pragma GCC unroll 16
    for (int i = 0; i < W; ++i) {
      if (i >= rows) break;
      acc[i] = V::fma(V::load_partial(a + i * a_rs + p, count), bv, acc[i]);
    }
  }
  R_ sum = V::sum_lanes(acc);
  alignas(64) T buf[W];
  if (c_rs == 1) {
    if (load_c) sum = V::add(sum, rows == W ? V::load(c) : V::load_partial(c, rows));
  } else if (load_c) {
    for (int i = 0; i < W; ++i) buf[i] = i < rows ? c[i * c_rs] : T(0);
    sum = V::add(sum, V::load(buf));
  }
  if (bias) sum = V::add(sum, V::broadcast(bias));
  if (step) sum = V::step(sum);
  if (c_rs == 1) {
    if (rows == W)
      V::store(c, sum);
    else
      V::store_partial(c, sum, rows);
  } else {
    V::store(buf, sum);
    for (int i = 0; i < rows; ++i) c[i * c_rs] = buf[i];
  }
}

// The whole m x n block of microkernel.h's DotKernelFn, in R x S tiles; the edge rows and columns in smaller ones.
// The smaller operand is the one re-read: with a short batch (m < n) the loop over W's rows is outermost, so W
// streams through once while the few rows of A stay in cache; with few outputs it is the other way round. A single
// column (n == 1) goes to dot_column in blocks of W rows.
template <class V, int R, int S>
void dot_block(int64_t m, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, const typename V::T* b,
               int64_t b_cs, typename V::T* c, int64_t c_rs, int64_t c_cs, bool load_c, const typename V::T* bias,
               int64_t bias_stride, bool step) {
  constexpr int W = V::kWidth;
  if (n == 1) {
    for (int64_t i = 0; i < m; i += W)
      dot_column<V>(static_cast<int>(m - i < W ? m - i : W), k, a + i * a_rs, a_rs, b, c + i * c_rs, c_rs, load_c,
                    bias, step);
    return;
  }
  // The last rows and the last columns each in one tile: no row or column is read more often than a full tile's.
  const int64_t m_full = m - m % R, n_full = n - n % S;
  const int edge_rows = static_cast<int>(m - m_full), edge_cols = static_cast<int>(n - n_full);
  auto tile = [&](int64_t i, int64_t j, auto stream_b) {
    const int rows = i < m_full ? R : edge_rows;
    const int cols = j < n_full ? S : edge_cols;
    const auto* bj = b + j * b_cs;
    auto* cij = c + i * c_rs + j * c_cs;
    const auto* bias_j = bias ? bias + j * bias_stride : nullptr;
    dot_tile_rows<V, R, S, decltype(stream_b)::value>(rows, cols, k, a + i * a_rs, a_rs, bj, b_cs, cij, c_rs, c_cs,
                                                      load_c, bias_j, bias_stride, step);
  };
  if (m < n) {
    for (int64_t j = 0; j < n; j += S)
      for (int64_t i = 0; i < m; i += R) tile(i, j, std::true_type{});
  } else {
    for (int64_t i = 0; i < m; i += R)
      for (int64_t j = 0; j < n; j += S) tile(i, j, std::false_type{});
  }
}

// MicroKernel::fma_probe: 12 independent accumulator chains cover the FMA latency times the FMA ports
// (4 cycles x 2 ports on current x86 cores), so the loop runs at the FMA issue rate.
template <class V>
int64_t fma_probe(int64_t iterations, typename V::T* sink) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int kChains = 12;
  T one_ish = T(1) - T(1) / T(1 << 20), tiny = T(1) / T(1 << 20);
  const R x = V::broadcast(&one_ish), y = V::broadcast(&tiny);
  R acc[kChains];
  // Distinct starting values: identical chains would be merged into one by the compiler.
#pragma GCC unroll 16
  for (int c = 0; c < kChains; ++c) {
    const T start = T(c) * tiny;
    acc[c] = V::broadcast(&start);
  }
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = V::fma(acc[c], x, y);
  }
#pragma GCC unroll 16
  for (int c = 1; c < kChains; ++c) acc[0] = V::add(acc[0], acc[c]);
  *sink = V::reduce(acc[0]);
  return iterations * kChains * V::kWidth * 2;
}

// The epilogue of V::kWidth consecutive rows of one column of C (rows c_rs apart; a strided column passes through a
// buffer): [+ C] [+ the bias element] [then H], then stored.
template <class V>
inline void finish_column(typename V::T* column, int64_t c_rs, typename V::R x, bool load_c, const typename V::T* bias,
                          bool step) {
  using T = typename V::T;
  constexpr int W = V::kWidth;
  alignas(64) T buf[W];
  if (load_c) {
    if (c_rs == 1) {
      x = V::add(x, V::load(column));
    } else {
      for (int l = 0; l < W; ++l) buf[l] = column[l * c_rs];
      x = V::add(x, V::load(buf));
    }
  }
  if (bias) x = V::add(x, V::broadcast(bias));
  if (step) x = V::step(x);
  if (c_rs == 1) {
    V::store(column, x);
  } else {
    V::store(buf, x);
    for (int l = 0; l < W; ++l) column[l * c_rs] = buf[l];
  }
}

// finish_column for lanes `first` .. W - 1 only: a vector of rows whose first lanes hold rows stored already (the
// last, overlapping vector of skinny_rows). The same operations in the same order as finish_column, lane by lane.
template <class V>
inline void finish_column_lanes(typename V::T* column, int64_t c_rs, typename V::R x, int first, bool load_c,
                                const typename V::T* bias, bool step) {
  using T = typename V::T;
  alignas(64) T buf[V::kWidth];
  V::store(buf, x);
  for (int l = first; l < V::kWidth; ++l) {
    T v = buf[l];
    if (load_c) v += column[l * c_rs];
    if (bias) v += *bias;
    if (step) v = unit_step(v);
    column[l * c_rs] = v;
  }
}

// MicroKernel::skinny on rows [first, m) of a block of m rows (a, c: the block's row 0; every row of it readable):
// vectors of V::kWidth rows; up to four columns of C per pass over A's rows. A column of A is gathered (lane l reads
// row i0 + l), B's elements are broadcast. Rows past the last full vector are the block's last W rows once more,
// stored only in the lanes of the rows not yet written, so every output is the same chain of FMAs from zero; one
// at a time, like that chain, only where the block is shorter than a vector. (Those rows went one at a time
// always: 14 of dX 78 x 490 -> 4 float32's rows took 35 of its 49 us, a dependent scalar FMA per step; MKL 16 us.)
template <class V>
void skinny_rows(int64_t first, int64_t m, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                 const typename V::T* b, int64_t b_rs, int64_t b_cs, typename V::T* c, int64_t c_rs, int64_t c_cs,
                 bool load_c, const typename V::T* bias, int64_t bias_stride, bool step) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::kWidth;
  constexpr int kCols = 4;
  const auto rows_index = V::lane_times(static_cast<int32_t>(a_rs));
  const int64_t m_full = first + (m - first) / W * W;
  const bool overlap = m_full < m && m >= W;
  for (int64_t j0 = 0; j0 < n; j0 += kCols) {
    const int cols = static_cast<int>(n - j0 < kCols ? n - j0 : kCols);
    // The vector of rows i0 .. i0 + W - 1, stored from lane first_lane on.
    auto rows_vector = [&](int64_t i0, int first_lane) {
      R acc[kCols];
#pragma GCC unroll 4
      for (int jj = 0; jj < kCols; ++jj) acc[jj] = V::zero();
      const T* a_rows = a + i0 * a_rs;
      for (int64_t p = 0; p < k; ++p) {
        const R column = V::gather(a_rows + p * a_cs, rows_index);
        const T* b_row = b + p * b_rs + j0 * b_cs;
#pragma GCC unroll 4
        for (int jj = 0; jj < kCols; ++jj)
          if (jj < cols) acc[jj] = V::fma(column, V::broadcast(b_row + jj * b_cs), acc[jj]);
      }
#pragma GCC unroll 4
      for (int jj = 0; jj < kCols; ++jj) {
        if (jj >= cols) break;
        T* column = c + i0 * c_rs + (j0 + jj) * c_cs;
        const T* bias_j = bias ? bias + (j0 + jj) * bias_stride : nullptr;
        if (first_lane == 0)
          finish_column<V>(column, c_rs, acc[jj], load_c, bias_j, step);
        else
          finish_column_lanes<V>(column, c_rs, acc[jj], first_lane, load_c, bias_j, step);
      }
    };
    for (int64_t i0 = first; i0 < m_full; i0 += W) rows_vector(i0, 0);
    if (overlap) rows_vector(m - W, static_cast<int>(W - (m - m_full)));
  }
  if (overlap) return;
  for (int64_t i = m_full; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      T v = T(0);
      for (int64_t p = 0; p < k; ++p) v = std::fma(a[i * a_rs + p * a_cs], b[p * b_rs + j * b_cs], v);
      T& dst = c[i * c_rs + j * c_cs];
      if (load_c) v += dst;
      if (bias) v += bias[j * bias_stride];
      if (step) v = unit_step(v);
      dst = v;
    }
}

// MicroKernel::skinny: skinny_rows on the whole block.
template <class V>
void skinny_block(int64_t m, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                  const typename V::T* b, int64_t b_rs, int64_t b_cs, typename V::T* c, int64_t c_rs, int64_t c_cs,
                  bool load_c, const typename V::T* bias, int64_t bias_stride, bool step) {
  skinny_rows<V>(0, m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, c_cs, load_c, bias, bias_stride, step);
}

// MicroKernel::tall: a tall product with few outputs and a row-major A (a_cs == 1; n <= 16, any k), such as the
// forward 52708 x 16 -> 2. Vectors run along m: W rows of A are loaded k-block by k-block as W vectors, transposed
// in registers (the family's Transpose, as in pack_b_transposed below) into W columns, and each column is
// multiplied by broadcast elements of B into one accumulator per output column. So A is read once, in whole vectors
// along its rows, with no gathers, no padding of n to a register tile and no horizontal sums; B is small and read
// from L1. B must have unit stride along k (b_rs == 1: the forward's Wᵀ) or along n (b_cs == 1: the backward's W).
// Up to kCols columns of C per pass; with more columns the W rows are read again, from L1, for the next pass.

constexpr int kTallAhead = 8;  // k blocks

// One pass: the sums of NC columns of C for W rows (the first `rows` of them valid; the others read as zeros) into
// out[jj][i] = sum_p A(i, p) B(p, jj).
template <class V, void (*Transpose)(typename V::R*), int NC, bool kFullRows, bool kBUnitRows>
void tall_pass(int rows, int64_t k, const typename V::T* a, int64_t a_rs, const typename V::T* b, int64_t b_rs,
               int64_t b_cs, typename V::T out[][V::kWidth]) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::kWidth;
  R acc[NC];
  const T* b_col[NC];  // kBUnitRows: column jj of B, contiguous along k
#pragma GCC unroll 16
  for (int jj = 0; jj < NC; ++jj) {
    acc[jj] = V::zero();
    b_col[jj] = b + jj * b_cs;
  }
  auto block = [&](int64_t p0, int count) {
    R col[W];
#pragma GCC unroll 16
    for (int i = 0; i < W; ++i) {
      // W rows are W concurrent streams, more than the hardware prefetchers follow: each is prefetched a few
      // blocks ahead (past a row's end this reaches the next row, which is read next anyway).
      if (kFullRows) __builtin_prefetch(a + i * a_rs + p0 + kTallAhead * W, 0, 3);
      if (!kFullRows && i >= rows)
        col[i] = V::zero();
      else
        col[i] = count == W ? V::load(a + i * a_rs + p0) : V::load_partial(a + i * a_rs + p0, count);
    }
    Transpose(col);  // col[q], lane i: A(i, p0 + q)
#pragma GCC unroll 16
    for (int q = 0; q < W; ++q) {
      if (q >= count) break;
      const T* b_row = b + (p0 + q) * b_rs;  // !kBUnitRows: row p0 + q of B, contiguous along n
#pragma GCC unroll 16
      for (int jj = 0; jj < NC; ++jj)
        acc[jj] = V::fma(col[q], V::broadcast(kBUnitRows ? b_col[jj] + p0 + q : b_row + jj), acc[jj]);
    }
  };
  const int64_t k_full = k - k % W;
  for (int64_t p0 = 0; p0 < k_full; p0 += W) block(p0, W);
  if (k_full < k) block(k_full, static_cast<int>(k - k_full));
#pragma GCC unroll 16
  for (int jj = 0; jj < NC; ++jj) V::store(out[jj], acc[jj]);
}

// tall_pass with NC = cols, chosen from a table of the instantiations NC = 1 .. sizeof...(I).
template <class V, void (*Transpose)(typename V::R*), bool kFullRows, bool kBUnitRows, int... I>
void tall_pass_of(std::integer_sequence<int, I...>, int cols, int rows, int64_t k, const typename V::T* a,
                  int64_t a_rs, const typename V::T* b, int64_t b_rs, int64_t b_cs, typename V::T out[][V::kWidth]) {
  using Pass = void (*)(int, int64_t, const typename V::T*, int64_t, const typename V::T*, int64_t, int64_t,
                        typename V::T[][V::kWidth]);
  static constexpr Pass kPasses[] = {&tall_pass<V, Transpose, I + 1, kFullRows, kBUnitRows>...};
  kPasses[cols - 1](rows, k, a, a_rs, b, b_rs, b_cs, out);
}

template <class V, void (*Transpose)(typename V::R*), int kCols>
void tall_block(int64_t m, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, int64_t /*a_cs == 1*/,
                const typename V::T* b, int64_t b_rs, int64_t b_cs, typename V::T* c, int64_t c_rs, int64_t c_cs,
                bool load_c, const typename V::T* bias, int64_t bias_stride, bool step) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::kWidth;
  static_assert(1 <= kCols && kCols <= 8, "passes of 1 to 8 columns");
  // The pass for `cols` columns; rows < W only in the last row block.
  auto pass = [&](int rows, int cols, const T* a_rows, const T* b_cols, T out[][W]) {
    constexpr auto kSeq = std::make_integer_sequence<int, kCols>{};
    if (rows == W && b_rs == 1)
      tall_pass_of<V, Transpose, true, true>(kSeq, cols, rows, k, a_rows, a_rs, b_cols, b_rs, b_cs, out);
    else if (rows == W)
      tall_pass_of<V, Transpose, true, false>(kSeq, cols, rows, k, a_rows, a_rs, b_cols, b_rs, b_cs, out);
    else if (b_rs == 1)
      tall_pass_of<V, Transpose, false, true>(kSeq, cols, rows, k, a_rows, a_rs, b_cols, b_rs, b_cs, out);
    else
      tall_pass_of<V, Transpose, false, false>(kSeq, cols, rows, k, a_rows, a_rs, b_cols, b_rs, b_cs, out);
  };
  // A contiguous copy of the bias (n <= kTallMaxCols elements), read as vectors in the epilogue.
  alignas(64) T bias_row[kTallMaxCols + W] = {};
  if (bias)
    for (int64_t j = 0; j < n; ++j) bias_row[j] = bias[j * bias_stride];
  for (int64_t i0 = 0; i0 < m; i0 += W) {
    const int rows = static_cast<int>(m - i0 < W ? m - i0 : W);
    alignas(64) T sums[kTallMaxCols][W];  // sums[j][i] = C(i0 + i, j) before the epilogue
    for (int64_t j0 = 0; j0 < n; j0 += kCols)
      pass(rows, static_cast<int>(n - j0 < kCols ? n - j0 : kCols), a + i0 * a_rs, b + j0 * b_cs, sums + j0);
    T* c_block = c + i0 * c_rs;
    // A strided C, or fewer than 4 columns (a transpose costs more than their few stores): element by element.
    if (c_cs != 1 || n < 4) {
      for (int i = 0; i < rows; ++i)
        for (int64_t j = 0; j < n; ++j) {
          T v = sums[j][i];
          T& dst = c_block[i * c_rs + j * c_cs];
          if (load_c) v += dst;
          if (bias) v += bias_row[j];
          if (step) v = unit_step(v);
          dst = v;
        }
      continue;
    }
    // Back to rows, W columns at a time: transposed in registers, [+ C] [+ bias] [then H], one masked store a row.
    for (int64_t g0 = 0; g0 < n; g0 += W) {
      const int cols = static_cast<int>(n - g0 < W ? n - g0 : W);
      R r[W];
#pragma GCC unroll 16
      for (int jj = 0; jj < W; ++jj) r[jj] = jj < cols ? V::load(sums[g0 + jj]) : V::zero();
      Transpose(r);  // r[i], lane jj: C(i0 + i, g0 + jj)
      const R bias_vec = bias ? V::load(bias_row + g0) : V::zero();
#pragma GCC unroll 16
      for (int i = 0; i < W; ++i) {
        if (i >= rows) break;
        T* dst = c_block + i * c_rs + g0;
        R x = r[i];
        if (load_c) x = V::add(x, V::load_partial(dst, cols));
        if (bias) x = V::add(x, bias_vec);
        if (step) x = V::step(x);
        V::store_partial(dst, x, cols);
      }
    }
  }
}

// f(std::integral_constant<int, I>{}) for each I of the sequence, in order: an index the compiler sees as a constant.
template <int... I, class F>
inline void for_each_index(std::integer_sequence<int, I...>, F&& f) {
  (f(std::integral_constant<int, I>{}), ...);
}

// MicroKernel::long_k: the sums of a small C over a long k, such as the weight gradient dW = dYᵀ X of a layer with
// few inputs and outputs over a large batch (16 x 65536 x 16):
//   out[i*n + j] = sum_{p < k} a[i + p*a_cs] * b[p*b_rs + j]   for i < m <= 16, j < n
// (A column-major with unit row stride: dYᵀ; B with contiguous rows: X). The whole of C stays in registers over
// the k range: per k step one load of each of B's vectors (the last one masked, so nothing past column n is read)
// and one broadcast of each A element into the FMAs, with no packing, no padding of m and at most one vector's
// padding of n. Columns go in groups of two vectors, rows in groups of kRows1 (one vector) or kRows2 (two).
// A C of fewer than 8 vectors would be one chain of dependent FMAs per vector, bound by the FMA latency (4 cycles
// on Zen 4/5, two pipes): consecutive k steps then go round kChains sets of accumulators, added in a fixed order at
// the end (dW of a 1 -> 9 layer over 52502 rows, transposed to one 9-wide row: 81 -> 30 us float32 on Zen 5).
// kUnitRows: A's rows are adjacent (a_rs == 1, dYᵀ), so its MR elements of a k step are one run of addresses (a
// runtime row stride would need a pointer per row: 16 rows, 16 registers); otherwise MR <= kLongKWideRows.
template <class V, int MR, int NV, bool kUnitRows>
void long_k_rows(int64_t k, const typename V::T* a, int64_t a_rs, int64_t a_cs, const typename V::T* b, int64_t b_rs,
                 int n, typename V::T* out, int64_t out_rs) {
  if (kUnitRows) a_rs = 1;
  using R = typename V::R;
  constexpr int W = V::kWidth;
  constexpr int kChains = MR * NV >= 8 ? 1 : 8 / (MR * NV);
  const int last = n - (NV - 1) * W;  // valid lanes of the last vector, 1..W
  R acc[kChains][MR][NV];
#pragma GCC unroll 8
  for (int u = 0; u < kChains; ++u)
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[u][i][v] = V::zero();
  auto k_step = [&](int64_t p, R(&sums)[MR][NV]) {
    const typename V::T* b_row = b + p * b_rs;
    const typename V::T* a_col = a + p * a_cs;
    R bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      bv[v] = v + 1 < NV || last == W ? V::load(b_row + v * W) : V::load_partial(b_row + v * W, last);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const R ai = V::broadcast(a_col + i * a_rs);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) sums[i][v] = V::fma(ai, bv[v], sums[i][v]);
    }
  };
  // Every access to acc has a constant index (a fold over the chains), so the accumulators live in registers: an
  // index known only at run time (the tail's chain) kept the whole array on the stack, stored back every k step
  // (Xeon, dW 4 x 15744 -> 4: float32 28 -> 19 us, float64 33 -> 26).
  auto each_chain = [&](auto step) { for_each_index(std::make_integer_sequence<int, kChains>{}, step); };
  int64_t p = 0;
  for (; p + kChains <= k; p += kChains) each_chain([&](auto u) { k_step(p + u, acc[u]); });
  each_chain([&](auto u) {  // the last k % kChains steps, on the first chains
    if (p + u < k) k_step(p + u, acc[u]);
  });
  // A fixed pairwise tree over the chains (kChains is 1, 2, 4 or 8), with constant indices too.
  auto fold_into_first = [&](auto width) {
    for_each_index(std::make_integer_sequence<int, decltype(width)::value>{}, [&](auto u) {
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[u][i][v] = V::add(acc[u][i][v], acc[u + width][i][v]);
    });
  };
  static_assert(kChains == 1 || kChains == 2 || kChains == 4 || kChains == 8, "a power of two up to 8");
  if constexpr (kChains >= 8) fold_into_first(std::integral_constant<int, 4>{});
  if constexpr (kChains >= 4) fold_into_first(std::integral_constant<int, 2>{});
  if constexpr (kChains >= 2) fold_into_first(std::integral_constant<int, 1>{});
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      if (v + 1 < NV || last == W)
        V::store(out + i * out_rs + v * W, acc[0][i][v]);
      else
        V::store_partial(out + i * out_rs + v * W, acc[0][i][v], last);
    }
}

// long_k_rows with MR = rows, chosen from a table of the instantiations MR = 1 .. sizeof...(I).
template <class V, int NV, bool kUnitRows, int... I>
void long_k_rows_of(std::integer_sequence<int, I...>, int rows, int64_t k, const typename V::T* a, int64_t a_rs,
                    int64_t a_cs, const typename V::T* b, int64_t b_rs, int n, typename V::T* out, int64_t out_rs) {
  using Rows = void (*)(int64_t, const typename V::T*, int64_t, int64_t, const typename V::T*, int64_t, int,
                        typename V::T*, int64_t);
  static constexpr Rows kRows[] = {&long_k_rows<V, I + 1, NV, kUnitRows>...};
  kRows[rows - 1](k, a, a_rs, a_cs, b, b_rs, n, out, out_rs);
}

// long_k for a C of MR <= kLongKWideRows rows wider than two vectors: a row vector (dW = dYᵀ X of a layer with one
// output, linear regression's gradient) or the dX = dY W of a batch of a few rows. Column groups of G vectors
// (long_k_wide_vectors: 16 for one row, 6 for four), so that each of B's rows is read in runs of G vectors (1 KiB
// for a row vector on AVX-512) rather than 128 bytes: the product reads B once and nothing else, and the
// prefetchers follow long runs. Each output is one chain of FMAs over p, whatever group it falls in. Xeon,
// 4087 x 349 -> 1 float64 (dW over 11 MB of X): 687 us in two-vector bands against MKL's 452.
// Rows past `rows` (<= MR) repeat the last one and are not stored: three rows run as four (MR = 3 compiled to code
// that ran 0.6-0.75x as fast as four rows on a Xeon, with a quarter fewer FMAs).
template <class V, int MR, int G>
void long_k_wide(int rows, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                 const typename V::T* b, int64_t b_rs, typename V::T* out, int64_t out_rs) {
  using R = typename V::R;
  constexpr int W = V::kWidth;
  for (int64_t j0 = 0; j0 < n; j0 += G * W) {
    const int64_t cols = n - j0 < G * W ? n - j0 : G * W;
    const int nv = static_cast<int>((cols + W - 1) / W), last = static_cast<int>(cols - (nv - 1) * W);
    R acc[MR][G];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (int v = 0; v < G; ++v) acc[i][v] = V::zero();
    for (int64_t p = 0; p < k; ++p) {
      R ai[MR];
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) ai[i] = V::broadcast(a + (i < rows ? i : rows - 1) * a_rs + p * a_cs);
      const typename V::T* row = b + p * b_rs + j0;
#pragma GCC unroll 16
      for (int v = 0; v < G; ++v) {
        if (v >= nv) break;
        const R bv = v + 1 < nv || last == W ? V::load(row + v * W) : V::load_partial(row + v * W, last);
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) acc[i][v] = V::fma(ai[i], bv, acc[i][v]);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (int v = 0; v < G; ++v) {
        if (v >= nv || i >= rows) break;
        if (v + 1 < nv || last == W)
          V::store(out + i * out_rs + j0 + v * W, acc[i][v]);
        else
          V::store_partial(out + i * out_rs + j0 + v * W, acc[i][v], last);
      }
  }
}

template <class V, int kRows1, int kRows2>
void long_k_block(int64_t m, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                  const typename V::T* b, int64_t b_rs, typename V::T* out, int64_t out_rs) {
  constexpr int W = V::kWidth;
  if (n > 2 * W) {
    switch (m) {
      case 1: return long_k_wide<V, 1, long_k_wide_vectors(1)>(1, n, k, a, a_rs, a_cs, b, b_rs, out, out_rs);
      case 2: return long_k_wide<V, 2, long_k_wide_vectors(2)>(2, n, k, a, a_rs, a_cs, b, b_rs, out, out_rs);
      case 3:
      case 4:
        return long_k_wide<V, 4, long_k_wide_vectors(4)>(static_cast<int>(m), n, k, a, a_rs, a_cs, b, b_rs, out,
                                                         out_rs);
      default: break;
    }
  }
  // Column groups of up to two vectors (each a band of B's rows, read once per row group), row groups below; rows of
  // a strided A in groups of at most kLongKWideRows.
  constexpr int kStrided = static_cast<int>(kLongKWideRows);
  const bool unit_rows = a_rs == 1;
  for (int64_t j0 = 0; j0 < n; j0 += 2 * W) {
    const int cols = static_cast<int>(n - j0 < 2 * W ? n - j0 : 2 * W);
    // Rows of a unit-stride A in groups of equal height (19 rows as 7 + 6 + 6, not 8 + 8 + 3): each group is a pass
    // over the band of B, and a short last one costs nearly as much as a full one for a few FMAs a step (Xeon, dW
    // float32 over a large batch: 19 x 9546 -> 24 110 -> 100 us, 11 x 5000 -> 20 32 -> 28, 18 x 628 -> 101 26.5 ->
    // 24). A strided A keeps groups of kStrided (its rows beyond a group's height repeat the last one).
    const int group = unit_rows ? (cols <= W ? kRows1 : kRows2) : kStrided;
    const int64_t groups = (m + group - 1) / group;
    for (int64_t i0 = 0, done = 0; i0 < m; ++done) {
      const int rows = unit_rows ? static_cast<int>((m - i0 + groups - done - 1) / (groups - done))
                                 : static_cast<int>(m - i0 < group ? m - i0 : group);
      const typename V::T* a_rows = a + i0 * a_rs;
      typename V::T* out_rows = out + i0 * out_rs + j0;
      if (unit_rows && cols <= W)
        long_k_rows_of<V, 1, true>(std::make_integer_sequence<int, kRows1>{}, rows, k, a_rows, 1, a_cs, b + j0,
                                   b_rs, cols, out_rows, out_rs);
      else if (unit_rows)
        long_k_rows_of<V, 2, true>(std::make_integer_sequence<int, kRows2>{}, rows, k, a_rows, 1, a_cs, b + j0,
                                   b_rs, cols, out_rows, out_rs);
      else if (cols <= W)
        long_k_rows_of<V, 1, false>(std::make_integer_sequence<int, kStrided>{}, rows, k, a_rows, a_rs, a_cs, b + j0,
                                    b_rs, cols, out_rows, out_rs);
      else
        long_k_rows_of<V, 2, false>(std::make_integer_sequence<int, kStrided>{}, rows, k, a_rows, a_rs, a_cs, b + j0,
                                    b_rs, cols, out_rows, out_rs);
      i0 += rows;
    }
  }
}

// MicroKernel::short_k: a product with k <= kShortKMax (a K = 1 outer product, the backward dX = dY W of a layer
// with one or two outputs, the forward of a layer with a few inputs), which is mostly writing C. Row by row: each
// row of C is written front to back as one sequential stream of whole vectors (masked at its end), each vector the
// sum of k broadcast-times-row FMAs with B's k rows (b_cs == 1). (The register-tile order writes 12 rows at once, 12
// short interleaved store streams, which ran at about half this rate on Zen 5 when C came from L3.) A row of at most
// two vectors keeps B's k rows (and the bias) in registers, so a row costs k broadcasts, its FMAs and one or two
// stores: 9255 x 5 -> 8 float64 took a sixth of the time of the permuting skinny kernel on a Xeon, whose one shuffle
// port that kernel saturates. c_cs == 1 and a contiguous bias.
template <class V, int K, int NV>
void short_k_rows_narrow(int64_t m, int64_t n, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                         const typename V::T* b, int64_t b_rs, typename V::T* c, int64_t c_rs, bool load_c,
                         const typename V::T* bias, bool step) {
  using R = typename V::R;
  constexpr int W = V::kWidth;
  int count[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) count[v] = static_cast<int>(n - v * W < W ? n - v * W : W);
  R bv[K][NV], bias_v[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) {
#pragma GCC unroll 16
    for (int p = 0; p < K; ++p) bv[p][v] = V::load_partial(b + p * b_rs + v * W, count[v]);
    bias_v[v] = bias ? V::load_partial(bias + v * W, count[v]) : V::zero();
  }
  for (int64_t i = 0; i < m; ++i) {
    const typename V::T* ai = a + i * a_rs;
    typename V::T* row = c + i * c_rs;
    R x[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) x[v] = V::zero();
#pragma GCC unroll 16
    for (int p = 0; p < K; ++p) {
      const R ap = V::broadcast(ai + p * a_cs);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) x[v] = V::fma(ap, bv[p][v], x[v]);
    }
    // The same order of operations as the register tiles: the sum over k, then [+ C], [+ bias], [H].
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      if (load_c) x[v] = V::add(x[v], V::load_partial(row + v * W, count[v]));
      if (bias) x[v] = V::add(x[v], bias_v[v]);
      if (step) x[v] = V::step(x[v]);
      if (count[v] == W)
        V::store(row + v * W, x[v]);
      else
        V::store_partial(row + v * W, x[v], count[v]);
    }
  }
}

// Rows of C of 3 to kShortKPackedVectors vectors: B's k rows are first copied, zero-padded, into a vector-major
// buffer (vector v of row p at buf[(v K + p) W]), so that every load of B is a whole aligned vector at a constant
// offset from one pointer and only the row's last store is masked. Read in place, the vector at a row's end took
// k masked loads and every vector k row pointers, more than the registers hold: Xeon, 3263 x 8 -> 28 float64 ran
// at a fifth of the FMA peak, 0.6x MKL.
constexpr int kShortKPackedVectors = 32;
template <class V, int K>
void short_k_rows_packed(int64_t m, int64_t n, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                         const typename V::T* b, int64_t b_rs, typename V::T* c, int64_t c_rs, bool load_c,
                         const typename V::T* bias, bool step) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::kWidth;
  const int vectors = static_cast<int>((n + W - 1) / W);
  const int last = static_cast<int>(n - int64_t(vectors - 1) * W);  // elements in the last vector, 1..W
  alignas(64) T packed[kShortKPackedVectors * K * W];
  for (int v = 0; v < vectors; ++v)
#pragma GCC unroll 16
    for (int p = 0; p < K; ++p)
      V::store(packed + (v * K + p) * W, V::load_partial(b + p * b_rs + v * W, v + 1 < vectors ? W : last));
  for (int64_t i = 0; i < m; ++i) {
    R ai[K];
#pragma GCC unroll 16
    for (int p = 0; p < K; ++p) ai[p] = V::broadcast(a + i * a_rs + p * a_cs);
    T* row = c + i * c_rs;
    const T* bv = packed;
    for (int v = 0; v < vectors; ++v, bv += K * W) {
      const int count = v + 1 < vectors ? W : last;
      // The same order of operations as the register tiles: the sum over k, then [+ C], [+ bias], [H].
      R x = V::zero();
#pragma GCC unroll 16
      for (int p = 0; p < K; ++p) x = V::fma(ai[p], V::load(bv + p * W), x);
      if (load_c) x = V::add(x, V::load_partial(row + v * W, count));
      if (bias) x = V::add(x, V::load_partial(bias + v * W, count));
      if (step) x = V::step(x);
      if (count == W)
        V::store(row + v * W, x);
      else
        V::store_partial(row + v * W, x, count);
    }
  }
}

template <class V, int K>
void short_k_rows_k(int64_t m, int64_t n, const typename V::T* a, int64_t a_rs, int64_t a_cs, const typename V::T* b,
                    int64_t b_rs, typename V::T* c, int64_t c_rs, bool load_c, const typename V::T* bias, bool step,
                    bool stream_c) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::kWidth;
  if (n <= W) return short_k_rows_narrow<V, K, 1>(m, n, a, a_rs, a_cs, b, b_rs, c, c_rs, load_c, bias, step);
  if (n <= 2 * W) return short_k_rows_narrow<V, K, 2>(m, n, a, a_rs, a_cs, b, b_rs, c, c_rs, load_c, bias, step);
  // The copy (k x n loads and stores) is paid back over 16 rows or more; streamed rows keep their aligned cut below.
  if (n <= kShortKPackedVectors * W && m >= 16 && !stream_c)
    return short_k_rows_packed<V, K>(m, n, a, a_rs, a_cs, b, b_rs, c, c_rs, load_c, bias, step);
  // Streaming stores go to whole cache lines only: each row is cut at its first line boundary and after its last
  // whole line, and the parts before and after (which share lines with the rows next to it) get plain stores. A
  // line written partly by streaming stores, and partly by plain ones or by a streaming store much later (the next
  // row's), leaves the write-combining buffer half full and costs a read of the line at memory: Zen 3, rows of 4000
  // bytes (every other row starting mid-line) streamed 0.79x as fast as with plain stores, where rows of 4096 or
  // 4032 bytes streamed 1.27x faster; cut at lines, the 4000-byte rows streamed as fast as those.
  constexpr uintptr_t kLineBytes = 64;
  constexpr int64_t kLine = kLineBytes / sizeof(T) > W ? int64_t(kLineBytes / sizeof(T)) : W;  // elements
  const bool stream = stream_c && !load_c && reinterpret_cast<uintptr_t>(c) % sizeof(T) == 0;
  for (int64_t i = 0; i < m; ++i) {
    R ai[K];
#pragma GCC unroll 16
    for (int p = 0; p < K; ++p) ai[p] = V::broadcast(a + i * a_rs + p * a_cs);
    T* row = c + i * c_rs;
    // The same order of operations as the register tiles: the sum over k, then [+ C], [+ bias], [H].
    auto vector_at = [&](int64_t j, int count, bool streamed) {
      const bool partial = count < W;
      R x = V::zero();
#pragma GCC unroll 16
      for (int p = 0; p < K; ++p)
        x = V::fma(ai[p], partial ? V::load_partial(b + p * b_rs + j, count) : V::load(b + p * b_rs + j), x);
      if (load_c) x = V::add(x, partial ? V::load_partial(row + j, count) : V::load(row + j));
      if (bias) x = V::add(x, partial ? V::load_partial(bias + j, count) : V::load(bias + j));
      if (step) x = V::step(x);
      if (partial)
        V::store_partial(row + j, x, count);
      else if (streamed)
        V::stream(row + j, x);
      else
        V::store(row + j, x);
    };
    int64_t j = 0;
    if (stream) {
      const uintptr_t misalign = reinterpret_cast<uintptr_t>(row) % kLineBytes;
      const int64_t head = std::min<int64_t>(n, misalign == 0 ? 0 : int64_t((kLineBytes - misalign) / sizeof(T)));
      for (; j < head; j += W) vector_at(j, static_cast<int>(std::min<int64_t>(W, head - j)), false);
      j = head;
      for (const int64_t lines_end = head + (n - head) / kLine * kLine; j < lines_end; j += W) vector_at(j, W, true);
    }
    for (; j + W <= n; j += W) vector_at(j, W, false);
    if (j < n) vector_at(j, static_cast<int>(n - j), false);
  }
  if (stream) V::store_fence();  // streaming stores are weakly ordered: publish them before returning
}

// short_k_rows_k with K = k, from a table of the instantiations K = 1 .. sizeof...(I).
template <class V, int... I>
void short_k_rows_of(std::integer_sequence<int, I...>, int64_t m, int64_t n, int64_t k, const typename V::T* a,
                     int64_t a_rs, int64_t a_cs, const typename V::T* b, int64_t b_rs, typename V::T* c, int64_t c_rs,
                     bool load_c, const typename V::T* bias, bool step, bool stream_c) {
  using Fn = void (*)(int64_t, int64_t, const typename V::T*, int64_t, int64_t, const typename V::T*, int64_t,
                      typename V::T*, int64_t, bool, const typename V::T*, bool, bool);
  static constexpr Fn kTable[] = {&short_k_rows_k<V, I + 1>...};
  kTable[k - 1](m, n, a, a_rs, a_cs, b, b_rs, c, c_rs, load_c, bias, step, stream_c);
}

template <class V>
void short_k_rows(int64_t m, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                  const typename V::T* b, int64_t b_rs, typename V::T* c, int64_t c_rs, bool load_c,
                  const typename V::T* bias, bool step, bool stream_c) {
  short_k_rows_of<V>(std::make_integer_sequence<int, int(kShortKMax)>{}, m, n, k, a, a_rs, a_cs, b, b_rs, c, c_rs,
                     load_c, bias, step, stream_c);
}

// The stream-rows kernel with C in registers (MicroKernel::stream_rows for a row-major A, see there): for each block
// of kStreamBlockRows rows of B, tiles of kRowsC rows x NV vectors of C are loaded, take the block's FMAs and are
// stored: a load and a store of C per 16 rows of B, not per 4. Each element of C is still one chain of FMAs over p
// in order, so the bits are those of the kernel below.
template <class V, int kRowsC, int NV, bool kPartial>
inline void stream_tile(int64_t kr, const typename V::T* a, int64_t a_rs, int64_t a_cs, const typename V::T* b,
                        int64_t b_rs, typename V::T* c, int64_t c_rs, int last_lanes) {
  using R = typename V::R;
  constexpr int W = V::kWidth;
  R acc[kRowsC][NV];
#pragma GCC unroll 8
  for (int i = 0; i < kRowsC; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      acc[i][v] = kPartial && v == NV - 1 ? V::load_partial(c + i * c_rs + v * W, last_lanes)
                                          : V::load(c + i * c_rs + v * W);
  for (int64_t p = 0; p < kr; ++p) {
    const typename V::T* row = b + p * b_rs;
    R bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      bv[v] = kPartial && v == NV - 1 ? V::load_partial(row + v * W, last_lanes) : V::load(row + v * W);
#pragma GCC unroll 8
    for (int i = 0; i < kRowsC; ++i) {
      const R ai = V::broadcast(a + i * a_rs + p * a_cs);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < kRowsC; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      if (kPartial && v == NV - 1)
        V::store_partial(c + i * c_rs + v * W, acc[i][v], last_lanes);
      else
        V::store(c + i * c_rs + v * W, acc[i][v]);
    }
}

// One column block of all m rows of C over kr rows of B: groups of kRowsC rows, the last ones in groups of half
// that, then singly; the block's kr x NV vectors of B stay in L1 for all the groups.
template <class V, int kRowsC, int NV, bool kPartial>
void stream_tile_rows(int64_t m, int64_t kr, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                      const typename V::T* b, int64_t b_rs, typename V::T* c, int64_t c_rs, int last_lanes) {
  int64_t i = 0;
  for (; i + kRowsC <= m; i += kRowsC)
    stream_tile<V, kRowsC, NV, kPartial>(kr, a + i * a_rs, a_rs, a_cs, b, b_rs, c + i * c_rs, c_rs, last_lanes);
  if constexpr (kRowsC > 1) {
    if (i < m)
      stream_tile_rows<V, kRowsC / 2, NV, kPartial>(m - i, kr, a + i * a_rs, a_rs, a_cs, b, b_rs, c + i * c_rs, c_rs,
                                                    last_lanes);
  }
}

template <class V>
void stream_rows_in_registers(int64_t m, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                              const typename V::T* b, int64_t b_rs, typename V::T* c, int64_t c_rs) {
  constexpr int W = V::kWidth;
  constexpr int64_t kStreamBlockRows = 16;
  // 4 rows x NV vectors of accumulators, NV vectors of B and a broadcast: AVX-512's 32 registers take 4 x 4, AVX2's
  // 16 take 4 x 2.
  constexpr int NV = sizeof(typename V::R) == 64 ? 4 : 2;
  for (int64_t p = 0; p < k; p += kStreamBlockRows) {
    const int64_t kr = k - p < kStreamBlockRows ? k - p : kStreamBlockRows;
    const typename V::T* ap = a + p * a_cs;
    const typename V::T* bp = b + p * b_rs;
    int64_t j = 0;
    for (; j + NV * W <= n; j += NV * W)
      stream_tile_rows<V, 4, NV, false>(m, kr, ap, a_rs, a_cs, bp + j, b_rs, c + j, c_rs, W);
    for (; j + W <= n; j += W) stream_tile_rows<V, 4, 1, false>(m, kr, ap, a_rs, a_cs, bp + j, b_rs, c + j, c_rs, W);
    if (j < n)
      stream_tile_rows<V, 4, 1, true>(m, kr, ap, a_rs, a_cs, bp + j, b_rs, c + j, c_rs, static_cast<int>(n - j));
  }
}

// MicroKernel::stream_rows (microkernel.h): kRows of B's rows at a time are added into every row of C, kRowsC rows
// of C at a time; per vector of those rows of C, kRows loads of B (from L1 after the first group of C's rows), a load
// and a store of each row of C and kRows x kRowsC FMAs, with the A elements broadcast once a group. Every element of
// C is one chain of FMAs over p in order, so the bits do not depend on how the driver splits C's columns or k.
template <class V, int kRowsC, int kRows>
void stream_rows_group(int64_t n, const typename V::T* a, int64_t a_rs, int64_t a_cs, const typename V::T* const* rows,
                       typename V::T* c, int64_t c_rs) {
  using R = typename V::R;
  constexpr int W = V::kWidth;
  const int64_t n_full = n - n % W;
  const int tail = static_cast<int>(n - n_full);
  R ar[kRowsC][kRows];
#pragma GCC unroll 4
  for (int i = 0; i < kRowsC; ++i)
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) ar[i][r] = V::broadcast(a + i * a_rs + r * a_cs);
  auto columns = [&](int64_t j, int count) {
    R bv[kRows];
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) bv[r] = count == W ? V::load(rows[r] + j) : V::load_partial(rows[r] + j, count);
#pragma GCC unroll 4
    for (int i = 0; i < kRowsC; ++i) {
      typename V::T* ci = c + i * c_rs + j;
      R acc = count == W ? V::load(ci) : V::load_partial(ci, count);
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) acc = V::fma(ar[i][r], bv[r], acc);
      if (count == W)
        V::store(ci, acc);
      else
        V::store_partial(ci, acc, count);
    }
  };
  for (int64_t j = 0; j < n_full; j += W) columns(j, W);
  if (tail) columns(n_full, tail);
}

// All of C's m rows for kRows rows of B: groups of kRowsC rows, the last ones in a group of half that, then singly.
template <class V, int kRowsC, int kRows>
void stream_rows_step(int64_t m, int64_t n, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                      const typename V::T* const* rows, typename V::T* c, int64_t c_rs) {
  int64_t i = 0;
  for (; i + kRowsC <= m; i += kRowsC)
    stream_rows_group<V, kRowsC, kRows>(n, a + i * a_rs, a_rs, a_cs, rows, c + i * c_rs, c_rs);
  if constexpr (kRowsC > 1) {
    if (i < m)
      stream_rows_step<V, kRowsC / 2, kRows>(m - i, n, a + i * a_rs, a_rs, a_cs, rows, c + i * c_rs, c_rs);
  }
}

template <class V>
void stream_rows(int64_t m, int64_t n, int64_t k, const typename V::T* a, int64_t a_rs, int64_t a_cs,
                 const typename V::T* b, int64_t b_rs, typename V::T* c, int64_t c_rs) {
  // A row-major A of two rows and more (the backward dX = dY W of a short batch, B = W) takes C in registers over
  // blocks of B's rows; a column-major one (the weight gradient's dYᵀ, B = the batch X from memory) keeps this
  // order, which reads B's rows front to back. Xeon, in process, 1 and 2 threads, C in registers against this
  // kernel: 26 random dX shapes geomean 1.03x, against MKL min 0.82 -> 0.96x (dX 14 x 2305 -> 1877 float64 on two
  // threads 0.82 -> 0.97x, 15 x 1774 -> 328 0.87 -> 0.96x); 46 dW shapes 0.97x.
  if (a_cs == 1 && m >= 2) return stream_rows_in_registers<V>(m, n, k, a, a_rs, a_cs, b, b_rs, c, c_rs);
  using T = typename V::T;
  constexpr int kRows = 4;
  // Groups as large as the registers allow: with 32 vector registers (AVX-512) 4 rows x 4 broadcasts, 4 of B's
  // vectors and an accumulator; with 16 (AVX2) 2 x 4.
  constexpr int kRowsC = sizeof(typename V::R) == 64 ? 4 : 2;
  int64_t p = 0;
  for (; p + kRows <= k; p += kRows) {
    const T* rows[kRows];
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) rows[r] = b + (p + r) * b_rs;
    stream_rows_step<V, kRowsC, kRows>(m, n, a + p * a_cs, a_rs, a_cs, rows, c, c_rs);
  }
  for (; p < k; ++p) {  // the last rows of B one at a time
    const T* row = b + p * b_rs;
    stream_rows_step<V, kRowsC, 1>(m, n, a + p * a_cs, a_rs, a_cs, &row, c, c_rs);
  }
}

// MicroKernel::pack_b_transposed: out[p*nr + j] = w[j*ld + p] for j < cols, zero for cols <= j < nr. W x W blocks
// go through registers with the family's in-register transpose (passed in, so that it is compiled with the
// caller's target flags like everything here); blocks cut by the edges read their valid part with masked loads
// (rows past cols read as zeros, which are the padding), so short k (a 15-long sliver) is as fast as long k.
template <class V, void (*Transpose)(typename V::R*)>
void pack_b_transposed(int64_t kc, int64_t cols, const typename V::T* w, int64_t ld, int64_t nr, typename V::T* out) {
  using T = typename V::T;
  constexpr int W = V::kWidth;
  for (int64_t j0 = 0; j0 < cols; j0 += W) {
    const int64_t rows = cols - j0 < W ? cols - j0 : W;  // rows of W: columns of this block of the sliver
    for (int64_t p0 = 0; p0 < kc; p0 += W) {
      const int count = static_cast<int>(kc - p0 < W ? kc - p0 : W);
      typename V::R r[W];
#pragma GCC unroll 16
      for (int i = 0; i < W; ++i) {
        const T* src = w + (j0 + i) * ld + p0;
        r[i] = i >= rows ? V::zero() : count == W ? V::load(src) : V::load_partial(src, count);
      }
      Transpose(r);
      // A sliver of nr < W (or not a multiple of W) ends in a partial vector: the A slivers of the tile kernel
      // (mr = 12 or 6) are packed here too.
      const int64_t lanes = nr - j0 < W ? nr - j0 : W;
      if (lanes == W)
        for (int q = 0; q < count; ++q) V::store(out + (p0 + q) * nr + j0, r[q]);
      else
        for (int q = 0; q < count; ++q) V::store_partial(out + (p0 + q) * nr + j0, r[q], static_cast<int>(lanes));
    }
  }
  const int64_t padded = (cols + W - 1) / W * W;  // columns written above, zeros included
  if (padded < nr)
    for (int64_t p = 0; p < kc; ++p)
      for (int64_t j = padded; j < nr; ++j) out[p * nr + j] = T(0);
}

// MicroKernel::pack_b_rows: a kc x cols block of a row-major B into nr-slivers (nr = NV vectors) `stride` apart,
// out[s*stride + p*nr + j] = b[p*b_rs + s*nr + j], the last sliver zero-padded past cols. kRowGroup rows at a time,
// sliver by sliver within them: B's rows are read as kRowGroup sequential streams (a block as wide as B is read in
// order), and each sliver gets kRowGroup x nr contiguous elements at once, a run of whole lines that L2 fetches ahead
// for the stores. Row by row, each row of each sliver was a lone line of the L2-sized panel, written after a miss:
// 9-11 GB/s on a Xeon against 13-15 in groups of 16 rows (one core reads B at 20). Sliver by sliver over all of kc,
// every row of a sliver is a short run on another page (the weight gradient's B is the batch X, rows kilobytes apart).
template <class V, int NV>
void pack_b_rows(int64_t kc, int64_t cols, const typename V::T* b, int64_t b_rs, typename V::T* out, int64_t stride) {
  constexpr int W = V::kWidth;
  constexpr int64_t nr = int64_t(NV) * W;
  constexpr int64_t kRowGroup = 16;
  const int64_t full = cols / nr, tail = cols - full * nr;
  for (int64_t p0 = 0; p0 < kc; p0 += kRowGroup) {
    const int64_t rows = kc - p0 < kRowGroup ? kc - p0 : kRowGroup;
    const typename V::T* group = b + p0 * b_rs;
    for (int64_t s = 0; s < full; ++s) {
      typename V::T* dst = out + s * stride + p0 * nr;
      for (int64_t p = 0; p < rows; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) V::store(dst + p * nr + v * W, V::load(group + p * b_rs + s * nr + v * W));
    }
    if (tail > 0) {
      typename V::T* dst = out + full * stride + p0 * nr;
      for (int64_t p = 0; p < rows; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          const int64_t lanes = tail - int64_t(v) * W;
          const typename V::T* src = group + p * b_rs + full * nr + v * W;
          V::store(dst + p * nr + v * W,
                   lanes >= W ? V::load(src) : lanes > 0 ? V::load_partial(src, static_cast<int>(lanes)) : V::zero());
        }
    }
  }
}

// MicroKernel::transpose_out: C = [C +] ctᵀ [+ bias] [then H], W x W blocks through the in-register transpose. Each
// line of ct is read once (a block's W rows of ct hold W columns of C's W rows); each row of C's block is one
// (masked) vector store.
template <class V, void (*Transpose)(typename V::R*)>
void transpose_out(int64_t m, int64_t n, const typename V::T* ct, int64_t ld, typename V::T* c, int64_t c_rs,
                   bool load_c, const typename V::T* bias, bool step) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::kWidth;
  for (int64_t i0 = 0; i0 < m; i0 += W) {
    const int rows = static_cast<int>(m - i0 < W ? m - i0 : W);
    for (int64_t j0 = 0; j0 < n; j0 += W) {
      const int cols = static_cast<int>(n - j0 < W ? n - j0 : W);
      R r[W];
#pragma GCC unroll 16
      for (int jj = 0; jj < W; ++jj) r[jj] = jj < cols ? V::load(ct + (j0 + jj) * ld + i0) : V::zero();
      Transpose(r);  // r[i], lane jj: C(i0 + i, j0 + jj)
      const R bias_vec = bias ? (cols == W ? V::load(bias + j0) : V::load_partial(bias + j0, cols)) : V::zero();
#pragma GCC unroll 16
      for (int i = 0; i < W; ++i) {
        if (i >= rows) break;
        T* dst = c + (i0 + i) * c_rs + j0;
        R x = r[i];
        if (load_c) x = V::add(x, cols == W ? V::load(dst) : V::load_partial(dst, cols));
        if (bias) x = V::add(x, bias_vec);
        if (step) x = V::step(x);
        if (cols == W)
          V::store(dst, x);
        else
          V::store_partial(dst, x, cols);
      }
    }
  }
}

}  // namespace simd
}  // namespace linneuron
