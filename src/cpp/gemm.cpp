// The cache-blocked, OpenMP-parallel GEMM driver (BLIS loop order) around the active micro-kernel.
//
// Loop nest, outermost first:  jc over n by nc  ->  pc over k by kc (B panel kc x nc)  ->  ic over this thread's
// rows by mc (A block mc x kc)  ->  jr over this thread's nr-slivers of the panel  ->  ir over mr-slivers of the
// block  ->  micro-kernel. Bias and step are applied by the micro-kernel on the last k block only, while the
// tile is still in registers, so Z = X Wᵀ + b is never written when the neuron is fused.
//
// Packing is decided per call. Large products pack A blocks and B panels into contiguous, cache-sized buffers
// (the packing is amortised over many tiles and avoids cache-set conflicts at power-of-two strides). Small and
// skinny products, where packing would cost as much as the arithmetic, skip it:
//   direct  the register-tile kernel reads a row- or column-major A where it lies, and so a B whose rows are
//           contiguous; only partial edge slivers are copied into small padded buffers;
//   dot     both operands contiguous along k (the forward X Wᵀ) with a short batch or few outputs: dot products;
//   skinny  tall products with tiny k and n (65536 x 2 -> 1): vectors run along the batch;
//   short_k k <= 8 (B's rows in L1), or up to 16 for rows of two vectors, and n >= 2, a product that is mostly
//           writing C: written row by row, each row one sequential stream;
//   long_k  a C of few rows (m <= 16) over a longer k, the weight gradient of a layer with few outputs, a row
//           vector times a matrix, the dX = dY W of a batch of up to 4 rows: C stays in registers, k is split into
//           chunks whose sums are added in a fixed order;
//   tall    tall products with few outputs (n <= 16) and any k from a row-major A (52708 x 16 -> 2): vectors run
//           along the batch too, made by transposing rows of A in registers, so A streams through once.
// And any of these on the transposed product Cᵀ = Bᵀ Aᵀ, for a short batch through the forward's Wᵀ: W is read in
// place instead of packed, and a transposing epilogue writes C (transposed_pays); for a batch of one, the column
// W x written in place (row_vector_as_column). A tile product of the weight gradient's layout with a small C over a
// long batch from memory takes k in parts fixed by the shape, each part a plan of its own on one thread (of Cᵀ where
// that pays: k_split_transposes), the parts' sums added in order (k_split_parts).
//
// Threads form a tm x tn grid: each owns a contiguous, mr-aligned range of rows and a range of B slivers, so the
// split is balanced to within one sliver. A shared B panel is packed by the whole team between two barriers.
#include "gemm.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "cpu_caches.h"
#include "memory_hints.h"
#include "microkernel.h"
#include "parallel_for.h"
#include "runtime.h"
#include "workspace.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace linneuron {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

constexpr int64_t kMaxPackRows = 32;
// k steps per chunk of the long-k path: long enough that a chunk's kernel call and partial sums are noise next to
// its FMAs, short enough that a batch of a few thousand rows still splits between threads; and at most
// kLongKMaxPartial elements of partial sums in all (longer chunks for a wide C).
constexpr int64_t kLongKChunk = 512;
// The shortest k block the panel driver takes to pack whole rows of a B from memory (below it C's loads and stores
// each k block would cost more than the longer runs save).
constexpr int64_t kMinRowKc = 128;
constexpr int64_t kLongKMaxPartial = 64 * 1024;
// Rows of B a part of the stream-rows path (its unit of work for a thread) takes: enough that its partial sums and
// their addition are noise next to its FMAs, few enough that a batch of a few thousand rows splits between threads.
constexpr int64_t kStreamRowsPart = 2048;
constexpr int64_t kStreamRowsMinPart = 64;

// This thread's workspace for one product: `elems` elements after a contiguous copy of a strided bias (the
// micro-kernels read the bias contiguously; gathering n elements is cheap). Every part starts on 64 bytes.
// Points `bias` at the copy when one was made and returns the start of the `elems` part.
template <typename T>
T* gemm_workspace(const GemmArgs<T>& g, int64_t elems, const T*& bias) {
  constexpr int64_t kAlign = 64 / sizeof(T);
  const bool gather_bias = g.bias && g.bias_stride != 1;
  const int64_t bias_elems = gather_bias ? round_up(g.n, kAlign) : 0;
  const int64_t total = std::max<int64_t>(bias_elems + elems, 1);
  T* workspace = static_cast<T*>(thread_workspace(sizeof(T) * static_cast<std::size_t>(total)));
  if (!workspace) throw std::bad_alloc();
  bias = g.bias;
  if (gather_bias) {
    for (int64_t j = 0; j < g.n; ++j) workspace[j] = g.bias[j * g.bias_stride];
    bias = workspace;
  }
  return workspace + bias_elems;
}

// Packs A(rows 0..mc, cols 0..kc) into mr-slivers: out[s*mr*kc + p*mr + i] = A(s*mr + i, p), zero-padded.
template <typename T>
void pack_a_block(int64_t mc, int64_t kc, const T* a, int64_t a_rs, int64_t a_cs, int64_t mr, T* out,
                  const MicroKernel<T>& uk) {
  // The edge sliver alone (mc < mr) of a column-major A takes the k-outermost loop below where its block does not
  // stay in L1: row by row, every row read the whole block again from L2, a line an element (Xeon, the 11-row edge
  // of dW 47 x 5058 -> 32 float32, kc 512: the product took 181-210 us against 115 us for 48 rows without an edge;
  // 148-163 so). A block that L1 keeps (a few rows of A: dW 951 x 1234 -> 2 float64) reads as well row by row, in
  // the last loop of this function, where k-outermost short runs cost more (its copy took 21 % of that product that
  // way, 8 % row by row).
  const bool edge_past_l1 = double(kc) * double(a_cs) * double(sizeof(T)) > 0.5 * double(cpu_caches().l1d);
  if (a_rs == 1 && a_cs != 1 && (mc >= mr || edge_past_l1)) {
    // Column-major source (the weight gradient's dYᵀ): k outermost, each column of A (a row of dY) read front to
    // back once and dealt out to the slivers, mr elements each, a partial last one zero-padded. Sliver by sliver,
    // every k step read mr elements a whole column apart, which the prefetchers do not follow: Xeon, dW 1000 x 20000
    // -> 300 float32 117 -> 108 ms, 1024 x 8192 -> 1024 141 -> 133 ms (the packing was 38 % of 868 x 15485 -> 118
    // packed that way).
    const int64_t full = mc / mr * mr;
    auto columns = [&](auto tile_rows) {
      constexpr int64_t kRows = decltype(tile_rows)::value;
      const int64_t rows = kRows > 0 ? kRows : mr;  // kRows 0: a tile height without its own copy loop
      for (int64_t p = 0; p < kc; ++p) {
        const T* src = a + p * a_cs;
        T* dst = out + p * rows;
        for (int64_t i0 = 0; i0 < full; i0 += rows, dst += rows * kc) std::memcpy(dst, src + i0, rows * sizeof(T));
        if (full < mc) {
          // One loop with a select: a zero-fill loop of its own became `rep stos`, whose start-up of tens of cycles
          // a column took 46 % of dW 19 x 2517 -> 19 float64 (a 3-row edge, 5 zeros a column; Xeon).
          const int64_t valid = mc - full;
          for (int64_t i = 0; i < rows; ++i) dst[i] = i < valid ? src[full + i] : T(0);
        }
      }
    };
    if (mr == 6) return columns(std::integral_constant<int64_t, 6>{});
    if (mr == 8) return columns(std::integral_constant<int64_t, 8>{});
    if (mr == 12) return columns(std::integral_constant<int64_t, 12>{});
    return columns(std::integral_constant<int64_t, 0>{});
  }
  for (int64_t i0 = 0; i0 < mc; i0 += mr) {
    const int64_t rows = std::min(mr, mc - i0);
    T* sliver = out + i0 * kc;
    if (a_cs == 1 && uk.pack_b_transposed) {
      // Row-major source (the forward X, dY): W x W blocks through the family's in-register transpose, the same
      // packer as B = Wᵀ's (an A sliver is a transposed B sliver of nr = mr). Element by element it cost 13 % of
      // 3000 x 500 -> 700 float32 on Zen 5 (0.85 -> 1.00x OpenBLAS).
      uk.pack_b_transposed(kc, rows, a + i0 * a_rs, a_rs, mr, sliver);
      continue;
    }
    if (a_cs == 1 && rows == mr && mr <= kMaxPackRows) {
      // Row-major source (the forward X, dY): k outermost, so the sliver is written sequentially while the mr
      // rows are read as mr sequential streams. (Row by row, every store went to a different line of the
      // sliver: 2 ns an element, 6 % of a 2048^3 product on Zen 5.)
      const T* rows_at[kMaxPackRows];
      for (int64_t i = 0; i < mr; ++i) rows_at[i] = a + (i0 + i) * a_rs;
      for (int64_t p = 0; p < kc; ++p)
        for (int64_t i = 0; i < mr; ++i) sliver[p * mr + i] = rows_at[i][p];
      continue;
    }
    for (int64_t i = 0; i < rows; ++i) {
      const T* src = a + (i0 + i) * a_rs;
      if (a_cs == 1) {
        for (int64_t p = 0; p < kc; ++p) sliver[p * mr + i] = src[p];
      } else {
        for (int64_t p = 0; p < kc; ++p) sliver[p * mr + i] = src[p * a_cs];
      }
    }
    for (int64_t i = rows; i < mr; ++i)
      for (int64_t p = 0; p < kc; ++p) sliver[p * mr + i] = T(0);
  }
}

// Packs `cols` columns of B(0..kc, .) into one nr-sliver: out[p*nr + j] = B(p, j), zero-padded to nr.
template <typename T>
void pack_b_sliver(int64_t kc, int64_t cols, const T* b, int64_t b_rs, int64_t b_cs, int64_t nr, T* out) {
  if (b_cs == 1) {
    for (int64_t p = 0; p < kc; ++p) {
      std::copy(b + p * b_rs, b + p * b_rs + cols, out + p * nr);
      std::fill(out + p * nr + cols, out + p * nr + nr, T(0));
    }
    return;
  }
  if (b_rs == 1) {
    // B = Wᵀ of a row-major W: each column of B is a contiguous row of W. Transposing in short k blocks keeps
    // the written lines (kBlock x nr) in L1 while every row of W is read sequentially.
    constexpr int64_t kBlock = 16;
    for (int64_t p0 = 0; p0 < kc; p0 += kBlock) {
      const int64_t p1 = std::min(kc, p0 + kBlock);
      for (int64_t j = 0; j < cols; ++j) {
        const T* src = b + j * b_cs;
        for (int64_t p = p0; p < p1; ++p) out[p * nr + j] = src[p];
      }
    }
  } else {
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t p = 0; p < kc; ++p) out[p * nr + j] = b[p * b_rs + j * b_cs];
  }
  for (int64_t p = 0; p < kc; ++p) std::fill(out + p * nr + cols, out + p * nr + nr, T(0));
}

// Packs slivers s0..s1 of a kc x nc block of B into out, sliver s at out + s*stride (stride >= nr*kc): a B with
// contiguous rows row by row through the family's pack_b_rows, B = Wᵀ of a row-major W through its transposing
// packer, else element by element.
template <typename T>
void pack_b_block(const MicroKernel<T>& uk, int64_t kc, int64_t nc, const T* b, int64_t b_rs, int64_t b_cs, int64_t s0,
                  int64_t s1, T* out, int64_t stride) {
  const int64_t nr = uk.nr;
  if (s0 >= s1) return;
  if (b_cs == 1 && uk.pack_b_rows) {
    uk.pack_b_rows(kc, std::min(nc, s1 * nr) - s0 * nr, b + s0 * nr, b_rs, out + s0 * stride, stride);
    return;
  }
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t cols = std::min(nr, nc - s * nr);
    if (b_rs == 1 && uk.pack_b_transposed)
      uk.pack_b_transposed(kc, cols, b + s * nr * b_cs, b_cs, nr, out + s * stride);
    else
      pack_b_sliver(kc, cols, b + s * nr * b_cs, b_rs, b_cs, nr, out + s * stride);
  }
}

// k == 0: the product is empty, so C = [C +] bias, then the step.
template <typename T>
void epilogue_only(const GemmArgs<T>& g) {
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      T& c = g.c[i * g.c_rs + j * g.c_cs];
      T v = g.accumulate ? c : T(0);
      if (g.bias) v += g.bias[j * g.bias_stride];
      c = g.step ? unit_step(v) : v;
    }
}

// The epilogue of the paths that add up their sums in a buffer first (long-k, stream-rows, transposed):
// C(i, j) = [C(i, j) +] sum [+ bias[j]], then [H], in the register tiles' order. `bias` is contiguous.
template <typename T>
inline void finish_element(const GemmArgs<T>& g, const T* bias, int64_t i, int64_t j, T sum) {
  T& c = g.c[i * g.c_rs + j * g.c_cs];
  if (g.accumulate) sum += c;
  if (bias) sum += bias[j];
  c = g.step ? unit_step(sum) : sum;
}

// The partial sums of `slots` slots (slot s at partial + s * slot_size, element (i, j) at i * rs + j * cs within a
// slot), added in slot order, through finish_element: the order is the shape's, not the threads'.
template <typename T>
void finish_partial_sums(const GemmArgs<T>& g, const T* bias, const T* partial, int64_t slots, int64_t slot_size,
                         int64_t rs, int64_t cs) {
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      const T* at = partial + i * rs + j * cs;
      T v = at[0];
      for (int64_t s = 1; s < slots; ++s) v += at[s * slot_size];
      finish_element(g, bias, i, j, v);
    }
}

struct Plan {
  bool skinny;  // k and n tiny, m large: vectors along m (gathered columns of A), no packing
  bool dot;     // both operands contiguous along k and the product small or skinny: dot-product kernel, no packing
  bool tall;    // few outputs, row-major A, m large: vectors along m from transposed rows of A, no packing
  bool long_k;  // small C over a long k (dW of a small layer): C in registers, k split into fixed chunks
  bool long_k_transposed;  // the same for Cᵀ = Bᵀ Aᵀ (a C of few columns)
  bool short_k;  // k <= 8 (16 for narrow rows), n >= 2: C written row by row as whole vectors (B's few rows
                 // copied contiguous if needed)
  bool stream_rows;  // a C of few rows over a B with long rows far larger than L2: B's rows streamed in order
  bool pack_a, pack_b;
  bool panel;  // the panel driver (both operands packed); else the blocked driver packs what pack_a / pack_b say
  int nthreads;
};

// The extent a tile path computes along m or n: whole tiles, then the edge in the smallest tile that covers it
// (microkernel_simd.h's tile_edges: rows four at a time down from mr, columns a vector at a time).
inline int64_t padded_rows(int64_t m, int64_t mr) {
  const int64_t edge = m % mr;
  return m - edge + (edge == 0 ? 0 : mr - (mr - edge) / kTileEdgeRowStep * kTileEdgeRowStep);
}

// Whether `elements` of T take more than half of L2: a B that large does not stay in L2 between calls (the plan's
// costs and the blocked driver's streaming of B read it that way).
template <typename T>
bool beyond_half_l2(double elements) {
  return elements * double(sizeof(T)) > 0.5 * double(cpu_caches().l2);
}
// A B with contiguous rows wider than 1 KiB that does not stay in L2 between calls: read in place in bands of
// register-tile columns, it comes from memory in short runs of rows far apart (see make_plan's pack_b).
template <typename T>
bool b_rows_stream(const GemmArgs<T>& g) {
  return g.b_cs == 1 && g.n * int64_t(sizeof(T)) > 1024 && beyond_half_l2<T>(double(g.k) * double(g.n));
}
// Whether the k x n B as a whole is larger than L2 (make_plan's pack_b and the blocked driver's streaming of B).
template <typename T>
bool b_beyond_l2(const GemmArgs<T>& g) {
  return double(g.k) * double(g.n) * double(sizeof(T)) > double(cpu_caches().l2);
}
inline int64_t padded_cols(int64_t n, int64_t nr, int64_t lanes) { return n - n % nr + round_up(n % nr, lanes); }

// Costs of the three unpacked-A paths, in FMA lanes of the register-tile kernel (lanes = its vector width, two FMAs
// a cycle: one cycle is 2 x lanes units).
//   tile  pays for padding m and n to the tile (its edges to the smallest tile covering them), for packing B (a
//         strided read and a store an element: about 12 lanes when B sits in L2 -- 8-10 for the packer alone, more
//         beside the kernel's traffic: 12x512->512 float32 ran 1.4x faster as dot products -- and 21 when it comes
//         from L3, where the transposing packer waits on misses of 8 rows at once: 0.36 ns an element on a Xeon) and
//         a small epilogue per output;
//   dot   runs its FMAs half again slower (two operand streams for R x S accumulators, with their loads from L2)
//         and pays a horizontal reduction per output (about 4 cycles: a vector width of lanes);
//   tall  pays for the transposes, log2(lanes) shuffle rounds over each k block of lanes rows, per pass of
//         tall_cols columns, at about one shuffle every other cycle: 4 log2(lanes) units an element of A and pass;
//         its FMAs do no padding in n, and a k block is padded to lanes.
// The constants are cycle counts of x86 cores' instructions (Zen 3 to Zen 5, a Xeon with AVX-512), checked against
// sweeps of random shapes, not thresholds tuned per shape. (Xeon, tile against dot: 16x512->512 float64 ran 1.7x
// faster as dot products, 53x459->764 1.13x faster in tiles.)
template <typename T>
double tile_cost(const GemmArgs<T>& g, const MicroKernel<T>& uk) {
  const double m = double(g.m), n = double(g.n), k = double(g.k);
  const double pack_b = g.b_cs == 1 ? 0.0 : (beyond_half_l2<T>(n * k) ? 21.0 : 12.0) * n * k;
  const int64_t lanes = uk.lanes;
  return double(padded_rows(g.m, uk.mr)) * double(padded_cols(g.n, uk.nr, lanes)) * k + pack_b + 2.0 * m * n;
}

template <typename T>
double dot_cost(const GemmArgs<T>& g, const MicroKernel<T>& uk) {
  const double lanes = double(uk.lanes);
  const double m = double(g.m), n = double(g.n), k = double(g.k);
  return 1.5 * m * n * k + 8.0 * lanes * m * n;
}

template <typename T>
double tall_cost(const GemmArgs<T>& g, const MicroKernel<T>& uk) {
  const int64_t lanes = uk.lanes;
  int log2_lanes = 0;
  while ((int64_t(1) << (log2_lanes + 1)) <= lanes) ++log2_lanes;
  const double passes = double(ceil_div(g.n, std::max<int64_t>(1, uk.tall_cols)));
  const double m = double(round_up(g.m, lanes)), n = double(g.n), k = double(g.k);
  return m * (double(round_up(g.k, lanes)) * 4.0 * log2_lanes * passes + k * n) + 4.0 * m * n;
}

// Waking a second thread and meeting it at a barrier costs about a microsecond while OpenMP's workers still spin
// (as they do between back-to-back calls), tens of microseconds once they sleep (on a Xeon VM: 40-70 us), and a
// whole scheduler slice on a busy machine. Each thread gets at least a few times the first, counted two ways:
// arithmetic (0.5 MFLOP of float32, 2-3 us of one core, half that of float64: Xeon, 2 threads against 1 with the
// workers spinning, float32 700 x 40 -> 30 (1.7 MFLOP) 1.54x, 18 x 220 -> 245 1.43x, 20 x 200 -> 200 1.50x,
// 60 x 100 -> 100 (1.2 MFLOP) 1.13x, float64 50 x 60 -> 100 (0.6 MFLOP) 1.22x, 74 x 163 -> 56 1.39x) and memory
// traffic (kBytesPerThread of operands and result, about 5 us of a core's stream). Short-k products are nothing
// but their traffic: 856 x 2 -> 84 in float64 is 0.3 MFLOP but writes 575 KB, and the second core halves that time
// (Zen 5: 14 -> 8 us); a matrix-vector product likewise reads W at nearly twice the rate on two cores.
constexpr double kFlopsPerThread = 5e5;
constexpr double kBytesPerThread = 128.0 * 1024;

// work_per_flop: the path's work for a FLOP of the product (its padding, its gathers), 1 where it does no more.
template <typename T>
int threads_for(const GemmArgs<T>& g, double work_per_flop) {
  const double m = double(g.m), n = double(g.n), k = double(g.k);
  const double flops = 2.0 * m * n * k * work_per_flop;
  const double bytes = double(sizeof(T)) * (m * k + k * n + (g.accumulate ? 2.0 : 1.0) * m * n);
  // kFlopsPerThread counts float32 FLOPs; a float64 one takes twice the time (half the lanes a vector).
  const double float32_flops = flops * double(sizeof(T)) / 4.0;
  const double units = std::max(float32_flops / kFlopsPerThread, bytes / kBytesPerThread);
  return static_cast<int>(std::max<double>(1, std::min<double>(num_threads(), units)));
}

// The size from which a C written before (or an operand read before) is taken to come from memory, not from a
// cache: six times L2, or this core's share of L3 where cpuid reports one a core can have (up to 64 times L2, as
// Zen 3's 32 MiB over 512 KiB; a VM's cpuid may show the L3 of the whole socket, shared with cores it does not see:
// the Xeon's 480 MiB for two vCPUs, which tells nothing).
inline double c_beyond_caches_bytes() {
  const CacheSizes& caches = cpu_caches();
  const double l3_kept = caches.l3_share <= 64 * caches.l2 ? double(caches.l3_share) : 0.0;
  return std::max(6.0 * double(caches.l2), l3_kept);
}

// A column-major A that comes from memory (the weight gradient's dYᵀ over a large batch) is packed whatever the number
// of B slivers, by the blocked driver where make_plan's rule would not pack it (its A block then sits in L2, the kc x
// nr B sliver in L1): read in place, each k step of a tile takes mr elements a column of A apart, which the first B
// sliver of every block reads from memory as misses the prefetchers do not foresee. Xeon, 1 thread, dW float32, in
// place -> packed: 868 x 15485 -> 118 47 -> 28 ms (MKL 51), 900 x 10000 -> 64 21.6 -> 14.1 ms, 300 x 12000 -> 33 8.5 ->
// 4.6, 900 x 20000 -> 6 (one sliver) 21.4 -> 16.7, 150 x 40000 -> 64 (columns 600 bytes apart) 13.8 -> 10.9; float64
// 500 x 30000 -> 10 37 -> 25 ms, 100 x 40000 -> 64 (800 bytes) 18.2 -> 14.1 (A of 13-120 MB). Columns closer than 512
// bytes the prefetchers follow (39 x 40462 -> 36 float64, 312 bytes: 5.8 -> 7.9 ms packed), and an A that L3 keeps
// between calls reads as well in place: 400 x 5000 -> 33 float32 (8 MB) 1.9 -> 2.4 ms packed, 300 x 3000 -> 64 float64
// (7 MB) 1.9 -> 2.2, 302 x 2475 -> 6 float32 (3 MB) 0.33 -> 0.59. `a_bytes`: the whole of A, of which g may be a part
// (k_split_gemm).
template <typename T>
bool column_major_a_from_memory(const GemmArgs<T>& g, const MicroKernel<T>& uk, double a_bytes) {
  constexpr int64_t kFarColumnBytes = 512;
  return g.a_rs == 1 && g.a_cs * int64_t(sizeof(T)) >= kFarColumnBytes && g.m > uk.mr &&
         a_bytes >= c_beyond_caches_bytes();
}
template <typename T>
bool column_major_a_from_memory(const GemmArgs<T>& g, const MicroKernel<T>& uk) {
  return column_major_a_from_memory(g, uk, double(g.m) * double(g.k) * double(sizeof(T)));
}

template <typename T>
Plan make_plan(const GemmArgs<T>& g, const MicroKernel<T>& uk) {
  Plan plan;
  // The skinny kernel's gather indices are 32-bit: lane * a_rs must fit.
  constexpr int64_t kMaxGatherStride = int64_t(1) << 26;
  const bool gather_ok = -kMaxGatherStride < g.a_rs && g.a_rs < kMaxGatherStride;
  // A short k (k <= 8, or up to 16 below) is mostly writing C, row by row. k <= 4 at any width; k = 5..8 while B's
  // k rows fit in half of L1 (they are re-read for every row: 9000 x 8 -> 1000 float64, 64 KB of B, ran at half the
  // tile path's rate).
  // Two or more columns only: one output column is a vector per row with one valid lane, where the skinny kernel's
  // vectors along m do W rows at once. (Measured on a Xeon with AVX-512 over m 600 and 9000, k 1..8, n 1..1000:
  // 9000 x 2 -> 8 float32 1.6x -> 12.6x torch, 9255 x 5 -> 8 float64 0.3x -> 2.1x; n = 1 stays with skinny, 0.2-0.5x
  // of it elsewhere.)
  // k = 9..16 (kShortKMax) for rows of C of at most two vectors, whose B the kernel keeps in registers: register
  // tiles over so short a k spend more on setting up and storing each tile than on its FMAs. Xeon, AVX-512, against
  // the tiles, dX = dY W (batch x outputs -> inputs): 5589 x 9 -> 19 float32 1.78x, 3312 x 9 -> 7 1.7x, 25968 x
  // 10 -> 9 (2 threads) 1.6x, 3000 x 12 -> 12 float64 1.64x, 8000 x 11 -> 15 1.66x, 60000 x 16 -> 16 float32 1.18x,
  // forwards alike (4000 x 13 -> 5 float64 1.5x); wider rows lost (56669 x 11 -> 39 float32 0.93x, 4000 x 12 ->
  // 64 0.91x, float64 5589 x 9 -> 19, three vectors, 0.95x, 3000 x 16 -> 20 0.86x). AVX2, rows of up to two
  // vectors: 3312 x 9 -> 7 float64 1.86x, 3000 x 16 -> 8 1.26x, 3000 x 16 -> 16 float32 1.26x, 60000 x 16 -> 16
  // 1.1x. And for 2 to 4 outputs in place of the skinny kernel's gathers (below): 7120 x 10 -> 3 float32 33 -> 24
  // us, 3000 x 12 -> 4 float64 20 -> 14 us, 9000 x 13 -> 4 on 2 threads 35 -> 25 us.
  const bool short_k_width = g.k <= 8 || g.n <= 2 * uk.lanes;
  const bool short_b_fits =
      g.k <= 4 || double(g.k) * double(g.n) * double(sizeof(T)) <= 0.5 * double(cpu_caches().l1d);
  plan.short_k = uk.short_k && g.k <= kShortKMax && short_k_width && g.c_cs == 1 && g.n >= 2 && short_b_fits;
  plan.skinny = !plan.short_k && g.k <= 8 && g.n <= 8 && g.m >= 64 && gather_ok;
  // With a row-major A the unpacked paths compete on cost. Few outputs of a tall product (2 <= n <= 16) may take
  // the tall kernel, which reads A once with no padding of n to the tile; one output is a dot product per row,
  // which needs no transposes.
  const int64_t lanes = uk.lanes;
  const bool tall_ok = !plan.skinny && !plan.short_k && uk.tall && g.a_cs == 1 && (g.b_rs == 1 || g.b_cs == 1) &&
                       2 <= g.n && g.n <= kTallMaxCols && g.m >= 4 * lanes;
  const bool dot_ok = !plan.skinny && !plan.short_k && g.a_cs == 1 && g.b_rs == 1;
  const double tile = tile_cost(g, uk);
  const double dot = dot_ok ? dot_cost(g, uk) : tile;
  const double tall = tall_ok ? tall_cost(g, uk) : tile;
  plan.tall = tall_ok && tall < tile && tall < dot;
  plan.dot = dot_ok && !plan.tall && dot < tile;
  // One to four outputs over a longer k (the backward dX = dY W of a layer with few inputs) where neither the tall
  // kernel nor dot products pay: the skinny kernel's gathered columns of A (vectors along m, k gathers and k n FMAs
  // for a vector of rows) beat tiles that pad n to a whole vector and broadcast A element by element, while n is at
  // most half a vector. Xeon, AVX-512 float32 then float64: 7120 x 10 -> 3 31 -> 21 us, 34 -> 26; 6244 x 20 -> 2
  // 42 -> 26, 46 -> 31; 3000 x 60 -> 4 51 -> 36, 57 -> 54; 10000 x 200 -> 2 713 -> 503, alike; five outputs lost
  // (3000 x 60 -> 5 47 -> 68 us); AVX2 float32 alike (6244 x 20 -> 2 45 -> 27), AVX2 float64 (four lanes) lost from
  // n = 4 (3000 x 60 -> 4 48 -> 74 us).
  plan.skinny = plan.skinny || (!plan.short_k && !plan.tall && !plan.dot && g.a_cs == 1 && g.k > 8 &&
                                g.n <= std::min<int64_t>(4, lanes / 2) && g.m >= 64 && gather_ok);
  // A small C over a long k, e.g. dW = dYᵀ X of a 16 -> 16 layer over a batch of 65536: register tiles would pad
  // 16 x 16 to 24 x 32 and copy edge slivers of both operands every k block; the long-k kernel keeps C in registers.
  // A row vector of A needs no row stride.
  // Few columns instead (dW of a layer with few inputs and many outputs): the same kernel on Cᵀ = Bᵀ Aᵀ. Where
  // both fit, the one with fewer instructions a k step (FMAs, B vectors loaded, A elements broadcast) wins: dW of
  // a 1 -> 9 layer is 9 FMAs of one lane each as a 9 x 1 C, one FMA of 9 lanes as its 1 x 9 transpose.
  const double tile_lanes = double(round_up(g.m, uk.mr)) * double(round_up(g.n, uk.nr));
  // The kernel reads its B (Aᵀ when transposed) in bands two vectors wide, each band over all of k: rows of up to
  // 8 bands (1 KiB) are read well enough, wider ones in many bands of rows far apart, which only pays while that
  // operand stays in L2. Xeon, dW over a large batch, long-k against tiles with the next k block streamed in:
  // 490 -> 8 float32 (16 bands) 0.46x MKL against 1.1x, 200 -> 9 float64 (13) 0.58x against 0.76x, 200 -> 9
  // float32 (7) 0.77x against 0.67x, 100 -> 12 float64 (7) 1.0x against 0.78x, 16 -> 16 (1) 1.2x against 0.47x.
  constexpr int64_t kLongKMaxBands = 8;
  // A C of up to kLongKWideRows rows is read in wider runs (long_k_wide_vectors: 16 vectors for a row vector).
  auto band = [&](int64_t rows) { return (rows <= kLongKWideRows ? long_k_wide_vectors(rows) : 2) * lanes; };
  const bool b_rows_in_band =
      ceil_div(g.n, band(g.m)) <= kLongKMaxBands || !beyond_half_l2<T>(double(g.k) * double(g.n));
  const bool a_cols_in_band =
      ceil_div(g.m, band(g.n)) <= kLongKMaxBands || !beyond_half_l2<T>(double(g.k) * double(g.m));
  const bool long_k_base = !plan.skinny && !plan.short_k && !plan.tall && !plan.dot && uk.long_k && g.k >= 16;
  // A needs a unit row stride (dYᵀ), except for a C of a few rows, whose A rows (dY's) are read in place: the
  // backward dX = dY W of a short batch, where register tiles pad the rows (2 to 4) and read W in narrow bands.
  const bool a_rows_ok = g.a_rs == 1 || g.m == 1 || (g.a_cs == 1 && g.m <= kLongKWideRows);
  // Up to kLongKMaxRows rows, or two vectors' lanes of them (AVX-512 float32: 32). Xeon, dW over 30000 rows,
  // 30 x 24 float32 0.60 -> 1.1x MKL, 19 x 24 0.42 -> 0.94x; float64 C of 24 rows ran 0.8x as fast as in tiles.
  const int64_t long_k_rows = std::max<int64_t>(kLongKMaxRows, 2 * lanes);
  // Tiles that leave edges copy them every k block (an edge sliver of B read in place, the edge rows of A): over a
  // long k that is a copy of the operands, where the long-k kernel over one column group (two vectors) reads each
  // operand once a row group (Xeon, dW 20 x 30 over 20000 rows float32: 0.53x MKL in tiles, 1.0x; 24 x 100 over 5000
  // in four column groups 0.97x against 0.84x). So for a C within one tile's width (two vectors, or float64's three
  // on AVX-512: dW 7 x 3000 -> 20 27 -> 18 us, 7 x 2216 -> 20 19.8 -> 13.4, 15 x 3000 -> 20 53 -> 36, Xeon).
  const bool edges = g.m % uk.mr != 0 || g.n % uk.nr != 0;
  const bool long_k_ok =
      long_k_base && a_rows_ok && g.b_cs == 1 && g.m <= long_k_rows && b_rows_in_band &&
      ((edges && g.n <= std::max(2 * lanes, uk.nr)) ||
       tile_lanes > 1.25 * double(g.m) * double(round_up(g.n, lanes)));
  // On Cᵀ the FMAs saved must also pay for the transposing epilogue, about 2.5 cycles (5 vectors' lanes) an output.
  // Xeon, A column-major, float32, tiles against long-k on Cᵀ: 9546 x 19 -> 24 4.0x, 5000 x 40 -> 24 2.4x,
  // 300 x 60 -> 16 2.9x, 700 x 64 -> 9 1.7x faster (float64 64 x 40 -> 8 2.0x), but 100 x 120 -> 3 2.7x slower,
  // where the tiles pad 3 columns to 16.
  const double long_k_t_lanes =
      double(g.n) * double(round_up(g.m, lanes)) * double(g.k) + 5.0 * double(lanes) * double(g.m) * double(g.n);
  const bool long_k_t_ok =
      long_k_base && (g.b_cs == 1 || g.n == 1) && g.a_rs == 1 && g.n <= long_k_rows && a_cols_in_band &&
      tile_lanes * double(g.k) > long_k_t_lanes &&
      ((edges && g.m <= 2 * lanes) || tile_lanes > 1.25 * double(g.n) * double(round_up(g.m, lanes)));
  auto long_k_step = [&](int64_t rows, int64_t cols) {
    const double vectors = double(ceil_div(cols, lanes));
    return double(rows) * vectors + vectors + double(rows);
  };
  // B's rows stream (stream_rows below) from 1 KiB rows on, where B is larger than L2: one that stays there between
  // calls the tiles read well (Xeon, dX 6 x 663 -> 330 float64, 1.75 MB, ran 1.15x, on 2 threads 2.2x as fast in
  // tiles as streamed); a row vector's B from half of L2 on, where the tiles would pad its one row (the column 5000
  // x 64 -> 1 float32 as a row, 1.3 MB: 1.5x). And a row vector's B larger than L2 (or than half of it where L2 is
  // 1 MiB or less) streams rather than going to the long-k kernel in column groups of 16 vectors: Zen 3 (512 KiB
  // L2), 1 x 4087 -> 349 float64 1.48-1.67x, float32 1.21x, 1 x 20000 -> 1000 float32 1.33x, 1 x 10000 -> 200
  // float64 1.31x, 1 x 50000 -> 300 float32 1.10x; Xeon (2 MiB), threads on parts of k, 1 x 20000 -> 1000 float32
  // 1.13x (2 threads 1.14x), 1 x 13826 -> 703 float64 1.09x (1.13x), 1 x 4087 -> 349 1.12x; within the Xeon's L2
  // the long-k kernel won (1 x 883 -> 150 float64, 1 MB: 0.80-0.92x of it streamed).
  const double b_bytes = double(g.k) * double(g.n) * double(sizeof(T));
  const double l2 = double(cpu_caches().l2);
  const int64_t b_row_bytes = uk.stream_rows && g.b_cs == 1 ? g.n * int64_t(sizeof(T)) : 0;  // 0: no streaming
  const bool b_rows_streamable = b_row_bytes >= 1024 && b_bytes > (g.m == 1 ? 0.5 : 1.0) * l2;
  const bool row_vector_streams = g.m == 1 && b_rows_streamable && (l2 <= double(1 << 20) || b_bytes > l2);
  // A C of 3 to kStreamRowsPastLongKMax rows over a B of twice L2 and more (from L3 or memory), in rows of four
  // cache lines and more, streams rather than going to the long-k kernel, which reads each k chunk of B in bands (the
  // first from memory, in runs of a few lines rows apart). Xeon, dW over a large batch, against MKL, long-k ->
  // streamed:
  // float32 5 x 31962 -> 226 0.79 -> 0.94x, 8 x 30000 -> 200 0.68 -> 0.91x, 5 x 20000 -> 100 0.95 -> 1.15x, 8 x 30000
  // -> 64 0.97 -> 1.07x (2 threads 1.42 -> 1.64x), 8 x 5000 -> 200 (4 MB) 0.95 -> 1.13x; float64 4 x 8000 -> 120
  // 1.08 -> 1.23x, 3 x 30000 -> 60 1.03 -> 1.17x. Alike within 2.4-3 MB of B and for one or two rows; rows of one
  // or two lines lost (4 x 30000 -> 32 float32 1.21 -> 1.11x, -> 16 1.47 -> 0.58x).
  const bool streams_past_long_k =
      b_row_bytes >= 256 && b_bytes >= 2.0 * l2 && 3 <= g.m && g.m <= kStreamRowsPastLongKMax && g.m < uk.mr;
  plan.long_k = !row_vector_streams && !streams_past_long_k && long_k_ok &&
                (!long_k_t_ok || long_k_step(g.m, g.n) <= long_k_step(g.n, g.m));
  plan.long_k_transposed = long_k_t_ok && !plan.long_k && !streams_past_long_k;
  // A C of a few rows over a B with rows of 1 KiB or more, larger than L2 (the weight gradient dYᵀ X of a
  // layer with few outputs over a large batch): B's rows are read in long runs, a chunk that stays in L2 at a time,
  // and added into C's rows held in L1 (stream_rows). Tiles read such a B in bands of nr columns, rows far apart,
  // which the prefetchers follow poorly. Xeon, against the tiles, 1 and 2 threads: 3 x 2086 -> 1001 float64
  // +54-59 %, 5 x 5000 -> 700 +28-46 %, 7 x 12000 -> 800 +23-29 %, 2 x 9000 -> 3000 float32 2.5x. Rows of 1-4 KiB
  // lost while two threads read halves of each row (6 x 30000 -> 256 float32 0.74x), and won once each read whole
  // rows of its own parts of k (stop 27; 1 thread, then 2: 6 x 10000 -> 400 float64 1.58x, 1.74x; 5 x 31962 -> 226
  // 1.57x, 2.14x; 7 x 53928 -> 423 float32 1.28x, 1.70x; 7 x 30000 -> 300 2 threads 1.80x). Against MKL, dW of 3 x
  // 2086 -> 1001 float64 0.67 -> 1.02x (two threads 1.39x), 7 x 12000 -> 800 1.73x. Zen 3 (512 KiB L2), against the
  // tiles, with threads on halves of rows: 2 x 30000 -> 500 float64 (4 KB rows) 1.4-1.8x, 5 x 31962 -> 226 (1.8 KB)
  // 1.45-1.5x, 5 x 20000 -> 150 1.28x, 3 x 20000 -> 300 float32 (1.2 KB) 1.03x; 5 x 20000 -> 100 float64 (800 B)
  // 0.76x. Up to kStreamRowsMax rows, fewer beside register tiles of 12 rows and more (see there).
  const int64_t stream_rows_max = uk.mr >= kStreamRowsTallTile ? kStreamRowsBesideTallTilesMax : kStreamRowsMax;
  plan.stream_rows = (b_rows_streamable || streams_past_long_k) && !plan.short_k && !plan.skinny && !plan.tall &&
                     !plan.dot && !plan.long_k && !plan.long_k_transposed && g.m <= stream_rows_max;
  const bool a_direct = g.a_cs == 1 || g.a_rs == 1;
  const bool b_direct = g.b_cs == 1;
  // A is reused once per B sliver: pack it only when there are enough slivers to amortise the copy.
  // float64 needs more of them: on a Xeon, packing a row-major A (12-row slivers cut from 8 x 8 transposes) cost
  // 10-20 % of products with 5-16 B slivers (292x649->75 0.81 -> 1.02x MKL, 4361x395->133 0.89 -> 1.00x with A read
  // in place), while float32 was alike either way (so it keeps the threshold measured on Zen 5).
  // And only over a k longer than the panel driver's k block: within one block the A rows read in place cost no
  // more than the packed sliver, and packing is an extra pass over A (Zen 3, row-major A float32, against the panel
  // driver: 2576 x 28 -> 80 1.3-1.45x, 50983 x 41 -> 240 1.26x, 3000 x 64 -> 200 on two threads 1.2x, 1000 x 256 ->
  // 500 1.07x, float64 2000 x 200 -> 600 1.03x; k 512 alike; 1024 x 1024 -> 1024 0.95x in place, so packed).
  const int64_t slivers_to_pack_a = sizeof(T) == 8 ? 16 : 4;
  plan.pack_a = !a_direct || (g.n > slivers_to_pack_a * uk.nr && g.m > uk.mr && g.k > kernel_blocking(uk).panel_kc);
  // B is reused once per A sliver. A B read in place that does not fit in L2, in rows longer than 1 KiB, is packed
  // from a whole tile of rows on: its blocks are then read from memory row by row, in long runs, where the tiles
  // would read them in bands of nr columns, rows kilobytes apart (a new page every few rows). Xeon, 1 thread, against
  // MKL, the weight gradient dW = dYᵀ X over a large batch (B = X): 62 x 42590 -> 563 float32 0.40 -> 0.70x, 77 x
  // 57617 -> 775 0.59 -> 0.73x, 18 x 41270 -> 291 0.71 -> 0.87x, 62 x 42590 -> 563 float64 0.73 -> 0.83x; dX = dY W
  // of a short batch (B = W): 90 x 4096 -> 4096 float32 0.88 -> 1.45x; 12 rows alike (12 x 4096 -> 1024 float32 -5 %
  // in process, 12 x 45231 -> 490 +7 %).
  // (A B within L2 stays there between calls and reads well in place: 18 x 294 -> 527 float64, 1.2 MB, ran 0.83x
  // packed, 16 x 700 -> 700 float32, 2 MB, 0.83x; 2.4 MB 1.02-1.13x, 4 MB 1.06-1.22x.)
  plan.pack_b = !b_direct || g.m > 8 * uk.mr || (g.m >= uk.mr && b_rows_stream<T>(g) && b_beyond_l2(g));
  plan.panel = plan.pack_a && plan.pack_b;  // both packed by these rules: the panel driver
  plan.pack_a = plan.pack_a || column_major_a_from_memory(g, uk);
  // Threads are counted on the work the chosen path does, not on the product's FLOPs alone: register tiles compute
  // their padding too (a C of 7 columns in tiles of 16), and the skinny kernel's gather of each column of A for a
  // vector of rows costs about half a vector's FMAs beside its n FMAs. Xeon, 2 threads, products of 8-18 us that
  // ran on one: 787 x 23 -> 13 float64 13.8 -> 10.2 us (MKL 10.9), 344 x 156 -> 7 float32 18.0 -> 12.6 us (14.6),
  // skinny 1981 x 27 -> 4 float32 17.1 -> 12.1 us (17.3); 42 random products of 0.5-2 units of work alike.
  const bool tiles = !plan.short_k && !plan.skinny && !plan.tall && !plan.dot && !plan.long_k &&
                     !plan.long_k_transposed && !plan.stream_rows;
  double work_per_flop = 1.0;
  if (tiles)
    work_per_flop =
        double(padded_rows(g.m, uk.mr)) * double(padded_cols(g.n, uk.nr, lanes)) / (double(g.m) * double(g.n));
  else if (plan.skinny)
    work_per_flop = double(g.n + lanes / 2) / double(g.n);
  plan.nthreads = threads_for(g, work_per_flop);
  return plan;
}

// The long-k path: k is cut into chunks fixed by the shape alone (so results do not depend on the thread count),
// threads take chunks, each chunk's sums go to its own slot of the workspace, and the slots are added in chunk order
// before the epilogue ([+ C] [+ bias] [then H]) writes C.
// With `transposed` the kernel computes Cᵀ = Bᵀ Aᵀ (A'(j, p) = B(p, j), B'(p, i) = A(i, p)) and the epilogue
// writes it back transposed.
template <typename T>
void long_k_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk, int nthreads, bool transposed) {
  const int64_t chunks =
      std::clamp<int64_t>(ceil_div(g.k, kLongKChunk), 1, std::max<int64_t>(1, kLongKMaxPartial / (g.m * g.n)));
  const int64_t chunk = round_up(ceil_div(g.k, chunks), 8);
  // One chunk with nothing to add (the backward's dX, dW): the kernel writes C itself.
  const bool direct = chunks == 1 && !transposed && !g.accumulate && !g.bias && !g.step && g.c_cs == 1;
  // Cᵀ's rows in the slots are padded to whole cache lines, which the family's transposing epilogue reads whole.
  const int64_t rows = transposed ? g.n : g.m, cols = transposed ? g.m : g.n;
  const int64_t ld = transposed ? round_up(cols, int64_t(64 / sizeof(T))) : cols;
  const int64_t cell = rows * ld;
  const T* bias = nullptr;
  T* const partial = gemm_workspace(g, direct ? 0 : chunks * cell, bias);
  // The kernel's C (Cᵀ when transposed): rows x cols, and with fewer chunks than threads its columns split on whole
  // column groups (of the wide kernel for a C of up to kLongKWideRows rows, else of two vectors), each part at least
  // one group wide: every part then cuts its columns into the groups the whole would (and a C of few rows runs the
  // wide kernel in each), in which each output is one chain of FMAs wherever its group falls, so the bits do not
  // depend on the split. (Taller C's split too: Xeon, dW 29 x 447 -> 205 float32 on 2 threads 50 -> 30 us, 14 x 300
  // -> 100 float64 16 -> 12 us.)
  const int64_t group = (rows <= kLongKWideRows ? long_k_wide_vectors(rows) : 2) * uk.lanes;
  const int64_t col_parts = chunks < nthreads ? std::clamp<int64_t>(cols / group, 1, nthreads) : 1;
  auto part_start = [&](int64_t part) {
    return part == col_parts ? cols : part == 0 ? 0 : cols * part / col_parts / group * group;
  };
  parallel_for(nthreads, chunks * col_parts, [&](int64_t task) {
    const int64_t ch = task / col_parts, part = task % col_parts;
    const int64_t j0 = part_start(part), j1 = part_start(part + 1);
    const int64_t p0 = ch * chunk, kk = std::min(chunk, g.k - p0);
    const int64_t out_rs = direct ? g.c_rs : ld;
    T* const out = (direct ? g.c : partial + ch * cell) + j0;
    if (j0 >= j1) return;
    if (kk <= 0) {  // rounding the chunk up can leave the last ones empty
      for (int64_t i = 0; i < rows; ++i) std::fill(out + i * out_rs, out + i * out_rs + (j1 - j0), T(0));
      return;
    }
    // Cᵀ = Bᵀ Aᵀ: A'(j, p) = B(p, j), B'(p, i) = A(i, p), with make_plan's unit strides b_cs (or n == 1) and a_rs.
    if (transposed)
      uk.long_k(rows, j1 - j0, kk, g.b + p0 * g.b_rs, g.b_cs, g.b_rs, g.a + p0 * g.a_cs + j0 * g.a_rs, g.a_cs, out,
                out_rs);
    else
      uk.long_k(rows, j1 - j0, kk, g.a + p0 * g.a_cs, g.a_rs, g.a_cs, g.b + p0 * g.b_rs + j0 * g.b_cs, g.b_rs, out,
                out_rs);
  });
  if (direct) return;
  if (transposed && uk.transpose_out && g.c_cs == 1) {
    // The slots added into the first in order (the sums finish_partial_sums forms), then the family's transposing
    // epilogue that the transposed products use: element by element, strided across the slots, the finish took 19 of
    // the 34 us of dW 918 x 100 -> 9 float32 (Xeon; 15.5 us in all so).
    for (int64_t ch = 1; ch < chunks; ++ch)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) partial[r * ld + j] += partial[ch * cell + r * ld + j];
    uk.transpose_out(g.m, g.n, partial, ld, g.c, g.c_rs, g.accumulate, bias, g.step);
    return;
  }
  finish_partial_sums(g, bias, partial, chunks, cell, transposed ? 1 : ld, transposed ? ld : 1);
}

// The stream-rows path (MicroKernel::stream_rows): k is cut into parts fixed by the shape alone, each summed into
// its own slot of the workspace, the slots added in order before the epilogue ([C +] sums [+ bias] [then H]). Threads
// take whole parts where there are enough of them, so that each reads whole rows of B, front to back; else they
// split C's columns within each part. Within a part, k goes in chunks whose rows of B (the thread's columns of them)
// stay in half of L2, and within a chunk over column panels whose rows of C take most of half of L1. So B comes from
// memory once, in runs of kilobytes of its rows, and C from L1. Every sum is one chain of FMAs over its part's rows
// in order whichever way the threads split, so the bits do not depend on the thread count. A single part (a k under
// 2 kStreamRowsMinPart) on one thread sums into C itself where it is written plain.
template <typename T>
void stream_rows_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk, int nthreads) {
  const int64_t lanes = uk.lanes;
  // Threads that split the columns write them in the workspace (rows a whole number of cache lines, column ranges
  // on lines), not in C: in C, rows that do not start on a line would share lines between threads, each written every
  // 4 rows of B (10 x 8192 -> 784 float32 on 2 threads ran at half the speed of 1).
  const int64_t ld = round_up(g.n, lanes);
  const int64_t slot = g.m * ld;
  // Several parts come in multiples of 4, so that 2 and 4 threads take equal shares (3 x 2086 -> 1001 float32 on
  // 2 threads: 5 parts ran 0.84x as fast as 2), at most kLongKMaxPartial elements of sums in all.
  // A k of kStreamRowsMinPart rows a part and more takes two parts at least (the backward dX = dY W of a short
  // batch, k the layer's outputs): two threads then read whole rows of their own halves of B, which stay in their
  // L2s between calls, where threads on halves of every row (one part) each had the prefetchers fetch the other half
  // too and ran about as fast as one. Xeon, 2 threads, against MKL: dX 4 x 648 -> 968 float32 0.54 -> 0.86x, 4 x 407
  // -> 716 float64 0.81 -> 1.05x, 6 x 719 -> 837 0.98 -> 1.30x; one thread alike (the second slot's sums cost little
  // beside reading B).
  int64_t parts = ceil_div(g.k, kStreamRowsPart);
  if (parts > 1) parts = round_up(parts, 4);
  if (g.k >= 2 * kStreamRowsMinPart) parts = std::max<int64_t>(parts, 2);
  if (parts * slot > kLongKMaxPartial) parts = std::max<int64_t>(1, kLongKMaxPartial / slot / 4 * 4);
  const int64_t part_rows = round_up(ceil_div(g.k, parts), 4);
  const bool direct = parts == 1 && nthreads == 1 && g.c_cs == 1 && !g.accumulate && !g.bias && !g.step;
  const T* bias = nullptr;
  T* const sums = direct ? g.c : gemm_workspace(g, parts * slot, bias);
  const int64_t sums_rs = direct ? g.c_rs : ld;
  const bool split_parts = parts >= nthreads;
  const int64_t team_cols = split_parts ? 1 : nthreads;
  // Column panels whose rows of C, with the kernel's 4 rows of B, take half of L1; k chunks whose rows of B (the
  // thread's columns of them) take half of L2, a multiple of the kernel's 4 rows a pass.
  const int64_t panel =
      std::max(lanes, cpu_caches().l1d / 2 / ((g.m + 4) * int64_t(sizeof(T))) / lanes * lanes);
  const int64_t row_bytes = std::max<int64_t>(1, ceil_div(g.n, team_cols) * int64_t(sizeof(T)));
  const int64_t chunk = std::max<int64_t>(4, cpu_caches().l2 / 2 / row_bytes / 4 * 4);
  auto run_part = [&](int64_t part, int64_t j0, int64_t j1) {
    T* const out = sums + part * slot;
    for (int64_t i = 0; i < g.m; ++i) std::fill(out + i * sums_rs + j0, out + i * sums_rs + j1, T(0));
    const int64_t p_end = std::min(g.k, (part + 1) * part_rows);
    for (int64_t p0 = part * part_rows; p0 < p_end; p0 += chunk) {
      const int64_t kk = std::min(chunk, p_end - p0);
      for (int64_t j = j0; j < j1; j += panel)
        uk.stream_rows(g.m, std::min(panel, j1 - j), kk, g.a + p0 * g.a_cs, g.a_rs, g.a_cs, g.b + p0 * g.b_rs + j,
                       g.b_rs, out + j, sums_rs);
    }
  };
  run_team(nthreads, [&](int64_t t, int64_t team) {
    if (split_parts) {
      for (int64_t part = parts * t / team; part < parts * (t + 1) / team; ++part) run_part(part, 0, g.n);
      return;
    }
    const int64_t units = ceil_div(g.n, lanes);
    const int64_t j0 = std::min(g.n, units * t / team * lanes), j1 = std::min(g.n, units * (t + 1) / team * lanes);
    if (j0 >= j1) return;
    for (int64_t part = 0; part < parts; ++part) run_part(part, j0, j1);
  });
  if (direct) return;
  finish_partial_sums(g, bias, sums, parts, slot, ld, 1);
}

// The short-k path: rows split between threads (on multiples of 16); B's k rows copied contiguous first where its
// columns are strided (the forward's Wᵀ with k = 2..4: k x n elements), and a strided bias gathered.
template <typename T>
void short_k_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk, int nthreads) {
  const bool copy_b = g.b_cs != 1;
  const T* bias = nullptr;
  T* const b_rows = gemm_workspace(g, copy_b ? g.k * g.n : 0, bias);
  const T* b = g.b;
  int64_t b_rs = g.b_rs;
  if (copy_b) {
    for (int64_t p = 0; p < g.k; ++p)
      for (int64_t j = 0; j < g.n; ++j) b_rows[p * g.n + j] = g.b[p * g.b_rs + j * g.b_cs];
    b = b_rows;
    b_rs = g.n;
  }
  // A C far larger than L2 that is already in memory (an output written before, not a fresh one: see
  // pages_resident) goes out with streaming stores, which skip reading each line before it is written. Xeon (2 MiB
  // L2), k = 2, streaming against plain stores into a C written before: 2 MB 0.64x, 11 MB 0.73-0.89x, 22 MB
  // 1.09-1.4x, 44 MB and more 1.75-1.9x; k = 3 between calls of another product as large (MKL's, in a sweep), 1
  // thread: 12 MB 0.93-1.07x, 14 MB 0.96-1.04x, 15.2 MB 1.02-1.13x, 16.7 MB 1.24-1.5x. So from
  // c_beyond_caches_bytes() on (six times L2, or a plausible L3 share). Zen 3, whose L3 holds such a C between calls: 10000 x 2 -> 300 float32
  // (12 MB) 1.47x faster with plain stores, 1234 x 2 -> 951 (4.7 MB) 1.5x, 18912 x 1 -> 44 (3.3 MB) 1.8x; 16000 x
  // 4 -> 1000 (64 MB) 1.56x faster streamed. Into a fresh output they lose: 10715 x 4 -> 521 float64 end to end
  // 15.6 ms against 9.6.
  const double c_bytes = double(g.m) * double(g.n) * double(sizeof(T));
  // And only rows that are mostly whole cache lines: a multiple of 64 bytes, or 640 bytes and more. The head and
  // tail of other rows share lines with the rows beside them and take plain stores, which read their lines from
  // memory between the streamed ones (Xeon, C of 13-37 MB written before, against torch, streamed / plain: 54025 x
  // 8 -> 62 float32, 248-byte rows, 0.43-0.77 / 1.1-2.2x; -> 62 float64 (496 bytes) 0.9-1.1 / 1.2-1.9x; 38589 x
  // 3 -> 140 float32 (560) 0.85-0.89 / 1.11-1.16x; 30000 x 3 -> 150 (600) 1.35-1.46 / 1.62-1.75x; -> 170 (680)
  // alike; -> 180 (720) 1.6-1.7 / 1.2-1.3x; 40732 x 1 -> 229 (916) 1.64-1.77 / 1.04-1.09x; -> 64, whole lines,
  // 2.2-2.3 / 2.0-2.5x).
  const int64_t row_bytes = g.n * int64_t(sizeof(T));
  const bool rows_mostly_lines = row_bytes % 64 == 0 || row_bytes >= 640;
  const bool stream_c = c_bytes >= c_beyond_caches_bytes() && g.c_rs == g.n &&
                        rows_mostly_lines && pages_resident(g.c, static_cast<std::size_t>(c_bytes));
  run_team(nthreads, [&](int64_t t, int64_t team) {
    const int64_t units = ceil_div(g.m, 16);
    const int64_t lo = std::min(g.m, units * t / team * 16), hi = std::min(g.m, units * (t + 1) / team * 16);
    if (lo < hi)
      uk.short_k(hi - lo, g.n, g.k, g.a + lo * g.a_rs, g.a_rs, g.a_cs, b, b_rs, g.c + lo * g.c_rs, g.c_rs,
                 g.accumulate, bias, g.step, stream_c);
  });
}

// The unpacked block kernels (dot, skinny, tall): threads split the rows (or, for a short batch, the columns) into
// contiguous ranges.
template <typename T>
void unpacked_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk, const Plan& plan) {
  // skinny and tall share one contract (SkinnyKernelFn); tall needs a_cs == 1, which make_plan checked.
  const SkinnyKernelFn<T> vector_m = plan.tall ? uk.tall : uk.skinny;
  auto run = [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    if (i0 >= i1 || j0 >= j1) return;
    const T* a = g.a + i0 * g.a_rs;
    const T* b = g.b + j0 * g.b_cs;
    T* c = g.c + i0 * g.c_rs + j0 * g.c_cs;
    const T* bias = g.bias ? g.bias + j0 * g.bias_stride : nullptr;
    if (plan.skinny || plan.tall)
      vector_m(i1 - i0, j1 - j0, g.k, a, g.a_rs, g.a_cs, b, g.b_rs, g.b_cs, c, g.c_rs, g.c_cs, g.accumulate, bias,
                g.bias_stride, g.step);
    else
      uk.dot(i1 - i0, j1 - j0, g.k, a, g.a_rs, b, g.b_cs, c, g.c_rs, g.c_cs, g.accumulate, bias, g.bias_stride, g.step);
  };
  const bool split_rows = g.m >= g.n;
  run_team(plan.nthreads, [&](int64_t t, int64_t team) {
    // Range boundaries on multiples of 16 keep the kernels' full tiles and vectors aligned with the split.
    const int64_t extent = split_rows ? g.m : g.n, units = ceil_div(extent, 16);
    const int64_t lo = std::min(extent, units * t / team * 16), hi = std::min(extent, units * (t + 1) / team * 16);
    if (split_rows)
      run(lo, hi, 0, g.n);
    else
      run(0, g.m, lo, hi);
  });
}

template <typename T>
void blocked_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk, const Plan& plan) {
  const int64_t mr = uk.mr, nr = uk.nr;
  const Blocking& blk = kernel_blocking(uk);
  const int64_t mc_max = std::min(blk.mc, round_up(g.m, mr));
  int64_t nc_max = std::min(blk.nc, round_up(g.n, nr));
  // k blocks: in the sliver order (below) the kc x nr B sliver stays in L1, so they are blk.kc long; in the row-strip
  // order, taken when all of a panel's B slivers fit in half of L2, the A sliver does instead, as in the panel
  // driver, so they are as long as there (blk.panel_kc) and C is loaded and stored fewer times. Xeon, C written once
  // instead of twice: 9533 x 271 -> 48 float32 0.91 -> 1.04x MKL, 21157 x 218 -> 18 0.90 -> 1.10x, 12523 x 823 -> 38
  // 0.85 -> 1.04x (float64 1.15 -> 1.27x).
  // Where the panel's slivers at that length would overflow half of L2, the k blocks are shortened to fit, down to
  // twice the sliver order's (Xeon, float64 20000 x 994 -> 360, A read in place: 65 GFLOP/s in the sliver order with
  // k blocks of 128, 80-85 in row strips of 360; 336 columns, whose panel fits at 384, ran at 80 already). Equal k
  // blocks instead of a remainder lost 13 % on 12523 x 823 -> 38 float64.
  const int64_t panel_cols = round_up(nc_max, nr);
  // Not rounded down: a k block that fitted before this shortening still does, unchanged.
  const int64_t fitting_kc = cpu_caches().l2 / (2 * panel_cols * int64_t(sizeof(T)));
  int64_t long_kc = std::min({std::max(blk.kc, blk.panel_kc), fitting_kc, g.k});
  bool long_k_blocks = long_kc >= std::min(2 * blk.kc, g.k);
  // A k within one long block whose panel overflows half of L2 only by its width is not cut into k blocks (each a
  // pass of loads and stores over all of C, and a short last one: 152 = 128 + 24) but into column blocks of equal
  // width whose panel over the whole k fits (A is then read once per column block). Xeon, 1 thread
  // unless said: float64 1000 x 300 -> 1000 8.7 -> 7.6 ms, 3000 x 250 -> 1500 37 -> 31 ms, dW 368 x 152 -> 1019
  // 1.90 -> 1.67 ms (2 threads 1.07 -> 0.92), float32 2000 x 384 -> 2000 23.5 -> 21.8 ms; 2000 x 300 -> 700 float32
  // alike (-1 % on one thread, +2 % on two).
  if (!long_k_blocks && g.k <= std::max(blk.kc, blk.panel_kc)) {
    const int64_t fitting_nc = cpu_caches().l2 / 2 / (g.k * int64_t(sizeof(T))) / nr * nr;
    if (fitting_nc >= 4 * nr) {
      nc_max = round_up(ceil_div(g.n, ceil_div(g.n, fitting_nc)), nr);
      long_kc = g.k;
      long_k_blocks = true;
    }
  }
  const int64_t kc_max = long_k_blocks ? long_kc : std::min(blk.kc, g.k);
  // A C that comes from memory is written in row strips (the row-strip order below), not in bands of nr columns
  // across mc rows, each a run of 64-192 bytes a row: with B's panel up to all of L2 (B slivers then come from L2
  // a little less often), beyond that in column blocks whose panel takes half of L2. Xeon, float64 against the
  // sliver order: row strips 57225 x 318 -> 1010 1.40x (2 threads 1.32x), 20000 x 300 -> 2000 1.16x, 10000 x 200 ->
  // 1500 1.36x, float32 30000 x 300 -> 1500 1.31x; narrower column blocks 20000 x 318 -> 4000 1.39x (row strips
  // over its 4 MB panel 0.86x), float32 20000 x 200 -> 8000 1.29x.
  const double c_bytes = double(g.m) * double(g.n) * double(sizeof(T));
  const double panel_bytes = double(kc_max) * double(round_up(nc_max, nr)) * double(sizeof(T));
  const bool c_strips = c_bytes >= c_beyond_caches_bytes() && !long_k_blocks;
  if (c_strips && panel_bytes > double(cpu_caches().l2)) {
    const int64_t fitting_nc = std::max(nr, cpu_caches().l2 / 2 / (kc_max * int64_t(sizeof(T))) / nr * nr);
    nc_max = round_up(ceil_div(g.n, ceil_div(g.n, fitting_nc)), nr);  // equal blocks
  }
  // Packed B slivers sit kc_max x nr apart whatever the block's length, so that a thread packing the shorter last k
  // block of its slivers never writes over slivers another thread, a block behind, still reads.
  const int64_t sliver_stride = kc_max * nr;
  const int nthreads = plan.nthreads;

  // How the team packs B. Threads that split the columns each pack just their own slivers, into their own part of
  // the panel; threads that split the rows all read every sliver, so they share one panel, packed together between
  // two barriers -- unless it fits in half of L2, when each packs a private copy (in its own core's L2) and no
  // thread waits for another: on a Xeon VM whose idle cores sleep, each barrier cost 10-30 us, and 2 threads ran
  // 68 x 484 -> 38 float64 in 62 us against 38 us on one.
  const int64_t m_slivers = ceil_div(g.m, mr);
  const int64_t n_slivers_max = ceil_div(nc_max, nr);
  const bool split_rows = m_slivers >= n_slivers_max;
  const bool private_b = plan.pack_b && nthreads > 1 && split_rows &&
                         2 * kc_max * round_up(nc_max, nr) * int64_t(sizeof(T)) <= cpu_caches().l2;
  const bool shared_b = plan.pack_b && nthreads > 1 && split_rows && !private_b;

  // Workspace (elements, each part a multiple of 64 bytes): [bias copy][B panel][per thread: A block, A edge
  // tile, B edge sliver, private B panel].
  constexpr int64_t kAlign = 64 / sizeof(T);
  // Threads that split the columns pack and read only their own slivers, so no barrier separates one block's
  // reads from the next block's packing: each thread's slivers get a region of their own (sliver_base below), as a
  // block of fewer slivers -- the last of a B wider than nc -- hands sliver indices to other threads. (In one place,
  // a thread packing the next block's slivers overwrote slivers the other thread still read: wrong sums on two
  // threads, 14 x 300 -> 8500 float32.)
  // A team of t threads over the columns needs t regions of ceil(n_slivers_max / t) slivers, at most t - 1 more
  // slivers than the panel.
  const int64_t panel_slivers = n_slivers_max + (split_rows ? 0 : nthreads - 1);
  const int64_t panel_elems = plan.pack_b ? round_up(sliver_stride * panel_slivers, kAlign) : 0;
  const int64_t b_elems = private_b ? 0 : panel_elems;
  // Unpacked A is read in place by the kernel matching its layout; packed slivers are column-major. Edge tiles read
  // a row-major A, and B, in place too where the family reads only their valid rows and columns (exact_edges).
  const bool a_row_major = !plan.pack_a && g.a_cs == 1;
  const bool a_edge_in_place = a_row_major && uk.exact_edges;
  const MicroKernelFn<T> direct_a_kernel = a_row_major ? uk.row_a : uk.col_a;
  const int64_t a_elems = plan.pack_a ? round_up(kc_max * mc_max, kAlign) : 0;
  const int64_t a_edge_elems = plan.pack_a || a_edge_in_place ? 0 : round_up(kc_max * mr, kAlign);
  const int64_t b_edge_elems = plan.pack_b || uk.exact_edges ? 0 : round_up(kc_max * nr, kAlign);
  const int64_t per_thread = a_elems + a_edge_elems + b_edge_elems + (private_b ? panel_elems : 0);
  const T* bias = nullptr;
  T* const workspace = gemm_workspace(g, b_elems + nthreads * per_thread, bias);

  // Loop order inside a block. By default the sliver loop is outside the row loop: each kc x nr B sliver stays in
  // L1 while the A slivers stream from the L2-resident A block. When all of B's slivers in the panel fit in half of
  // L2 (short k, or few columns), the row loop goes outside instead: the A sliver stays in L1, B slivers come from
  // L2 at no extra cost, and C is written in row strips, one contiguous stream per row. Column by column, the tiles
  // of a C whose row stride is a multiple of 4 KiB all fall into the same two L1 sets (every x86 L1 has 64 sets of
  // 64 bytes), so every store missed: 64 x 1 -> 1024 took 30 us instead of 7 us. A short-k product is bound by
  // writing C (a K = 1 outer product is nothing else), so this order is what matters there.
  const bool rows_outer = 2 * kc_max * round_up(nc_max, nr) * int64_t(sizeof(T)) <= cpu_caches().l2 || c_strips;
  // B read in place, too large to stay in L2 between calls, in rows wider than 1 KiB (many slivers of rows far
  // apart): its blocks are streamed in ahead (see below). Narrower rows the hardware prefetchers follow well enough.
  // Not a B within L2 (half to all of it), which a product called again finds there: the prefetches only cost
  // their instructions and fill buffers (Xeon, dX of a short batch, W of 1-1.8 MB, without / with: 14 x 630 -> 730
  // float32 on 2 threads 0.83x the time, 30 x 700 -> 700 0.86x, 16 x 700 -> 350 float64 0.88x, 25 x 800 -> 512
  // float32 0.92x); from L2 to three times it alike either way.
  const bool stream_b = !plan.pack_b && b_rows_stream<T>(g) && b_beyond_l2(g);

  // One thread's share of the work; the worksharing and barrier inside are orphaned OpenMP constructs, skipped
  // entirely when a single thread runs (no parallel region is entered then).
  auto thread_body = [&](int tid, int team) {
    // Thread grid: split rows when there are at least as many row slivers as column slivers, else columns.
    const int tm = split_rows ? team : 1;
    const int tn = team / tm;
    const int ti = tid / tn, tj = tid % tn;
    const int64_t row_begin = std::min(g.m, m_slivers * ti / tm * mr);
    const int64_t row_end = std::min(g.m, m_slivers * (ti + 1) / tm * mr);
    const bool active = tid < tm * tn;

    T* mine = workspace + b_elems + tid * per_thread;
    T* a_packed = mine;
    T* a_edge = mine + a_elems;
    T* b_edge = a_edge + a_edge_elems;
    T* b_packed = private_b ? b_edge + b_edge_elems : workspace;

    for (int64_t jc = 0; jc < g.n; jc += nc_max) {
      const int64_t nc = std::min(nc_max, g.n - jc);
      const int64_t n_slivers = ceil_div(nc, nr);
      const int64_t s_begin = n_slivers * tj / tn, s_end = n_slivers * (tj + 1) / tn;
      // Sliver s of this block sits at b_packed + (sliver_base + s) * sliver_stride: in this thread's own region
      // where the threads split the columns (s_begin <= tj * ceil(n_slivers_max / tn), so the base is not negative).
      const int64_t sliver_base = tn > 1 ? tj * ceil_div(n_slivers_max, int64_t(tn)) - s_begin : 0;
      for (int64_t pc = 0; pc < g.k; pc += kc_max) {
        const int64_t kc = std::min(kc_max, g.k - pc);
        const bool load_c = g.accumulate || pc > 0;
        const bool last_k = pc + kc == g.k;
        const T* tile_bias = last_k ? bias : nullptr;
        const bool tile_step = last_k && g.step;
        const T* b_block = g.b + pc * g.b_rs + jc * g.b_cs;

        if (plan.pack_b) {
          auto pack = [&](int64_t s0, int64_t s1) {
            pack_b_block(uk, kc, nc, b_block, g.b_rs, g.b_cs, s0, s1, b_packed + sliver_base * sliver_stride,
                         sliver_stride);
          };
          if (shared_b && team > 1) {
#pragma omp for schedule(static)
            for (int64_t part = 0; part < team; ++part) pack(n_slivers * part / team, n_slivers * (part + 1) / team);
          } else if (split_rows || team == 1) {
            if (active) pack(0, n_slivers);
          } else {
            pack(s_begin, s_end);
          }
        }

        for (int64_t ic = row_begin; active && ic < row_end; ic += mc_max) {
          const int64_t mc = std::min(mc_max, row_end - ic);
          const T* a_block = g.a + ic * g.a_rs + pc * g.a_cs;
          if (plan.pack_a) {
            pack_a_block(mc, kc, a_block, g.a_rs, g.a_cs, mr, a_packed, uk);
          } else if (mc % mr != 0 && !a_edge_in_place) {
            // The partial last tile is copied (zero-padded) so that the kernel never reads past row m.
            pack_a_block(mc % mr, kc, a_block + (mc - mc % mr) * g.a_rs, g.a_rs, g.a_cs, mr, a_edge, uk);
          }
          auto tile = [&](int64_t s, int64_t ir, const T* b_sliver, int64_t b_rs) {
            const int64_t j = jc + s * nr;
            const int64_t n_valid = std::min(nr, g.n - j);
            const int64_t m_valid = std::min(mr, mc - ir);
            T* c_tile = g.c + j * g.c_cs + (ic + ir) * g.c_rs;
            const T* tile_bias_j = tile_bias ? tile_bias + j : nullptr;
            if (plan.pack_a) {
              uk.col_a(kc, a_packed + ir * kc, 1, mr, b_sliver, b_rs, c_tile, g.c_rs, g.c_cs, m_valid, n_valid, load_c,
                       tile_bias_j, tile_step);
            } else if (m_valid < mr && !a_edge_in_place) {
              uk.col_a(kc, a_edge, 1, mr, b_sliver, b_rs, c_tile, g.c_rs, g.c_cs, m_valid, n_valid, load_c,
                       tile_bias_j, tile_step);
            } else {
              direct_a_kernel(kc, a_block + ir * g.a_rs, g.a_rs, g.a_cs, b_sliver, b_rs, c_tile, g.c_rs, g.c_cs,
                              m_valid, n_valid, load_c, tile_bias_j, tile_step);
            }
          };
          // Where sliver s of B lies: the packed panel, B itself (full slivers of a B with contiguous rows, and the
          // partial one with exact_edges), or the edge buffer, into which the one partial sliver of an unpacked B is
          // copied (zero-padded) when asked.
          const int64_t s_partial =
              nc - (n_slivers - 1) * nr < nr && !uk.exact_edges ? n_slivers - 1 : n_slivers;
          auto b_sliver = [&](int64_t s, bool copy_edge) -> std::pair<const T*, int64_t> {
            if (plan.pack_b) return {b_packed + (sliver_base + s) * sliver_stride, nr};
            if (s != s_partial) return {b_block + s * nr, g.b_rs};
            if (copy_edge) pack_b_sliver(kc, std::min(nr, nc - s * nr), b_block + s * nr, g.b_rs, g.b_cs, nr, b_edge);
            return {b_edge, nr};
          };
          // A B read in place (the weight gradient dYᵀ X of a layer with few outputs: B is the whole batch X) comes
          // from memory in bands of nr columns, rows far apart, which the hardware prefetchers follow poorly: while
          // this block is computed, the next block's rows are prefetched into L2 front to back, a share after each
          // tile, so that the bands find them there (Xeon, 11 x 30038 -> 685 float32: 24.7 ms against MKL's 9).
          const int64_t next_pc = pc + kc;
          const bool prefetch_next = stream_b && next_pc < g.k && row_end - row_begin <= mc_max;
          const int64_t next_rows = prefetch_next ? std::min(kc_max, g.k - next_pc) : 0;
          const int64_t calls = ceil_div(mc, mr) * std::max<int64_t>(1, s_end - s_begin);
          const int64_t rows_per_call = ceil_div(next_rows, calls);
          int64_t prefetched = 0;
          auto prefetch_share = [&]() {
            const int64_t stop = std::min(next_rows, prefetched + rows_per_call);
            for (; prefetched < stop; ++prefetched) {
              const char* row = reinterpret_cast<const char*>(g.b + (next_pc + prefetched) * g.b_rs + jc);
              for (int64_t byte = 0; byte < nc * int64_t(sizeof(T)); byte += 64) __builtin_prefetch(row + byte, 0, 2);
            }
          };
          if (rows_outer) {
            if (s_begin <= s_partial && s_partial < s_end) b_sliver(s_partial, true);
            for (int64_t ir = 0; ir < mc; ir += mr)
              for (int64_t s = s_begin; s < s_end; ++s) {
                const auto [sliver, rs] = b_sliver(s, false);
                tile(s, ir, sliver, rs);
                if (prefetch_next) prefetch_share();
              }
            continue;
          }
          for (int64_t s = s_begin; s < s_end; ++s) {
            const auto [sliver, rs] = b_sliver(s, true);
            for (int64_t ir = 0; ir < mc; ir += mr) {
              tile(s, ir, sliver, rs);
              if (prefetch_next) prefetch_share();
            }
          }
        }
        if (shared_b && team > 1) {
#pragma omp barrier
        }
      }
    }
  };
  run_team(nthreads, thread_body);
}

// The panel driver, for products with both operands packed: BLIS's loop order, seen from C's rows.
//   ic over this thread's rows by panel_mc  ->  pc over k by panel_kc (pack the A panel, L3)  ->  jc over this
//   thread's columns by panel_nc (pack a B block, L2)  ->  ir over A slivers (each stays in L1 across the block)
//   ->  jr over B slivers (streamed from L2)  ->  micro-kernel.
// C is written in row strips, and the broadcast operand (12 x kc) is what stays in L1, so kc is twice as long as the
// sliver order allows. Measured on Zen 5 with the jr/ir loops alone on packed data in L3: 65-77 % of the FMA peak
// in the sliver order (float32, kc 192, B panel 4096 wide), 88-89 % in this order (kc 192-512, B block in L2);
// float64 72-85 % against 86-97 %.
// Every thread runs this nest on its own rows and columns with its own packed copies: no barrier, and each core's
// B block sits in that core's L2 (on x86 the L2 is private). The duplicated packing is one pass over B per thread
// per panel_mc rows (about 1-2 % of the arithmetic) when rows are split, the same over A when columns are.
template <typename T>
void panel_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk, int nthreads) {
  const int64_t mr = uk.mr, nr = uk.nr;
  const Blocking& blk = kernel_blocking(uk);
  // k blocks of equal length, each up to a third longer than panel_kc, so that a k a little past panel_kc takes one
  // pass over C rather than two, the second a short one (Xeon, 3000 x 500 -> 700 float64 with panel_kc 384: 84.6 ->
  // 91 GFLOP/s in one block of 500; the A sliver then takes up to two thirds of L1).
  const int64_t m_slivers = ceil_div(g.m, mr), n_slivers_all = ceil_div(g.n, nr);
  int64_t k_blocks = ceil_div(g.k, blk.panel_kc * 4 / 3);
  // A B with contiguous rows that comes from memory (the weight gradient's X over a large batch) is packed a whole
  // row of this thread's columns at a time: its block keeps the bytes of a panel_kc x panel_nc block but spans all
  // the columns, with k blocks shortened to match (from all n columns whatever the team, so that the k blocks, and
  // the bits, do not depend on the thread count), so each k block of B is read in long runs (Xeon,
  // one core: 13.3 GB/s reading in order, 10.4 packing whole rows of 563 float32, 7.9 packing runs of 384 of them;
  // dW 68 x 40775 -> 820 float32 1.07-1.12x, 62 x 42590 -> 563 1.05-1.08x, float64 1.04x). Only for a C of a few
  // row tiles, whose k blocks of B are packed for little arithmetic each (300 x 5000 -> 2000: 0.97x).
  const int64_t row_kc = blk.panel_kc * blk.panel_nc / (n_slivers_all * nr);
  const bool whole_rows = g.b_cs == 1 && b_rows_stream<T>(g) && g.m <= 8 * mr && row_kc >= kMinRowKc &&
                          row_kc < ceil_div(g.k, k_blocks);
  if (whole_rows) k_blocks = ceil_div(g.k, row_kc);
  const int64_t kc_max = ceil_div(g.k, k_blocks);
  // A k shorter than panel_kc leaves room in the caches: the A panel and the B block keep their size in bytes and
  // grow taller and wider, so a short-k product writes whole rows of C at once (37202 x 17 -> 472 lost 11 % with
  // the B block at its full-k width of 256 columns); a longer one makes them shorter and narrower.
  int64_t mc_budget = blk.panel_mc, nc_budget = blk.panel_nc;
  if (kc_max <= blk.panel_kc) {
    mc_budget *= blk.panel_kc / kc_max;
    nc_budget *= blk.panel_kc / kc_max;
  } else {
    mc_budget = std::max(mr, blk.panel_mc * blk.panel_kc / kc_max / mr * mr);
    nc_budget = std::max(nr, blk.panel_nc * blk.panel_kc / kc_max / nr * nr);
  }
  // Every A panel costs a packing of all of B, so a short last panel is a waste: a panel may grow by an eighth to
  // take such a tail with it, and a thread's rows are cut into panels of equal height (Xeon, 2048^3 float32: panels
  // of 2040 rows left one of 8 rows, for which the whole of B was packed again, 3 % of the product's time).
  const int64_t mc_max = std::min(round_up(mc_budget * 9 / 8, mr), round_up(g.m, mr));
  if (whole_rows) nc_budget = n_slivers_all * nr;
  const int64_t nc_max = std::min(nc_budget, round_up(g.n, nr));

  constexpr int64_t kAlign = 64 / sizeof(T);
  const int64_t per_thread = round_up(kc_max * mc_max, kAlign) + round_up(kc_max * nc_max, kAlign);
  const T* bias = nullptr;
  T* const workspace = gemm_workspace(g, nthreads * per_thread, bias);

  auto thread_body = [&](int tid, int team) {
    // Split rows when there are at least as many row slivers as column slivers, else columns; every boundary on
    // a sliver, so a thread's tiles are the ones a single thread would compute (results do not depend on team).
    const int tm = m_slivers >= n_slivers_all ? team : 1;
    const int tn = team / tm;
    const int ti = tid / tn, tj = tid % tn;
    const int64_t row_begin = std::min(g.m, m_slivers * ti / tm * mr);
    const int64_t row_end = std::min(g.m, m_slivers * (ti + 1) / tm * mr);
    const int64_t col_begin = std::min(g.n, n_slivers_all * tj / tn * nr);
    const int64_t col_end = std::min(g.n, n_slivers_all * (tj + 1) / tn * nr);
    if (tid >= tm * tn) return;
    T* a_packed = workspace + tid * per_thread;
    T* b_packed = a_packed + round_up(kc_max * mc_max, kAlign);

    const int64_t panels = ceil_div(row_end - row_begin, mc_max);
    const int64_t panel_rows = round_up(ceil_div(row_end - row_begin, std::max<int64_t>(1, panels)), mr);
    for (int64_t ic = row_begin; ic < row_end; ic += panel_rows) {
      const int64_t mc = std::min(panel_rows, row_end - ic);
      for (int64_t pc = 0; pc < g.k; pc += kc_max) {
        const int64_t kc = std::min(kc_max, g.k - pc);
        const bool load_c = g.accumulate || pc > 0;
        const bool last_k = pc + kc == g.k;
        const T* tile_bias = last_k ? bias : nullptr;
        const bool tile_step = last_k && g.step;
        pack_a_block(mc, kc, g.a + ic * g.a_rs + pc * g.a_cs, g.a_rs, g.a_cs, mr, a_packed, uk);
        for (int64_t jc = col_begin; jc < col_end; jc += nc_max) {
          const int64_t nc = std::min(nc_max, col_end - jc);
          const int64_t n_slivers = ceil_div(nc, nr);
          const T* b_block = g.b + pc * g.b_rs + jc * g.b_cs;
          pack_b_block(uk, kc, nc, b_block, g.b_rs, g.b_cs, 0, n_slivers, b_packed, nr * kc);
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int64_t m_valid = std::min(mr, mc - ir);
            T* c_row = g.c + (ic + ir) * g.c_rs;
            for (int64_t s = 0; s < n_slivers; ++s) {
              const int64_t j = jc + s * nr;
              uk.col_a(kc, a_packed + ir * kc, 1, mr, b_packed + s * nr * kc, nr, c_row + j * g.c_cs, g.c_rs, g.c_cs,
                       m_valid, std::min(nr, g.n - j), load_c, tile_bias ? tile_bias + j : nullptr, tile_step);
            }
          }
        }
      }
    }
  };
  run_team(nthreads, thread_body);
}

template <typename T>
void run_plan(const GemmArgs<T>& g, const MicroKernel<T>& uk, const Plan& plan) {
  if (plan.short_k)
    short_k_gemm(g, uk, plan.nthreads);
  else if (plan.stream_rows)
    stream_rows_gemm(g, uk, plan.nthreads);
  else if (plan.long_k || plan.long_k_transposed)
    long_k_gemm(g, uk, plan.nthreads, plan.long_k_transposed);
  else if (plan.skinny || plan.tall || plan.dot)
    unpacked_gemm(g, uk, plan);
  else if (plan.panel)
    panel_gemm(g, uk, plan.nthreads);
  else
    blocked_gemm(g, uk, plan);
}

// The transposed product Cᵀ = Bᵀ Aᵀ, computed into `ct` (n x m, row stride ld) with no epilogue.
template <typename T>
GemmArgs<T> transposed_product(const GemmArgs<T>& g, T* ct, int64_t ld) {
  GemmArgs<T> t;
  t.m = g.n, t.n = g.m, t.k = g.k;
  t.a = g.b, t.a_rs = g.b_cs, t.a_cs = g.b_rs;
  t.b = g.a, t.b_rs = g.a_cs, t.b_cs = g.a_rs;
  t.c = ct, t.c_rs = ld, t.c_cs = 1;
  return t;
}

// The transposed path's epilogue (transpose_out): half a cycle an element of C while Cᵀ and C stay in L2 (Xeon,
// 74 x 38 -> 194 float32), two beyond (200 x 16 -> 1000 float64: 3.2 MB through L3), plus about a thousand cycles
// for the second pass and its buffer (tiny products: 9 x 12 -> 83 float64 took 0.5 us longer transposed).
template <typename T>
double transpose_out_cost(const GemmArgs<T>& g, const MicroKernel<T>& uk) {
  const double elements = double(g.m) * double(g.n);
  const double cycles = (beyond_half_l2<T>(2.0 * elements) ? 2.0 : 0.5) * elements + 1000.0;
  return cycles * 2.0 * double(uk.lanes);  // one cycle: 2 x lanes units
}

// A tile product's cost counts packing A like packing B from L2 (12 lanes an element).
template <typename T>
double plan_cost(const GemmArgs<T>& g, const MicroKernel<T>& uk, const Plan& plan) {
  if (plan.dot) return dot_cost(g, uk);
  if (plan.tall) return tall_cost(g, uk);
  return tile_cost(g, uk) + (plan.pack_a ? 12.0 * double(g.m) * double(g.k) : 0.0);
}

// Whether `plan` is one that plan_cost describes: a tile, dot or tall product.
inline bool costed(const Plan& plan) {
  return !plan.short_k && !plan.skinny && !plan.long_k && !plan.long_k_transposed && !plan.stream_rows;
}

// A short batch through a B that must be packed (the forward X Wᵀ, W row-major: B's columns are W's rows) packs
// all of W for a few rows of X, at 12-21 FMA lanes an element of W, or takes dot products at half again the cost
// of each FMA. Its transpose Cᵀ = W Xᵀ reads W in place as the broadcast operand and packs the few rows of X
// instead; Cᵀ goes to a scratch buffer and the epilogue ([C +] Cᵀ's transpose [+ bias], [then H]) writes C.
// Chosen by the plan's costs: that of the transposed plan and its epilogue against the plan's own. Xeon against
// MKL, float64: 35 x 798 -> 173 0.72 -> 0.96x, 31 x 397 -> 595 0.89 -> 1.3x, 22 x 573 -> 202 0.84 -> 1.1x;
// float32 16 x 300 -> 500 0.88 -> 1.26x.
template <typename T>
bool transposed_pays(const GemmArgs<T>& g, const MicroKernel<T>& uk, const Plan& plan, Plan& plan_t) {
  // W's rows contiguous (read in place as the broadcast operand), X's rows or columns contiguous (packed). Batches
  // shorter than the register tile's rows compete on cost too (Xeon, float64 against tiles over a packed W or dot
  // products: 6 x 46 -> 674 +28 %, 7 x 662 -> 438 +17 %, 5 x 57 -> 433 +24 %; 30 batches of 2 to 11 rows +3.5 %).
  // Only SIMD families (the costs are theirs; the portable one ran 0.2-2.5x as fast transposed).
  if (!uk.transpose_out || g.b_cs == 1 || g.b_rs != 1 || (g.a_cs != 1 && g.a_rs != 1) || g.m < 2 ||
      !costed(plan))
    return false;
  const GemmArgs<T> t = transposed_product<T>(g, nullptr, g.m);
  plan_t = make_plan(t, uk);
  if (!costed(plan_t) || plan_t.dot) return false;
  // Only for a clear gain: the costs are estimates, and near the boundary (10 x 264 -> 248 float64, 2 % apart) the
  // dot products ran 1.3x faster.
  constexpr double kMargin = 0.9;
  return plan_cost(t, uk, plan_t) + transpose_out_cost(g, uk) < kMargin * plan_cost(g, uk, plan);
}

template <typename T>
void transposed_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk, const Plan& plan_t) {
  constexpr int64_t kAlign = 64 / sizeof(T);
  int64_t ld = round_up(g.m, kAlign);
  if (ld * int64_t(sizeof(T)) % 4096 == 0) ld += kAlign;  // rows of Cᵀ 4 KiB apart would share a few L1 sets
  T* const ct = static_cast<T*>(thread_workspace(sizeof(T) * static_cast<std::size_t>(g.n * ld), 1));
  if (!ct) throw std::bad_alloc();
  run_plan(transposed_product(g, ct, ld), uk, plan_t);
  // The epilogue, in blocks of C across threads: blocks of rows, or for a short batch blocks of columns (each a
  // multiple of 64 bytes of a row). The product's packing space is free again for a contiguous copy of a strided bias.
  const T* bias = nullptr;
  gemm_workspace(g, 0, bias);
  constexpr int64_t kBlock = 64;
  const bool split_rows = g.m >= g.n;
  const int64_t blocks = ceil_div(split_rows ? g.m : g.n, kBlock);
  parallel_for(static_cast<int>(std::min<int64_t>(plan_t.nthreads, blocks)), blocks, [&](int64_t block) {
    const int64_t i0 = split_rows ? block * kBlock : 0, i1 = split_rows ? std::min(g.m, i0 + kBlock) : g.m;
    const int64_t j0 = split_rows ? 0 : block * kBlock, j1 = split_rows ? g.n : std::min(g.n, j0 + kBlock);
    if (uk.transpose_out && g.c_cs == 1) {
      uk.transpose_out(i1 - i0, j1 - j0, ct + j0 * ld + i0, ld, g.c + i0 * g.c_rs + j0, g.c_rs, g.accumulate,
                       bias ? bias + j0 : nullptr, g.step);
      return;
    }
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) finish_element(g, bias, i, j, ct[j * ld + i]);
  });
}

// A row vector times Wᵀ (the forward of a batch of one, y = W x + b; W row-major, x contiguous) as the column
// W x: its dot products then run W rows against the one x, summed by in-register transposes of W accumulators
// rather than a horizontal sum each, and a short k goes to the skinny kernel. C's row is Cᵀ's column, so the
// product writes it in place, adding to the bias put there first; the step follows in a pass over the row. Xeon
// against MKL, float64: 1 x 150 -> 883 0.83 -> 1.1x, 1 x 25 -> 691 1.0 -> 1.4x, 1 x 6 -> 941 1.0 -> 2.1x.
template <typename T>
bool row_vector_as_column(const GemmArgs<T>& g, const Plan& plan) {
  return g.m == 1 && g.a_cs == 1 && g.b_rs == 1 && (plan.dot || plan.short_k);
}

template <typename T>
GemmArgs<T> column_product(const GemmArgs<T>& g) {
  GemmArgs<T> t;
  t.m = g.n, t.n = 1, t.k = g.k;
  t.a = g.b, t.a_rs = g.b_cs, t.a_cs = 1;
  t.b = g.a, t.b_rs = 1, t.b_cs = 1;
  t.c = g.c, t.c_rs = g.c_cs, t.c_cs = 1;
  t.accumulate = g.accumulate;
  return t;
}

// Runs the product t, which writes C's one row or column (count elements, stride apart) in place: the bias goes into
// C first (element i gets bias[i * bias_stride]) and the product adds to it; the step follows in a pass over C.
template <typename T>
void vector_gemm(const GemmArgs<T>& g, GemmArgs<T> t, int64_t count, int64_t stride, int64_t bias_stride,
                 const MicroKernel<T>& uk) {
  if (g.bias) {
    for (int64_t i = 0; i < count; ++i) {
      T& c = g.c[i * stride];
      c = (g.accumulate ? c : T(0)) + g.bias[i * bias_stride];
    }
    t.accumulate = true;
  }
  run_plan(t, uk, make_plan(t, uk));
  if (g.step)
    for (int64_t i = 0; i < count; ++i) g.c[i * stride] = unit_step(g.c[i * stride]);
}

template <typename T>
void row_vector_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk) {
  vector_gemm(g, column_product(g), g.n, g.c_cs, g.bias_stride, uk);
}

// A column times a column-major A (the weight gradient dW = dYᵀ X of a layer with one input: C is m x 1, A = dYᵀ
// with unit row stride) as the row Cᵀ = Bᵀ Aᵀ: Aᵀ has contiguous rows, so the row-vector paths (streaming its rows,
// the long-k and short-k kernels) read it front to back, where register tiles would pad the one column to a vector
// or a whole tile. C's column is Cᵀ's row, written in place as in row_vector_gemm. Zen 3, 703 x 13826 -> 1
// float64: 0.32x MKL in tiles.
template <typename T>
bool column_as_row_vector(const GemmArgs<T>& g, const Plan& plan) {
  return g.n == 1 && g.m > 1 && g.a_rs == 1 && g.a_cs != 1 && costed(plan);
}

template <typename T>
GemmArgs<T> row_product(const GemmArgs<T>& g) {
  GemmArgs<T> t;
  t.m = 1, t.n = g.m, t.k = g.k;
  t.a = g.b, t.a_rs = g.b_cs, t.a_cs = g.b_rs;
  t.b = g.a, t.b_rs = g.a_cs, t.b_cs = 1;
  t.c = g.c, t.c_rs = g.c_cs, t.c_cs = g.c_rs;
  t.accumulate = g.accumulate;
  return t;
}

template <typename T>
void column_vector_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk) {
  vector_gemm(g, row_product(g), g.m, g.c_rs, 0, uk);  // one column: every element gets bias[0]
}

// A tile product over a long k whose operands come from memory, with a small C (the weight gradient dYᵀ X over a
// large batch): k is cut into parts fixed by the shape, each part a product of its own on one thread, its sums in
// a slot of their own, the slots added in order before the epilogue. Threads then each read their own rows of both
// operands, where splitting C's rows or columns made every thread read all of the shared one (X). Xeon, 2 threads,
// in process against the undivided plan: dW 99 x 8863 -> 242 float32 1.17-1.23x (float64 1.20x), 18 x 41270 -> 291
// 1.25x, 62 x 42590 -> 563 1.17-1.18x, 77 x 57617 -> 775 1.18x, float64 68 x 40775 -> 820 1.09x. On one thread the
// parts cost nothing (0.99-1.06x): the same plan runs on each part, and C's parts are small beside the operands;
// the bits do not depend on the thread count. Parts from 2048 rows on: a shorter batch split where the undivided plan
// cut C's few row slivers unevenly between the threads (Xeon, 2 threads, against parts of 4096 rows and more: dW
// 30 x 7217 -> 49 float32 267 -> 154 us, float64 411 -> 300; 40 x 6000 -> 100 330 -> 256, 673 -> 512; 50 x 5000 ->
// 200 726 -> 599; one thread -2 to +4 %).
constexpr int64_t kSplitPartK = 2048;  // the shortest part: each part still runs long k blocks of its plan
constexpr int64_t kMaxSplitParts = 8;

template <typename T>
int64_t k_split_parts(const GemmArgs<T>& g, const Plan& plan) {
  // The weight gradient's layout only (A = dYᵀ column-major, B = X row-major), where k is the batch: a forward or dX
  // product over as long a k ran 2-4 % slower on one thread in parts (64 x 20000 -> 64 float32) for no gain on two.
  if (!costed(plan) || plan.dot || plan.tall || g.a_rs != 1 || g.b_cs != 1) return 1;
  const double operand_bytes = double(g.k) * double(g.m + g.n) * double(sizeof(T));
  if (operand_bytes <= double(cpu_caches().l2)) return 1;
  // Parts in powers of two (so 2 and 4 threads share them equally), their slots within a quarter of L2 and at most
  // a sixteenth of the operands' bytes (a C of 868 x 118 float32 in 2 parts, 0.8 MB of slots: 0.97x).
  const double slot_bytes = double(g.m) * double(g.n) * double(sizeof(T));
  int64_t parts = 1;
  while (parts * 2 <= kMaxSplitParts && g.k / (parts * 2) >= kSplitPartK &&
         double(parts * 2) * slot_bytes <= std::min(0.25 * double(cpu_caches().l2), operand_bytes / 16.0))
    parts *= 2;
  return parts;
}

// Part `p0 .. p0 + kk` of k of a k-split product, its sums going to `sums` (a slot of m x n elements): the product
// itself, or with `transposed` its transpose Cᵀ = Bᵀ Aᵀ (A' = X's rows as columns, B' = dY's rows), whose sums the
// slot holds transposed (element (i, j) at j * m + i).
template <typename T>
GemmArgs<T> k_part(const GemmArgs<T>& g, int64_t p0, int64_t kk, T* sums, bool transposed) {
  GemmArgs<T> sub;
  sub.k = kk;
  if (transposed) {
    sub.m = g.n, sub.n = g.m;
    sub.a = g.b + p0 * g.b_rs, sub.a_rs = g.b_cs, sub.a_cs = g.b_rs;
    sub.b = g.a + p0 * g.a_cs, sub.b_rs = g.a_cs, sub.b_cs = g.a_rs;
    sub.c = sums, sub.c_rs = g.m, sub.c_cs = 1;
  } else {
    sub.m = g.m, sub.n = g.n;
    sub.a = g.a + p0 * g.a_cs, sub.a_rs = g.a_rs, sub.a_cs = g.a_cs;
    sub.b = g.b + p0 * g.b_rs, sub.b_rs = g.b_rs, sub.b_cs = g.b_cs;
    sub.c = sums, sub.c_rs = g.n, sub.c_cs = 1;
  }
  return sub;
}

// A part's plan, on one thread; its A is a slice of one that comes from memory, whatever the part's own size.
template <typename T>
Plan k_part_plan(const GemmArgs<T>& sub, const MicroKernel<T>& uk, double whole_a_bytes) {
  Plan plan = make_plan(sub, uk);
  plan.nthreads = 1;
  plan.pack_a = plan.pack_a || column_major_a_from_memory(sub, uk, whole_a_bytes);
  return plan;
}

// Whether the parts compute Cᵀ = Xᵀ dY rather than C = dYᵀ X. For few inputs (C of few columns: its transpose a
// C' of few rows, whose rows of dY the stream-rows kernel reads in order, where tiles pad those columns to a
// vector; the long-k kernel on a C' of 32 rows ran 0.85x as fast as tiles on C, dW 40 x 26314 -> 32), and for
// tiles where the transpose costs clearly less (plan_cost with the padding of both sides, plus the edge rows a
// column-major A read in place has copied every k block, about a cycle an element of the padded edge sliver) while
// reading its operands well: A' (X's rows as columns) packed or its columns within 512 bytes, B' (dY) packed or in
// rows within 512 bytes. Read in place, dY's rows of 700-1000 bytes in bands of register-tile columns and X's
// columns 1 KB apart ran slowly enough to lose what the padding saved (dW 217 x 35267 -> 68 float32, 60 x 8571 ->
// 259 1.3x and 2.1x slower transposed). Xeon, 1 thread, against the parts untransposed (outputs x batch -> inputs):
// dW float64 734 x 6516 -> 6 0.55x the time, 794 x 8251 -> 2 0.41x, 515 x 21062 -> 5 0.69x, 234 x 14574 -> 7 0.78x,
// 199 x 30646 -> 39 0.71x, 666 x 21110 -> 30 0.74x; float32 39 x 40462 -> 36 0.75x, 964 x 12646 -> 14 0.56x,
// 864 x 59568 -> 20 0.60x, 47 x 10113 -> 36 0.81x.
template <typename T>
bool k_split_transposes(const GemmArgs<T>& g, const MicroKernel<T>& uk, int64_t part_k) {
  if (!uk.transpose_out) return false;  // the SIMD families' costs
  const double a_bytes = double(g.m) * double(g.k) * double(sizeof(T));
  const double b_bytes = double(g.n) * double(g.k) * double(sizeof(T));
  const GemmArgs<T> sub = k_part(g, 0, part_k, static_cast<T*>(nullptr), false);
  const GemmArgs<T> sub_t = k_part(g, 0, part_k, static_cast<T*>(nullptr), true);
  const Plan plan = k_part_plan(sub, uk, a_bytes), plan_t = k_part_plan(sub_t, uk, b_bytes);
  if (!costed(plan)) return false;
  if (!costed(plan_t)) return plan_t.stream_rows;
  if (plan_t.dot || plan_t.tall) return false;
  auto edge_cost = [&](const GemmArgs<T>& s, const Plan& p) {
    const bool copied = !p.pack_a && s.a_cs != 1 && s.m % uk.mr != 0;
    return copied ? 2.0 * double(uk.lanes) * double(uk.mr) * double(s.k) : 0.0;
  };
  constexpr int64_t kFollowedStrideBytes = 512;
  const bool reads_well = (plan_t.pack_a || sub_t.a_cs * int64_t(sizeof(T)) < kFollowedStrideBytes) &&
                          (plan_t.pack_b || sub_t.b_rs * int64_t(sizeof(T)) < kFollowedStrideBytes);
  constexpr double kMargin = 0.85;
  return reads_well && plan_cost(sub_t, uk, plan_t) + edge_cost(sub_t, plan_t) <
                           kMargin * (plan_cost(sub, uk, plan) + edge_cost(sub, plan));
}

template <typename T>
void k_split_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk, int nthreads, int64_t parts) {
  const int64_t slot = g.m * g.n;
  T* const sums = static_cast<T*>(thread_workspace(sizeof(T) * static_cast<std::size_t>(parts * slot), 2));
  if (!sums) throw std::bad_alloc();
  const int64_t part_k = ceil_div(g.k, parts);
  const bool transposed = k_split_transposes(g, uk, part_k);
  const double whole_a_bytes = double(transposed ? g.n : g.m) * double(g.k) * double(sizeof(T));
  const int team_size = static_cast<int>(std::min<int64_t>(nthreads, parts));
  run_team(team_size, [&](int64_t t, int64_t team) {
    for (int64_t part = parts * t / team; part < parts * (t + 1) / team; ++part) {
      const int64_t p0 = part * part_k;
      const GemmArgs<T> sub = k_part(g, p0, std::min(part_k, g.k - p0), sums + part * slot, transposed);
      run_plan(sub, uk, k_part_plan(sub, uk, whole_a_bytes));
    }
  });
  const T* bias = nullptr;
  gemm_workspace(g, 0, bias);
  if (transposed)
    finish_partial_sums(g, bias, sums, parts, slot, 1, g.m);
  else
    finish_partial_sums(g, bias, sums, parts, slot, g.n, 1);
}

}  // namespace

template <typename T>
void gemm(const GemmArgs<T>& g) {
  if (g.m <= 0 || g.n <= 0) return;
  if (g.k <= 0) {
    epilogue_only(g);
    return;
  }
  // A large C that is one contiguous block (as a fresh output is) gets huge pages: a new 44 MB output otherwise
  // takes 11000 page faults, which cost more than a short-k product writing it (Xeon, 10715 x 4 -> 521 float64 end
  // to end: 18.9 -> 9.8 ms, torch 22 ms).
  const double c_bytes = double(g.m) * double(g.n) * double(sizeof(T));
  if (c_bytes >= double(kLargeOutputBytes) && g.c_cs == 1 && (g.m == 1 || g.c_rs == g.n))
    advise_huge_pages(g.c, static_cast<std::size_t>(c_bytes));
  const MicroKernel<T>& uk = active_micro_kernel<T>();
  const Plan plan = make_plan(g, uk);
  Plan plan_t;
  if (row_vector_as_column(g, plan))
    row_vector_gemm(g, uk);
  else if (column_as_row_vector(g, plan))
    column_vector_gemm(g, uk);
  else if (transposed_pays(g, uk, plan, plan_t))
    transposed_gemm(g, uk, plan_t);
  else if (const int64_t parts = k_split_parts(g, plan); parts > 1)
    k_split_gemm(g, uk, plan.nthreads, parts);
  else
    run_plan(g, uk, plan);
}

template <typename T>
std::string gemm_plan(const GemmArgs<T>& g) {
  if (g.m <= 0 || g.n <= 0) return "empty";
  if (g.k <= 0) return "epilogue";
  auto name = [](const Plan& p) -> std::string {
    if (p.short_k) return "short_k";
    if (p.stream_rows) return "stream_rows";
    if (p.long_k) return "long_k";
    if (p.long_k_transposed) return "long_k_transposed";
    if (p.skinny) return "skinny";
    if (p.tall) return "tall";
    if (p.dot) return "dot";
    return p.panel ? "panel" : "blocked";
  };
  const MicroKernel<T>& uk = active_micro_kernel<T>();
  const Plan plan = make_plan(g, uk);
  Plan plan_t;
  if (row_vector_as_column(g, plan)) return "transposed " + name(make_plan(column_product(g), uk));
  if (column_as_row_vector(g, plan)) return "transposed " + name(make_plan(row_product(g), uk));
  if (transposed_pays(g, uk, plan, plan_t)) return "transposed " + name(plan_t);
  if (const int64_t parts = k_split_parts(g, plan); parts > 1)
    return k_split_transposes(g, uk, ceil_div(g.k, parts)) ? "k_split transposed" : "k_split";
  return name(plan);
}

template void gemm<float>(const GemmArgs<float>&);
template void gemm<double>(const GemmArgs<double>&);
template std::string gemm_plan<float>(const GemmArgs<float>&);
template std::string gemm_plan<double>(const GemmArgs<double>&);

}  // namespace linneuron
