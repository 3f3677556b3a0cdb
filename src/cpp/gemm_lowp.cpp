// bfloat16 / float16 driver: converts operands to float32 panels, runs the float32 GEMM, rounds the result once.
//
// There is one GEMM (gemm.cpp); this file only moves data in and out of it. The general path converts B once, and A
// (and C when accumulating) in blocks of rows that stay in L2, into float32 copies laid out like their sources, so
// gemm<float> picks the same plan (packing, direct, dot or skinny kernels) it would for float32 data, with bias and
// step fused in its epilogue in float32; each block's float32 result is then rounded once into C. The conversion is
// O(mk + kn + mn) against O(mkn) arithmetic. The matrix-vector case (a batch of at most kDotRows rows in the forward
// X Wᵀ, or one or two outputs over a long k) is bound by memory instead: there the large operand is converted on
// load inside a dot-product kernel and never copied, so it is read once, at 2 bytes an element. bfloat16 products of
// 2^19 FLOPs or more go to AMX tiles where the CPU has them (gemm_amx.cpp).
#include <algorithm>
#include <memory>
#include <new>

#include "convert.h"
#include "cpu_caches.h"
#include "gemm.h"
#include "parallel_for.h"
#include "runtime.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(LINNEURON_HAVE_AMX)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace linneuron {
namespace {

// Batches up to this size use the convert-on-load dot kernel (the float32 GEMM's own dot plan covers m <= 16 too).
constexpr int64_t kDotRows = 16;
constexpr int64_t kParallelGrain = 1 << 16;  // elements per thread below which conversion stays serial

bool cpu_has_f16c() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

// The conversion kernels follow the active micro-kernel family: the portable family (LINNEURON_ISA=portable or
// set_active_isa) uses the portable conversions too, so tests can run both against the same references.
const LowpKernels& active_lowp_kernels() {
#if defined(LINNEURON_HAVE_AVX2)
  static const bool has_f16c = cpu_has_f16c();
  if (has_f16c && active_isa() != "portable") return f16c_lowp_kernels();
#endif
  return portable_lowp_kernels();
}

int threads_for(int64_t elements) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), elements / kParallelGrain)));
}

// A float32 scratch buffer: a per-thread, grow-only cache up to 64 MiB (a fresh buffer of that size costs
// thousands of page faults per call, several % of a 2048^3 product), a one-off allocation beyond.
struct Scratch {
  static constexpr int64_t kCacheFloats = int64_t(1) << 24;
  std::unique_ptr<float[]> owned;
  float* data = nullptr;
  explicit Scratch(int64_t floats) {
    thread_local std::unique_ptr<float[]> cache;
    thread_local int64_t cache_floats = 0;
    floats = std::max<int64_t>(floats, 1);
    if (floats <= kCacheFloats) {
      if (cache_floats < floats) {
        cache.reset();
        cache.reset(new float[floats]);
        cache_floats = floats;
      }
      data = cache.get();
    } else {
      owned.reset(new float[floats]);
      data = owned.get();
    }
  }
};

// fn(i0, i1) over [0, total) in chunks of 16 Ki elements, split across threads.
template <typename Fn>
void convert_chunks(int64_t total, Fn fn) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (total + kChunk - 1) / kChunk;
  const int nthreads = threads_for(total);
  parallel_for(nthreads, chunks, [&](int64_t c) { fn(c * kChunk, std::min(total, (c + 1) * kChunk)); });
}

// dst(l, e) = float(src[l*src_ls + e*src_es]) for l < lines, e < len, into dst[l*len + e].
void lines_to_f32(const LowpKernels& cv, LowpType t, int64_t lines, int64_t len, const uint16_t* src, int64_t src_ls,
                  int64_t src_es, float* dst) {
  if (lines > 1 && src_es == 1 && src_ls == len) {  // contiguous (short lines): one long line, in chunks
    convert_chunks(lines * len, [&](int64_t i0, int64_t i1) { cv.to_f32(t, i1 - i0, src + i0, dst + i0); });
    return;
  }
  const int nthreads = threads_for(lines * len);
  parallel_for(nthreads, lines, [&](int64_t l) {
    const uint16_t* s = src + l * src_ls;
    float* d = dst + l * len;
    if (src_es == 1)
      cv.to_f32(t, len, s, d);
    else
      for (int64_t e = 0; e < len; ++e) d[e] = lowp_to_f32(t, s[e * src_es]);
  });
}

// dst[l*dst_ls + e*dst_es] = round(src[l*len + e]).
void lines_from_f32(const LowpKernels& cv, LowpType t, int64_t lines, int64_t len, const float* src, uint16_t* dst,
                    int64_t dst_ls, int64_t dst_es) {
  if (lines > 1 && dst_es == 1 && dst_ls == len) {
    convert_chunks(lines * len, [&](int64_t i0, int64_t i1) { cv.from_f32(t, i1 - i0, src + i0, dst + i0); });
    return;
  }
  const int nthreads = threads_for(lines * len);
  parallel_for(nthreads, lines, [&](int64_t l) {
    const float* s = src + l * len;
    uint16_t* d = dst + l * dst_ls;
    if (dst_es == 1)
      cv.from_f32(t, len, s, d);
    else
      for (int64_t e = 0; e < len; ++e) d[e * dst_es] = f32_to_lowp(t, s[e]);
  });
}

// A 2-D operand X(r, c) = x[r*rs + c*cs] converted to float32 in the orientation of its unit stride (so the float32
// GEMM sees the same layout class); returns the new strides.
struct Converted {
  int64_t rs, cs;
};
Converted convert_operand(const LowpKernels& cv, LowpType t, int64_t rows, int64_t cols, const uint16_t* x, int64_t rs,
                          int64_t cs, float* dst) {
  if (rs == 1 && cs != 1) {  // column-major source: convert column by column
    lines_to_f32(cv, t, cols, rows, x, cs, rs, dst);
    return {1, rows};
  }
  lines_to_f32(cv, t, rows, cols, x, rs, cs, dst);
  return {cols, 1};
}

// Matrix-vector, short-batch and few-output products whose large operand runs along k (X's rows, W's rows): the
// operand with at most kDotRows rows ("small": X for a short batch, else W, or dX's W) is converted to float32
// once, from any layout; the other ("large") is read once, converted on load, by the dot-product kernel. C(i, j)
// comes from dots[s * large_rows + l].
void dot_path(const LowpKernels& cv, const LowpGemmArgs& g, const float* bias, bool small_is_a) {
  const int64_t small_rows = small_is_a ? g.m : g.n, large_rows = small_is_a ? g.n : g.m;
  const uint16_t* small = small_is_a ? g.a : g.b;
  const uint16_t* large = small_is_a ? g.b : g.a;
  const int64_t small_rs = small_is_a ? g.a_rs : g.b_cs, large_rs = small_is_a ? g.b_cs : g.a_rs;
  const int64_t small_es = small_is_a ? g.a_cs : g.b_rs;  // the small operand may have any layout
  Scratch scratch(small_rows * g.k + small_rows * large_rows);
  float* small_f = scratch.data;
  float* dots = small_f + small_rows * g.k;
  for (int64_t i = 0; i < small_rows; ++i)
    lines_to_f32(cv, g.type, 1, g.k, small + i * small_rs, 0, small_es, small_f + i * g.k);
  const double flops = 2.0 * double(g.m) * double(g.n) * double(g.k);
  const int nthreads = static_cast<int>(std::max<double>(1, std::min<double>(num_threads(), flops / 2e6)));
  constexpr int64_t kChunk = 16;  // rows of the large operand per work item (a multiple of the kernel's 4)
  const int64_t chunks = nthreads == 1 ? 1 : (large_rows + kChunk - 1) / kChunk;
  parallel_for(nthreads, chunks, [&](int64_t ch) {
    const int64_t l0 = nthreads == 1 ? 0 : ch * kChunk;
    const int64_t l1 = nthreads == 1 ? large_rows : std::min(large_rows, l0 + kChunk);
    cv.dot_rows(g.type, small_rows, l0, l1, g.k, small_f, large, large_rs, dots, large_rows);
  });
  const int64_t dot_rs = small_is_a ? g.n : 1, dot_cs = small_is_a ? 1 : g.m;
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      uint16_t& out = g.c[i * g.c_rs + j * g.c_cs];
      out = finish_element(g.type, dots[i * dot_rs + j * dot_cs], bias, j, g.accumulate, g.step, out);
    }
}

// One or two rows of C over a large operand M whose rows run along C's other side: dW of one or two outputs (C = dYᵀ
// X, M = X) or of one or two inputs (Cᵀ = Xᵀ dY, M = dY), dX of a batch of one or two (M = W). M is read once, in
// order, converted on load: each of its rows adds coefficient x row into float32 sums (rows x M's width) in L1.
// Threads take fixed chunks of M's rows, whose sums are added in chunk order, so every thread count gives the same
// bits. (Xeon, bfloat16, one thread: dW of 64337 x 129 -> 1 5.7 ms on tiles, 13826 x 1 -> 703 5.8 ms through
// float32; torch 1.8 and 1.6.)
void axpy_path(const LowpKernels& cv, const LowpGemmArgs& g, const float* bias, bool rows_of_c) {
  // rows_of_c: C's rows are the coefficient rows (coef = A, M = B); else its columns (coef = Bᵀ, M = Aᵀ).
  const int64_t rows = rows_of_c ? g.m : g.n, width = rows_of_c ? g.n : g.m;
  const uint16_t* m = rows_of_c ? g.b : g.a;
  const int64_t m_rs = rows_of_c ? g.b_rs : g.a_cs;
  constexpr int64_t kChunk = 2048;  // rows of M per work item: fixed, so the sums do not depend on the threads
  const int64_t chunks = std::max<int64_t>(1, (g.k + kChunk - 1) / kChunk);
  Scratch scratch(rows * g.k + chunks * rows * width);
  float* coef = scratch.data;
  float* sums = coef + rows * g.k;
  for (int64_t r = 0; r < rows; ++r) {
    if (rows_of_c)
      lines_to_f32(cv, g.type, 1, g.k, g.a + r * g.a_rs, 0, g.a_cs, coef + r * g.k);
    else
      lines_to_f32(cv, g.type, 1, g.k, g.b + r * g.b_cs, 0, g.b_rs, coef + r * g.k);
  }
  std::fill(sums, sums + chunks * rows * width, 0.0f);
  const int nthreads = threads_for(g.k * width / 4);
  parallel_for(nthreads, chunks, [&](int64_t c) {
    cv.axpy_rows(g.type, rows, c * kChunk, std::min(g.k, (c + 1) * kChunk), width, coef, g.k, m, m_rs,
                 sums + c * rows * width);
  });
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t e = 0; e < rows * width; ++e) sums[e] += sums[c * rows * width + e];
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      uint16_t& out = g.c[i * g.c_rs + j * g.c_cs];
      out = finish_element(g.type, rows_of_c ? sums[i * width + j] : sums[j * width + i], bias, j, g.accumulate,
                           g.step, out);
    }
}

// k = 1, an outer product (dX of a layer with one output, X W of a single input): C(i, j) = A(i, 0) B(0, j), exact in
// float32, then the epilogue, a row at a time through the vector conversions. Bound by C's stores, where the tiles
// spent 240 ns on every 32 x 32 block (Xeon, bfloat16, dX of 64337 x 129 -> 1: 2.2 ms, torch 1.4).
void outer_path(const LowpKernels& cv, const LowpGemmArgs& g, const float* bias) {
  Scratch scratch(g.m + g.n);
  float* a = scratch.data;
  float* b = a + g.m;
  lines_to_f32(cv, g.type, 1, g.m, g.a, 0, g.a_rs, a);
  lines_to_f32(cv, g.type, 1, g.n, g.b, 0, g.b_cs, b);
  const int nthreads = threads_for(g.m * g.n);
  constexpr int64_t kRows = 64;  // rows per work item
  parallel_for(nthreads, (g.m + kRows - 1) / kRows, [&](int64_t block) {
    const int64_t i0 = block * kRows, rows = std::min(kRows, g.m - i0);
    if (g.c_cs == 1) {
      cv.outer_rows(g.type, rows, a + i0, b, g.n, bias, g.accumulate, g.step, g.c + i0 * g.c_rs, g.c_rs);
      return;
    }
    for (int64_t i = i0; i < i0 + rows; ++i)
      for (int64_t j = 0; j < g.n; ++j) {
        uint16_t& out = g.c[i * g.c_rs + j * g.c_cs];
        out = finish_element(g.type, a[i] * b[j], bias, j, g.accumulate, g.step, out);
      }
  });
}

#if defined(LINNEURON_HAVE_AMX)
// Whether bfloat16 can run on AMX tiles (gemm_amx.cpp) in this process: AMX-BF16 and AMX-TILE in cpuid, the tile
// state enabled by the OS (XCR0 bits 17-18) and granted to this process (Linux 5.16+: arch_prctl
// ARCH_REQ_XCOMP_PERM for XTILEDATA). Baseline code: it runs on every CPU.
bool amx_usable() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amx_bf16 = (edx >> 22) & 1u, amx_tile = (edx >> 24) & 1u;
  if (!amx_bf16 || !amx_tile) return false;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !((ecx >> 27) & 1u)) return false;  // OSXSAVE
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if (((xcr0_lo >> 17) & 3u) != 3u) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}
#endif

// Few outputs of a tall batch (n <= kDotRows < m): dot products of X's rows, converted on load, against W's, or X
// converted to float32 in row blocks for the float32 GEMM (below). Each dot product pays a horizontal sum and its
// store, about 4.5 ns, and 0.073 ns an element; the conversion about 0.22 ns an element of X, after which the float32
// kernels' cost is small for few outputs. So dots where n (0.073 k + 4.5) < 0.22 k: one output from k = 32 on, two
// from k = 125, never more. (Xeon, bfloat16 against torch, dots / blocks: 65536 x 256 -> 1 1.45x / 0.77x, 20000 x
// 1024 -> 1 1.67x / 0.70x, 65536 x 256 -> 2 0.89x / 0.49x, -> 4 0.48x / 0.44x, 65536 x 16 -> 16 0.14x / 0.66x,
// 65536 x 2 -> 1 0.75x / 3.4x.)
bool few_outputs_dot_pays(const LowpGemmArgs& g) { return g.n * (g.k + 62) < 3 * g.k; }

}  // namespace

bool amx_bf16_available() {
#if defined(LINNEURON_HAVE_AMX)
  static const bool usable = amx_usable();
  return usable && active_isa() == "avx512";
#else
  return false;
#endif
}

const char* lowp_path(LowpType type) {
#if defined(LINNEURON_HAVE_AMX)
  if (type == LowpType::BFloat16 && amx_bf16_available()) return "amx-bf16 tiles (larger products), avx2+f16c";
#endif
  (void)type;
  return active_lowp_kernels().name;
}

void gemm_lowp(const LowpGemmArgs& g) {
  if (g.m <= 0 || g.n <= 0) return;
  const LowpKernels& cv = active_lowp_kernels();
  std::unique_ptr<float[]> bias_f;
  if (g.bias) {
    bias_f.reset(new float[g.n]);
    for (int64_t j = 0; j < g.n; ++j) bias_f[j] = lowp_to_f32(g.type, g.bias[j * g.bias_stride]);
  }
  if (g.k == 1) {
    outer_path(cv, g, bias_f.get());
    return;
  }
  // The dot products where the large operand runs along k (the forward, dX's dY; taken after the tiles' turn below),
  // but not for a short batch of 5 to 16 rows through a W that fits in L2: there a dot product's horizontal sum,
  // paid per output, outweighs converting W once for the float32 kernels (Xeon, float16, one thread, dots /
  // float32: 16 x 24 -> 574 46 / 8.7 us, 16 x 256 -> 256 51 / 28, 6 x 330 -> 663 76 / 56, 16 x 1024 -> 1024 616 /
  // 516; but 3 x 1024 -> 1024 155 / 294, 8 x 1024 -> 2048 685 / 1029, 16 x 4096 -> 1024 1983 / 2224).
  const int64_t l2 = int64_t(cpu_caches().l2);
  const bool w_in_l2 = int64_t(sizeof(uint16_t)) * g.k * g.n <= l2;
  const bool dot_by_rows = g.m <= kDotRows && g.b_rs == 1 && (g.m <= 4 || !w_in_l2);
  const bool dot_by_columns = g.n <= kDotRows && g.a_cs == 1 && few_outputs_dot_pays(g);
  // Else, for one or two rows or columns of C with the large operand running along C (dW, dX's W), its rows
  // accumulated in order.
  if (g.k > 0 && !dot_by_rows && !dot_by_columns) {
    if (g.m <= 2 && g.b_cs == 1) {
      axpy_path(cv, g, bias_f.get(), true);
      return;
    }
    if (g.n <= 2 && g.a_rs == 1) {
      axpy_path(cv, g, bias_f.get(), false);
      return;
    }
  }
#if defined(LINNEURON_HAVE_AMX)
  // bfloat16 on AMX tiles from 16 rows (3 in the forward), 3 columns and 2^19 FLOPs (a 64^3 product) on: Xeon, one
  // thread, against the float32 path, 64^3 1.8x, 100^3 1.2x, 64 x 512 -> 512 2.6-3.9x, 1024^3 4.4-4.9x, 8192 x 64 ->
  // 64 1.9x; 17 x 481 -> 33 (its row block half padding) 0.63x. And for few outputs, where padding them to 32 columns
  // still beats the float32 path: 8192 x 784 -> 10 2.1x, 2000 x 512 -> 12 1.9x, 65536 x 64 -> 8 1.7x; one or two
  // outputs keep their dot products (65536 x 256 -> 2: 2x faster than on tiles).
  // Under 32 k (one zero-padded chunk) a 32 x 32 block costs about 240 ns whatever k, most of it the epilogue: 7.5
  // ns a row per 32 columns, against the float32 path's (0.27 + 0.03 k) ns an output (20000 rows, tiles / float32:
  // k 1 -> 64 256 / 357 us, -> 24 149 / 132, -> 40 275 / 222; k 8 -> 17 149 / 156; k 16 -> 16 150 / 216).
  // A forward batch of 3 to 256 rows through more outputs than rows runs transposed, Cᵀ = W Xᵀ: W read in place as
  // the tiles' A, X packed as their B (packing W, 16-lane gathers of its k pairs, cost what the product does). Plain
  // / transposed (us): 16 x 4096 -> 4096 8580 / 1930 (torch 2340), 32 x 1024 -> 1024 288 / 89, 128 x 1024 -> 4096
  // 2150 / 1370, 256 x 1024 -> 1024 750 / 620; against the dot products, 6 x 330 -> 663 73 / 14, 3 x 4096 -> 4096
  // 2330 / 1870, but 2 x 4096 -> 4096 1420 / 1830. Not where the batch outnumbers the outputs (2048 x 1024 -> 256
  // 1170 / 1590: transposed stores gather), nor 1024 x 256 -> 4096 (2550 / 2890).
  // Threads from an estimate of the tiles' time, 240 ns a block and 75 ns a k chunk (1024^3: 2.5 ms), 15 us each.
  const double flops = 2.0 * double(g.m) * double(g.n) * double(g.k);
  const bool transposed = g.m >= 3 && g.m <= 256 && g.m < g.n && g.k >= 32 && g.a_cs == 1 && g.b_rs == 1;
  const int64_t col_blocks = (g.n + 31) / 32;
  const bool tiles_pay = g.k >= 32 || 250 * col_blocks < (9 + g.k) * g.n;
  const bool long_reduction = g.k >= 1024 && g.a_rs == 1 && g.a_cs != 1;
  if (g.type == LowpType::BFloat16 && tiles_pay && (g.m >= 16 || transposed || long_reduction) && g.n >= 3 &&
      flops >= double(1 << 19) && amx_bf16_available()) {
    const double blocks = double((g.m + 31) / 32) * double(col_blocks);
    const double estimate_ns = blocks * (240.0 + 75.0 * double((g.k + 31) / 32));
    const int nthreads = static_cast<int>(std::max<double>(1, std::min<double>(num_threads(), estimate_ns / 15e3)));
    gemm_amx_bf16(g, bias_f.get(), nthreads, transposed);
    return;
  }
#endif
  if (g.k > 0 && (dot_by_rows || dot_by_columns)) {
    dot_path(cv, g, bias_f.get(), dot_by_rows);
    return;
  }
  // A long k under few rows of C (dW over a large batch, where no AMX): A and B go through float32 in slabs of k that
  // take half of L2 together, the float32 sums of all of C accumulating across them. Converted whole, B (the batch
  // of X) became a float32 copy twice its size, written and read back (Xeon, float16 dW of 53928 x 423 -> 7: 50 ms,
  // torch 7.4). The bias goes in with the first slab, the step after the last; the slabs are fixed by the shape.
  if (g.k > 0 && int64_t(sizeof(float)) * g.m * g.n <= l2 / 2 && int64_t(sizeof(float)) * g.k * g.n > l2) {
    const int64_t slab = std::max<int64_t>(256, l2 / 2 / (int64_t(sizeof(float)) * (g.m + g.n)) / 64 * 64);
    Scratch scratch(g.m * slab + slab * g.n + g.m * g.n);
    float* a = scratch.data;
    float* b = a + g.m * slab;
    float* c = b + slab * g.n;
    if (g.accumulate) lines_to_f32(cv, g.type, g.m, g.n, g.c, g.c_rs, g.c_cs, c);
    for (int64_t k0 = 0; k0 < g.k; k0 += slab) {
      const int64_t len = std::min(slab, g.k - k0);
      const Converted ca = convert_operand(cv, g.type, g.m, len, g.a + k0 * g.a_cs, g.a_rs, g.a_cs, a);
      const Converted cb = convert_operand(cv, g.type, len, g.n, g.b + k0 * g.b_rs, g.b_rs, g.b_cs, b);
      GemmArgs<float> f;
      f.m = g.m, f.n = g.n, f.k = len;
      f.a = a, f.a_rs = ca.rs, f.a_cs = ca.cs;
      f.b = b, f.b_rs = cb.rs, f.b_cs = cb.cs;
      f.c = c, f.c_rs = g.n, f.c_cs = 1;
      f.bias = k0 == 0 ? bias_f.get() : nullptr, f.bias_stride = 1;
      f.accumulate = g.accumulate || k0 > 0, f.step = g.step && k0 + len >= g.k;
      gemm(f);
    }
    lines_from_f32(cv, g.type, g.m, g.n, c, g.c, g.c_rs, g.c_cs);
    return;
  }
  // Rows of A (and C) go through float32 in blocks whose copies take half of L2, so each block's A is converted,
  // multiplied and its C rounded while they stay in cache: converted whole, a tall A and C went to memory and back
  // three times (Xeon, 65536 x 16 -> 16 bfloat16: 1.0-1.1 ms whole, 0.82-0.85 in blocks; torch 0.6-0.65). B is
  // converted once. The blocks are fixed by the shape (not the thread count); every row's sums are the float32 GEMM's.
  const int64_t row_bytes = int64_t(sizeof(float)) * std::max<int64_t>(1, (g.k > 0 ? g.k : 0) + g.n);
  const int64_t fitting_rows = l2 / 2 / row_bytes;
  const int64_t block_rows = std::min(g.m, std::max<int64_t>(64, fitting_rows / 16 * 16));
  const int64_t a_elems = g.k > 0 ? block_rows * g.k : 0, b_elems = g.k > 0 ? g.k * g.n : 0;
  Scratch scratch(a_elems + b_elems + block_rows * g.n);
  float* a = scratch.data;
  float* b = a + a_elems;
  float* c = b + b_elems;
  Converted cb{0, 0};
  if (g.k > 0) cb = convert_operand(cv, g.type, g.k, g.n, g.b, g.b_rs, g.b_cs, b);
  for (int64_t i0 = 0; i0 < g.m; i0 += block_rows) {
    const int64_t rows = std::min(block_rows, g.m - i0);
    GemmArgs<float> f;
    f.m = rows, f.n = g.n, f.k = g.k;
    if (g.k > 0) {
      const Converted ca = convert_operand(cv, g.type, rows, g.k, g.a + i0 * g.a_rs, g.a_rs, g.a_cs, a);
      f.a = a, f.a_rs = ca.rs, f.a_cs = ca.cs;
      f.b = b, f.b_rs = cb.rs, f.b_cs = cb.cs;
    }
    uint16_t* c_block = g.c + i0 * g.c_rs;
    if (g.accumulate) lines_to_f32(cv, g.type, rows, g.n, c_block, g.c_rs, g.c_cs, c);
    f.c = c, f.c_rs = g.n, f.c_cs = 1;
    f.bias = bias_f.get(), f.bias_stride = 1;
    f.accumulate = g.accumulate, f.step = g.step;
    gemm(f);
    lines_from_f32(cv, g.type, rows, g.n, c, c_block, g.c_rs, g.c_cs);
  }
}

void step_forward_lowp(LowpType type, int64_t rows, int64_t cols, const uint16_t* in, int64_t in_rs, int64_t in_cs,
                       uint16_t* out, int64_t out_rs, int64_t out_cs) {
  // On the bits: NaN (exponent all ones, mantissa non-zero) is kept, +-0 and positives give 1, negatives 0.
  const uint16_t one = type == LowpType::BFloat16 ? 0x3f80 : 0x3c00;
  const uint16_t inf = type == LowpType::BFloat16 ? 0x7f80 : 0x7c00;
  const int nthreads = threads_for(rows * cols);
  parallel_for(nthreads, rows, [&](int64_t r) {
    const uint16_t* s = in + r * in_rs;
    uint16_t* d = out + r * out_rs;
    for (int64_t c = 0; c < cols; ++c) {
      const uint16_t h = s[c * in_cs];
      const uint16_t mag = h & 0x7fff;
      d[c * out_cs] = mag > inf ? h : ((h & 0x8000) == 0 || mag == 0 ? one : uint16_t(0));
    }
  });
}

void step_backward_lowp(LowpType type, int64_t rows, int64_t cols, const uint16_t* z, int64_t z_rs, int64_t z_cs,
                        const uint16_t* grad_y, int64_t gy_rs, int64_t gy_cs, uint16_t* grad_z, int64_t gz_rs,
                        int64_t gz_cs, Surrogate kind, float alpha) {
  const int nthreads = threads_for(rows * cols);
  parallel_for(nthreads, rows, [&](int64_t r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float zf = lowp_to_f32(type, z[r * z_rs + c * z_cs]);
      const float gy = lowp_to_f32(type, grad_y[r * gy_rs + c * gy_cs]);
      grad_z[r * gz_rs + c * gz_cs] = f32_to_lowp(type, gy * surrogate_derivative<float>(kind, zf, alpha));
    }
  });
}

void bias_grad_lowp(LowpType type, int64_t m, int64_t n, const uint16_t* dy, int64_t dy_rs, int64_t dy_cs,
                    uint16_t* db, int64_t db_stride, bool accumulate) {
  if (n <= 0) return;
  const LowpKernels& cv = active_lowp_kernels();
  // db(j) = sum over fixed chunks of 256 rows of (the chunk's sum in row order), in float32, as the float32
  // bias_grad (elementwise.cpp) does: the chunks depend on the shape only, so every split of the work across threads
  // performs the same additions. Each thread sums into arrays of its own: with the sums and the converted row
  // shared, two threads wrote the same cache lines on every row (24618 x 15 bfloat16: 3.5 ms on two threads, 0.1
  // ms on one).
  constexpr int64_t kChunk = 256, kCols = 64;
  const int64_t n_chunks = std::max<int64_t>(1, (m + kChunk - 1) / kChunk);
  auto chunk_sum = [&](int64_t chunk, int64_t j0, int64_t j1, float* out) {
    float row[kCols];
    std::fill(out, out + (j1 - j0), 0.0f);
    for (int64_t r = chunk * kChunk; r < std::min(m, (chunk + 1) * kChunk); ++r) {
      const uint16_t* src = dy + r * dy_rs + j0 * dy_cs;
      if (dy_cs == 1)
        cv.to_f32(type, j1 - j0, src, row);
      else
        for (int64_t j = 0; j < j1 - j0; ++j) row[j] = lowp_to_f32(type, src[j * dy_cs]);
      for (int64_t j = 0; j < j1 - j0; ++j) out[j] += row[j];
    }
  };
  auto finish = [&](int64_t j, float total) {
    uint16_t& dst = db[j * db_stride];
    dst = f32_to_lowp(type, accumulate ? lowp_to_f32(type, dst) + total : total);
  };
  const int nthreads = threads_for(m * n);
  if (n_chunks == 1 || n >= 4 * nthreads * 16 || nthreads == 1) {  // threads own column ranges
    const int64_t col_blocks = (n + kCols - 1) / kCols;
    parallel_for(nthreads, col_blocks, [&](int64_t cb) {
      const int64_t j0 = cb * kCols, j1 = std::min(n, j0 + kCols);
      float total[kCols] = {}, part[kCols];
      for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
        chunk_sum(chunk, j0, j1, part);
        for (int64_t j = 0; j < j1 - j0; ++j) total[j] += part[j];
      }
      for (int64_t j = j0; j < j1; ++j) finish(j, total[j - j0]);
    });
    return;
  }
  // Few columns, many rows: threads share the chunks; their sums, a cache line apart, are added in chunk order.
  const int64_t stride = (n + 15) / 16 * 16;
  std::unique_ptr<float[]> partial(new float[n_chunks * stride]);
  parallel_for(nthreads, n_chunks, [&](int64_t chunk) {
    float* out = partial.get() + chunk * stride;
    for (int64_t j0 = 0; j0 < n; j0 += kCols) chunk_sum(chunk, j0, std::min(n, j0 + kCols), out + j0);
  });
  for (int64_t j = 0; j < n; ++j) {
    float total = 0.0f;
    for (int64_t chunk = 0; chunk < n_chunks; ++chunk) total += partial[chunk * stride + j];
    finish(j, total);
  }
}

}  // namespace linneuron
