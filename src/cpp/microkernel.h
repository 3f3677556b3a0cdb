// Register-blocked micro-kernels: the innermost loop of the GEMM, one family per instruction set.
//
// A micro-kernel multiplies an mr x kc sliver of A by a kc x nr sliver of B and writes an mr x nr tile of C:
//   A(i, p) = a[i*a_rs + p*a_cs] for i < mr, p < kc    (every element readable, even rows past m_valid)
//   B(p, j) = b[p*b_rs + j]      for p < kc, j < nr    (every element readable, even columns past n_valid)
//   C(i, j) = [C(i, j) if load_c] + sum_p A(i, p) B(p, j) [+ bias[j] if bias] [then H(.) if step]
// for i < m_valid, j < n_valid only; C(i, j) = c[i*c_rs + j*c_cs]. Nothing outside the valid tile is written.
// A packed sliver (a_rs = 1, a_cs = mr) is the column-major case; the GEMM driver also feeds unpacked operands:
// a column-major A (a_rs = 1, any a_cs) to `col_a`, a row-major A (a_cs = 1, any a_rs) to `row_a`, and a B whose
// rows are contiguous (b_cs = 1) with its own row stride, so small and skinny products need no packing at all.
// The driver pads partial edge slivers of unpacked operands into small buffers, so kernels never read out of
// bounds -- except for families with `exact_edges`, whose tiles read B only in columns j < n_valid (the last vector
// masked) and a row-major A only in rows i < m_valid: there an edge of B, or of a row-major A, is read in place.
#pragma once

#include <cstdint>

namespace linneuron {

template <typename T>
using MicroKernelFn = void (*)(int64_t kc, const T* a, int64_t a_rs, int64_t a_cs, const T* b, int64_t b_rs, T* c,
                               int64_t c_rs, int64_t c_cs, int64_t m_valid, int64_t n_valid, bool load_c, const T* bias,
                               bool step);

// Edge tiles of the register-tile kernels run a tile this many rows shorter at a time, down from mr, until it
// still covers the valid rows (microkernel_simd.h's tile_edges; the plan's cost model counts rows the same way, which
// overestimates an edge of a row-major A read in place: that one has exactly its rows, down to 8 accumulators).
constexpr int kTileEdgeRowStep = 4;

// Dot-product block kernel for the case where both operands are contiguous along k (A row-major, a_cs = 1, and
// B = Wᵀ of a row-major W, b_rs = 1), as in the forward pass of a small batch. It computes a whole block:
//   C(i, j) = [C(i, j) if load_c] + sum_p a[i*a_rs + p] * b[j*b_cs + p] [+ bias[j*bias_stride]] [then H(.)]
// for i < m, j < n, with no packing at all; it reads exactly the m x k and n x k elements it is given.
template <typename T>
using DotKernelFn = void (*)(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_rs, const T* b, int64_t b_cs, T* c,
                             int64_t c_rs, int64_t c_cs, bool load_c, const T* bias, int64_t bias_stride, bool step);

// Short-k kernel for tall, skinny products (k and n tiny, m large, e.g. 65536 x 2 -> 1), where neither register
// tiles nor dot products have enough work per output. Vectors run along m: each k step gathers a column of A
// for a vector of rows and multiplies it by a broadcast element of B. Computes the whole block
//   C(i, j) = [C(i, j) if load_c] + sum_p A(i, p) B(p, j) [+ bias[j*bias_stride]] [then H(.)]
// for i < m, j < n, with A(i, p) = a[i*a_rs + p*a_cs], B(p, j) = b[p*b_rs + j*b_cs]; needs |a_rs| < 2^26.
template <typename T>
using SkinnyKernelFn = void (*)(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_rs, int64_t a_cs, const T* b,
                                int64_t b_rs, int64_t b_cs, T* c, int64_t c_rs, int64_t c_cs, bool load_c,
                                const T* bias, int64_t bias_stride, bool step);

// The most columns of C the `tall` kernels below are chosen for.
constexpr int64_t kTallMaxCols = 16;

// Long-k kernel for a C of few rows (any m, in row groups; the plan takes it up to kLongKMaxRows rows or two
// vectors' lanes of them, and any n), A(i, p) = a[i*a_rs + p*a_cs] and B(p, j) =
// b[p*b_rs + j] (contiguous rows): writes the plain sums out[i*out_rs + j] = sum_{p < k} A(i, p) B(p, j), for the
// driver to add up over k chunks and finish with the epilogue. The driver passes a_rs == 1 (a column-major A: dYᵀ)
// or, for at most kLongKWideRows rows, any a_rs (a row-major A: the dX = dY W of a short batch).
template <typename T>
using LongKKernelFn = void (*)(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_rs, int64_t a_cs, const T* b,
                               int64_t b_rs, T* out, int64_t out_rs);
constexpr int64_t kLongKMaxRows = 16;
// Vectors of a column group of the long-k kernels for a C of 1 to kLongKWideRows rows (B's rows read in runs this
// long: 1 KiB for a row vector on AVX-512); 0 past that (groups of two vectors). At most 24 accumulators.
constexpr int kLongKRowVectorNV = 16;
constexpr int64_t kLongKWideRows = 4;
constexpr int long_k_wide_vectors(int64_t rows) {
  return rows == 1 ? kLongKRowVectorNV : rows == 2 ? 12 : rows <= 4 ? 6 : 0;
}
// Row-streaming kernel for a C of few rows over a B far larger than the caches (the weight gradient dW = dYᵀ X of a
// layer with few outputs: B is the batch X): adds, into C held in memory (a block that stays in L1),
//   c[i*c_rs + j] += sum_{p < k} A(i, p) B(p, j)   for i < m, j < n,
// A(i, p) = a[i*a_rs + p*a_cs], B(p, j) = b[p*b_rs + j] (contiguous rows). Each pass reads a few of B's rows front to
// back and adds them into every row of C, so B streams in its own order; each sum runs over p in order.
template <typename T>
using StreamRowsKernelFn = void (*)(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_rs, int64_t a_cs,
                                    const T* b, int64_t b_rs, T* c, int64_t c_rs);
// The most rows of C the plan sends to it: up to two register tiles of rows where a tile has at most 8 (AVX-512
// float64 8 x 24, AVX2's 6-row tiles), whose tiles read such a B worse, packed a k block at a time for one or two
// tiles (Xeon, dX = dY W of a short batch over a W beyond L2, against MKL, tiles -> streamed: float64 9 x 629 -> 467
// 0.78 -> 1.03x, 8 x 328 -> 918 0.73 -> 0.98x, 10 x 662 -> 539 0.83 -> 1.05x, 16 x 984 -> 568 on 2 threads 0.98 ->
// 1.09x; 40 such shapes of 3-16 rows, 1 and 2 threads: geomean 0.91 -> 1.02x, 19 -> 10 under 0.9x; dW 9 x 8000 ->
// 300 float64 0.68 -> 0.97x, 2 threads 0.93 -> 1.34x; the AVX2 family 8 x 1005 -> 827 float64 0.56 -> 0.73x, 7 x
// 700 -> 900 float32 0.41 -> 0.64x of AVX-512 MKL).
// Beside tiles of 12 rows and more (AVX-512 float32) fewer than a tile: a whole tile of rows runs its arithmetic
// better than this kernel, with half its loads and stores, so reading B in order pays only while the tiles would
// compute padding rows too. Xeon, float32 against the tiles, 1 thread then 2 (threads on parts of k): 8 x 45231 ->
// 490 1.21x, 1.59x; 10 x 30000 -> 400 1.43x, 1.76x; 9 x 30000 -> 685 1.03x; 10 x 30000 -> 700 0.96x; 11 rows
// 0.90-1.28x on 1 thread (11 x 30038 -> 685 0.90x); dW 12 x 30000 -> 700 1.33 -> 1.03x of MKL streamed, 14 x
// 20000 -> 400 1.02 -> 0.83x.
// (Shapes as C rows x k -> C columns.)
constexpr int64_t kStreamRowsMax = 16;
constexpr int64_t kStreamRowsTallTile = 12, kStreamRowsBesideTallTilesMax = 10;
// A C of a few rows goes to this kernel in place of the long-k kernel (gemm.cpp's streams_past_long_k) up to
// this many rows.
constexpr int64_t kStreamRowsPastLongKMax = 10;

// Short-k kernel: k <= kShortKMax, B's rows and C's rows contiguous (b_cs == c_cs == 1), a contiguous bias:
//   C(i, j) = [C(i, j) if load_c] + sum_p A(i, p) B(p, j) [+ bias[j]] [then H(.)]   for i < m, j < n,
// A(i, p) = a[i*a_rs + p*a_cs], B(p, j) = b[p*b_rs + j]. C is written row by row, each row one sequential stream;
// with stream_c (and no load_c) rows wider than two vectors go out as non-temporal stores, which skip reading
// each line of C before writing it (for a C larger than the caches).
template <typename T>
using ShortKKernelFn = void (*)(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_rs, int64_t a_cs, const T* b,
                                int64_t b_rs, T* c, int64_t c_rs, bool load_c, const T* bias, bool step,
                                bool stream_c);
constexpr int64_t kShortKMax = 16;

template <typename T>
struct MicroKernel {
  const char* isa;           // family name, as reported by linneuron.info()
  int64_t mr, nr;            // register tile
  int64_t lanes;             // elements of one vector register (the tile is nr / lanes vectors wide)
  int64_t mc, kc, nc;        // reference blocking of the machine the family was first tuned on (Zen 5); the driver
                             // uses kernel_blocking() below, derived from the running CPU's caches
  MicroKernelFn<T> col_a;    // A with a_rs == 1 (packed slivers and column-major operands); a_rs is ignored
  MicroKernelFn<T> row_a;    // A with a_cs == 1 (row-major operands); a_cs is ignored
  DotKernelFn<T> dot;        // both operands contiguous along k; see above
  SkinnyKernelFn<T> skinny;  // k and n tiny, m large; see above
  // Optional (may be null): tall products with few outputs (n <= kTallMaxCols), a row-major A (a_cs == 1, any k)
  // and b_rs == 1 or b_cs == 1, with the SkinnyKernelFn contract above; vectors along m from in-register
  // transposes of A's rows.
  SkinnyKernelFn<T> tall;
  int64_t tall_cols;  // columns of C per pass of `tall` over A (its accumulators)
  LongKKernelFn<T> long_k;  // optional (may be null); see above
  ShortKKernelFn<T> short_k;  // optional (may be null): k <= kShortKMax, C written row by row; see above
  StreamRowsKernelFn<T> stream_rows;  // optional (may be null); see above
  // Peak-rate probe: `iterations` rounds of independent FMAs on registers of this family's width; returns the
  // floating-point operations done (2 per lane per FMA) and stores a result in *sink so none is optimised away.
  int64_t (*fma_probe)(int64_t iterations, T* sink);
  // Optional (may be null): packs one nr-sliver of B = Wᵀ from a row-major W, out[p*nr + j] = w[j*ld + p] for
  // p < kc, j < cols, zero for cols <= j < nr; a blocked in-register transpose instead of strided scalar copies.
  // Any nr (not only multiples of the vector width): it packs the mr-slivers of a row-major A as well.
  void (*pack_b_transposed)(int64_t kc, int64_t cols, const T* w, int64_t ld, int64_t nr, T* out);
  // Optional (may be null): the epilogue of a product computed transposed, C(i, j) = [C(i, j) if load_c] +
  // ct[j*ld + i] [+ bias[j]] [then H(.)] for i < m, j < n, with C's rows contiguous (C(i, j) = c[i*c_rs + j]);
  // ct's rows are read in whole vectors, up to m rounded up to the vector width (ld must allow that).
  void (*transpose_out)(int64_t m, int64_t n, const T* ct, int64_t ld, T* c, int64_t c_rs, bool load_c, const T* bias,
                        bool step);
  // Optional (may be null): packs a kc x cols block of a row-major B (b_cs = 1) into nr-slivers `stride` apart,
  // out[s*stride + p*nr + j] = b[p*b_rs + s*nr + j], the last sliver zero-padded to nr; reads B row by row.
  void (*pack_b_rows)(int64_t kc, int64_t cols, const T* b, int64_t b_rs, T* out, int64_t stride);
  // col_a and row_a read B only in columns j < n_valid, and row_a reads A only in rows i < m_valid (see above).
  bool exact_edges = false;
};

// One accessor per compiled family; each lives in its own translation unit with its own target flags.
template <typename T>
const MicroKernel<T>& portable_micro_kernel();
#if defined(LINNEURON_HAVE_AVX2)
template <typename T>
const MicroKernel<T>& avx2_micro_kernel();
#endif
#if defined(LINNEURON_HAVE_AVX512)
template <typename T>
const MicroKernel<T>& avx512_micro_kernel();
#endif

// The cache blocking the GEMM driver uses with `uk` on this CPU: derived once per family from cpu_caches()
// (see cpu_caches.h), so it follows the machine rather than the tables above.
struct Blocking;
template <typename T>
const Blocking& kernel_blocking(const MicroKernel<T>& uk);

// The family selected by runtime.h's active_isa().
template <typename T>
const MicroKernel<T>& active_micro_kernel();

}  // namespace linneuron
