// Bandwidth-bound kernels: the unit step, its surrogate backward, and the bias gradient (column sums).
//
// The contiguous step is written with SSE2 intrinsics (part of every x86-64, so no dispatch is needed: the loop is
// limited by memory, not by vector width). Large outputs are written with streaming stores, which skip the
// read-for-ownership of each output line, and their pages are advised as huge pages first: a freshly allocated
// 64 MiB output otherwise costs 16384 page faults, more time than the step itself.
#include <algorithm>
#include <cstdint>
#include <new>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "gemm.h"
#include "memory_hints.h"
#include "parallel_for.h"
#include "runtime.h"
#include "workspace.h"

namespace linneuron {
namespace {

// Below this many elements per thread a parallel region costs more than it saves (256 Ki elements is ~1 MiB,
// tens of microseconds of streaming, against a few microseconds to wake and join a thread).
constexpr int64_t kParallelGrain = 1 << 18;

int threads_for(int64_t elements) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), elements / kParallelGrain)));
}

// Calls row_fn(r, c_begin, c_end) over a rows x cols grid, split across threads. A single long row (the common
// flattened case) is split by columns; otherwise whole rows are handed out.
template <typename RowFn>
void for_each_row_range(int64_t rows, int64_t cols, RowFn row_fn) {
  const int nthreads = threads_for(rows * cols);
  if (rows == 1) {
    const int64_t chunks = nthreads;
    parallel_for(nthreads, chunks, [&](int64_t ch) { row_fn(0, cols * ch / chunks, cols * (ch + 1) / chunks); });
    return;
  }
  parallel_for(nthreads, rows, [&](int64_t r) { row_fn(r, 0, cols); });
}

// The surrogate-gradient and column-sum loops are compiled three times (AVX-512, AVX2, baseline) and the loader
// picks the clone this CPU runs (GCC/Clang function multiversioning), so they use the full vector width without
// a separate translation unit per ISA.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define LINNEURON_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LINNEURON_CLONES
#endif

// gz[i] = gy[i] * s'(z[i]) over contiguous arrays, one loop per surrogate so that each vectorises (the formulas
// are those of neuron_math.h, written out branch-free).
#define LINNEURON_SURROGATE_LOOPS(T)                                                                                \
  LINNEURON_CLONES void ste_loop(const T* z, const T* gy, T* gz, int64_t n, T alpha) {                              \
    for (int64_t i = 0; i < n; ++i) {                                                                               \
      const T az = alpha * z[i];                                                                                    \
      const T d = (az <= T(1) && az >= T(-1)) ? T(1) : (z[i] != z[i] ? z[i] : T(0));                                \
      gz[i] = gy[i] * d;                                                                                            \
    }                                                                                                               \
  }                                                                                                                 \
  LINNEURON_CLONES void atan_loop(const T* z, const T* gy, T* gz, int64_t n, T alpha) {                             \
    const T scale = T(1.5707963267948966) * alpha, half_alpha = alpha / T(2);                                       \
    for (int64_t i = 0; i < n; ++i) {                                                                               \
      const T u = scale * z[i];                                                                                     \
      gz[i] = gy[i] * (half_alpha / (T(1) + u * u));                                                                \
    }                                                                                                               \
  }                                                                                                                 \
  /* out[j - j0] += dy(r, j) for rows r0 <= r < r1, columns j0 <= j < j1 (unit column stride). */                   \
  LINNEURON_CLONES void sum_rows(const T* dy, int64_t rs, int64_t r0, int64_t r1, int64_t j0, int64_t j1, T* out) { \
    for (int64_t r = r0; r < r1; ++r) {                                                                             \
      const T* row = dy + r * rs + j0;                                                                              \
      for (int64_t j = 0; j < j1 - j0; ++j) out[j] += row[j];                                                       \
    }                                                                                                               \
  }
LINNEURON_SURROGATE_LOOPS(float)
LINNEURON_SURROGATE_LOOPS(double)
#undef LINNEURON_SURROGATE_LOOPS

// dst[i] = H(src[i]) for i < n, both contiguous.
template <typename T>
void step_contiguous(const T* src, T* dst, int64_t n, bool streaming) {
  int64_t i = 0;
#if defined(__SSE2__)
  // Scalar head up to a 16-byte aligned dst, then 4 vectors per iteration.
  for (; i < n && (reinterpret_cast<std::uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = unit_step(src[i]);
  if constexpr (sizeof(T) == 4) {
    const __m128 zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f);
    auto h = [&](__m128 x) {  // (x >= 0 ? 1 : 0) | (x is NaN ? x : 0)
      return _mm_or_ps(_mm_and_ps(_mm_cmpge_ps(x, zero), one), _mm_and_ps(_mm_cmpunord_ps(x, x), x));
    };
    for (; i + 16 <= n; i += 16) {
      const __m128 a = h(_mm_loadu_ps(src + i)), b = h(_mm_loadu_ps(src + i + 4));
      const __m128 c = h(_mm_loadu_ps(src + i + 8)), d = h(_mm_loadu_ps(src + i + 12));
      if (streaming) {
        _mm_stream_ps(dst + i, a), _mm_stream_ps(dst + i + 4, b), _mm_stream_ps(dst + i + 8, c);
        _mm_stream_ps(dst + i + 12, d);
      } else {
        _mm_store_ps(dst + i, a), _mm_store_ps(dst + i + 4, b), _mm_store_ps(dst + i + 8, c);
        _mm_store_ps(dst + i + 12, d);
      }
    }
  } else {
    const __m128d zero = _mm_setzero_pd(), one = _mm_set1_pd(1.0);
    auto h = [&](__m128d x) {
      return _mm_or_pd(_mm_and_pd(_mm_cmpge_pd(x, zero), one), _mm_and_pd(_mm_cmpunord_pd(x, x), x));
    };
    for (; i + 8 <= n; i += 8) {
      const __m128d a = h(_mm_loadu_pd(src + i)), b = h(_mm_loadu_pd(src + i + 2));
      const __m128d c = h(_mm_loadu_pd(src + i + 4)), d = h(_mm_loadu_pd(src + i + 6));
      if (streaming) {
        _mm_stream_pd(dst + i, a), _mm_stream_pd(dst + i + 2, b), _mm_stream_pd(dst + i + 4, c);
        _mm_stream_pd(dst + i + 6, d);
      } else {
        _mm_store_pd(dst + i, a), _mm_store_pd(dst + i + 2, b), _mm_store_pd(dst + i + 4, c);
        _mm_store_pd(dst + i + 6, d);
      }
    }
  }
  if (streaming) _mm_sfence();  // streaming stores are weakly ordered: publish them before returning
#else
  (void)streaming;
#endif
  for (; i < n; ++i) dst[i] = unit_step(src[i]);
}

}  // namespace

template <typename T>
void step_forward(int64_t rows, int64_t cols, const T* in, int64_t in_rs, int64_t in_cs, T* out, int64_t out_rs,
                  int64_t out_cs) {
  if (rows <= 0 || cols <= 0) return;
  const std::size_t out_bytes = std::size_t(rows) * std::size_t(cols) * sizeof(T);
  const bool streaming = out_bytes >= kLargeOutputBytes;  // large outputs would evict everything else
  if (streaming && out_cs == 1 && (rows == 1 || out_rs == cols)) advise_huge_pages(out, out_bytes);
  for_each_row_range(rows, cols, [=](int64_t r, int64_t c0, int64_t c1) {
    const T* src = in + r * in_rs;
    T* dst = out + r * out_rs;
    if (in_cs == 1 && out_cs == 1) {
      step_contiguous(src + c0, dst + c0, c1 - c0, streaming);
    } else {
      for (int64_t c = c0; c < c1; ++c) dst[c * out_cs] = unit_step(src[c * in_cs]);
    }
  });
}

template <typename T>
void step_backward(int64_t rows, int64_t cols, const T* z, int64_t z_rs, int64_t z_cs, const T* grad_y, int64_t gy_rs,
                   int64_t gy_cs, T* grad_z, int64_t gz_rs, int64_t gz_cs, Surrogate kind, T alpha) {
  if (rows <= 0 || cols <= 0) return;
  for_each_row_range(rows, cols, [=](int64_t r, int64_t c0, int64_t c1) {
    const T* zr = z + r * z_rs;
    const T* gyr = grad_y + r * gy_rs;
    T* gzr = grad_z + r * gz_rs;
    if (z_cs == 1 && gy_cs == 1 && gz_cs == 1 && (kind == Surrogate::Ste || kind == Surrogate::Atan)) {
      if (kind == Surrogate::Ste)
        ste_loop(zr + c0, gyr + c0, gzr + c0, c1 - c0, alpha);
      else
        atan_loop(zr + c0, gyr + c0, gzr + c0, c1 - c0, alpha);
      return;
    }
    for (int64_t c = c0; c < c1; ++c) gzr[c * gz_cs] = gyr[c * gy_cs] * surrogate_derivative(kind, zr[c * z_cs], alpha);
  });
}

template <typename T>
void bias_grad(int64_t m, int64_t n, const T* dy, int64_t dy_rs, int64_t dy_cs, T* db, int64_t db_stride,
               bool accumulate) {
  if (n <= 0) return;
  // db(j) = sum over fixed row chunks c of (sum over rows of chunk c, in order). The chunking depends on the shape
  // only, so any split of the work across threads performs exactly the same additions.
  constexpr int64_t kChunk = 256;
  const int64_t n_chunks = std::max<int64_t>(1, (m + kChunk - 1) / kChunk);
  auto chunk_sum = [=](int64_t chunk, int64_t j0, int64_t j1, T* out) {
    for (int64_t j = j0; j < j1; ++j) out[j - j0] = T(0);
    const int64_t r1 = std::min(m, (chunk + 1) * kChunk);
    if (dy_cs == 1) {
      sum_rows(dy, dy_rs, chunk * kChunk, r1, j0, j1, out);
      return;
    }
    for (int64_t r = chunk * kChunk; r < r1; ++r) {
      const T* row = dy + r * dy_rs;
      for (int64_t j = j0; j < j1; ++j) out[j - j0] += row[j * dy_cs];
    }
  };
  auto finish = [=](int64_t j, T total) {
    T& dst = db[j * db_stride];
    dst = accumulate ? dst + total : total;
  };

  const int nthreads = threads_for(m * n);
  if (n_chunks == 1 || n >= 4 * nthreads * 16 || nthreads == 1) {
    // Enough columns to share out: each thread owns a column range and walks every chunk of it.
    constexpr int64_t kCols = 64;
    const int64_t col_blocks = (n + kCols - 1) / kCols;
    parallel_for(nthreads, col_blocks, [&](int64_t cb) {
      const int64_t j0 = cb * kCols, j1 = std::min(n, j0 + kCols);
      T total[kCols], part[kCols];
      for (int64_t j = 0; j < j1 - j0; ++j) total[j] = T(0);
      for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
        chunk_sum(chunk, j0, j1, part);
        for (int64_t j = 0; j < j1 - j0; ++j) total[j] += part[j];
      }
      for (int64_t j = j0; j < j1; ++j) finish(j, total[j - j0]);
    });
    return;
  }
  // Few columns, many rows: threads share the chunks, then the partial sums are added in chunk order.
  // The partial sums live in the calling thread's reusable workspace: no allocation once it has grown.
  T* partial = static_cast<T*>(thread_workspace(sizeof(T) * static_cast<std::size_t>(n_chunks * n)));
  if (!partial) throw std::bad_alloc();
  parallel_for(nthreads, n_chunks, [&](int64_t chunk) { chunk_sum(chunk, 0, n, partial + chunk * n); });
  for (int64_t j = 0; j < n; ++j) {
    T total = T(0);
    for (int64_t chunk = 0; chunk < n_chunks; ++chunk) total += partial[chunk * n + j];
    finish(j, total);
  }
}

#define LINNEURON_INSTANTIATE(T)                                                                               \
  template void step_forward<T>(int64_t, int64_t, const T*, int64_t, int64_t, T*, int64_t, int64_t);           \
  template void step_backward<T>(int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t, int64_t, T*, \
                                 int64_t, int64_t, Surrogate, T);                                              \
  template void bias_grad<T>(int64_t, int64_t, const T*, int64_t, int64_t, T*, int64_t, bool);
LINNEURON_INSTANTIATE(float)
LINNEURON_INSTANTIATE(double)
#undef LINNEURON_INSTANTIATE

}  // namespace linneuron
