// The packed, cache-blocked, OpenMP-parallel GEMM driver (BLIS loop order) around the active micro-kernel.
//
// Loop nest, outermost first:  jc over n by nc  ->  pc over k by kc (pack B panel kc x nc, shared by all threads)
//                              ->  work items (A block of mc rows x a share of the B panel's nr-slivers)
//                              ->  jr over nr-slivers  ->  ir over mr-slivers  ->  micro-kernel.
// The bias and step are applied by the micro-kernel on the last k block only, while the tile is in registers.
#include "gemm.h"

#include <algorithm>
#include <new>
#include <stdexcept>
#include <vector>

#include "microkernel.h"
#include "runtime.h"
#include "workspace.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace linneuron {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Packs A(rows 0..mc, cols 0..kc) into mr-slivers: out[s*mr*kc + p*mr + i] = A(s*mr + i, p), zero-padded.
template <typename T>
void pack_a_block(int64_t mc, int64_t kc, const T* a, int64_t a_rs, int64_t a_cs, int64_t mr, T* out) {
  for (int64_t i0 = 0; i0 < mc; i0 += mr) {
    const int64_t rows = std::min(mr, mc - i0);
    T* sliver = out + i0 * kc;
    for (int64_t i = 0; i < rows; ++i) {
      const T* src = a + (i0 + i) * a_rs;
      for (int64_t p = 0; p < kc; ++p) sliver[p * mr + i] = src[p * a_cs];
    }
    for (int64_t i = rows; i < mr; ++i)
      for (int64_t p = 0; p < kc; ++p) sliver[p * mr + i] = T(0);
  }
}

// Packs the nr-sliver starting at column j0 of B(0..kc, 0..nc): out[p*nr + j] = B(p, j0 + j), zero-padded.
template <typename T>
void pack_b_sliver(int64_t kc, int64_t cols, const T* b, int64_t b_rs, int64_t b_cs, int64_t nr, T* out) {
  if (b_cs == 1 && cols == nr) {
    for (int64_t p = 0; p < kc; ++p) std::copy(b + p * b_rs, b + p * b_rs + nr, out + p * nr);
    return;
  }
  for (int64_t p = 0; p < kc; ++p) {
    const T* src = b + p * b_rs;
    T* dst = out + p * nr;
    for (int64_t j = 0; j < cols; ++j) dst[j] = src[j * b_cs];
    for (int64_t j = cols; j < nr; ++j) dst[j] = T(0);
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

template <typename T>
void packed_gemm(const GemmArgs<T>& g, const MicroKernel<T>& uk, const T* bias, int nthreads) {
  const int64_t mr = uk.mr, nr = uk.nr;
  const int64_t kc_max = std::min(uk.kc, g.k);
  const int64_t mc_max = std::min(uk.mc, ceil_div(g.m, mr) * mr);
  const int64_t nc_max = std::min(uk.nc, ceil_div(g.n, nr) * nr);
  const int64_t b_elems = kc_max * nc_max;
  const int64_t a_elems = kc_max * mc_max;  // per thread
  T* workspace = static_cast<T*>(thread_workspace(sizeof(T) * static_cast<std::size_t>(b_elems + nthreads * a_elems)));
  if (!workspace) throw std::bad_alloc();
  T* b_packed = workspace;

#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
#if defined(_OPENMP)
    const int tid = omp_get_thread_num();
    const int team = omp_get_num_threads();
#else
    const int tid = 0, team = 1;
#endif
    T* a_packed = workspace + b_elems + tid * a_elems;
    for (int64_t jc = 0; jc < g.n; jc += nc_max) {
      const int64_t nc = std::min(nc_max, g.n - jc);
      const int64_t n_slivers = ceil_div(nc, nr);
      for (int64_t pc = 0; pc < g.k; pc += kc_max) {
        const int64_t kc = std::min(kc_max, g.k - pc);
        const bool first_k = pc == 0, last_k = pc + kc == g.k;
        const T* b_block = g.b + pc * g.b_rs + jc * g.b_cs;

#pragma omp for schedule(static)
        for (int64_t s = 0; s < n_slivers; ++s)
          pack_b_sliver(kc, std::min(nr, nc - s * nr), b_block + s * nr * g.b_cs, g.b_rs, g.b_cs, nr,
                        b_packed + s * nr * kc);

        // Work items: each A block, split into `chunks` shares of the B slivers when there are fewer A blocks
        // than threads, so skinny-M problems still use every thread.
        const int64_t n_blocks = ceil_div(g.m, mc_max);
        const int64_t chunks = n_blocks >= team ? 1 : std::min<int64_t>(n_slivers, ceil_div(team, n_blocks));
        int64_t packed_block = -1;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < n_blocks * chunks; ++item) {
          const int64_t block = item / chunks, chunk = item % chunks;
          const int64_t ic = block * mc_max, mc = std::min(mc_max, g.m - ic);
          if (block != packed_block) {
            pack_a_block(mc, kc, g.a + ic * g.a_rs + pc * g.a_cs, g.a_rs, g.a_cs, mr, a_packed);
            packed_block = block;
          }
          const int64_t s_begin = n_slivers * chunk / chunks, s_end = n_slivers * (chunk + 1) / chunks;
          for (int64_t s = s_begin; s < s_end; ++s) {
            const int64_t j = jc + s * nr;
            const int64_t n_valid = std::min(nr, g.n - j);
            for (int64_t ir = 0; ir < mc; ir += mr) {
              uk.fn(kc, a_packed + ir * kc, b_packed + s * nr * kc, g.c + (ic + ir) * g.c_rs + j * g.c_cs, g.c_rs,
                    g.c_cs, std::min(mr, mc - ir), n_valid, g.accumulate || !first_k,
                    last_k && bias ? bias + j : nullptr, last_k && g.step);
            }
          }
        }
        // The implicit barrier above keeps b_packed alive until every thread is done with it.
      }
    }
  }
}

}  // namespace

template <typename T>
void gemm(const GemmArgs<T>& g) {
  if (g.m <= 0 || g.n <= 0) return;
  if (g.k <= 0) {
    epilogue_only(g);
    return;
  }
  const MicroKernel<T>& uk = active_micro_kernel<T>();

  // The micro-kernel reads the bias contiguously; gather a strided one first (n elements, cheap).
  const T* bias = g.bias;
  std::vector<T> bias_copy;
  if (bias && g.bias_stride != 1) {
    bias_copy.resize(static_cast<std::size_t>(g.n));
    for (int64_t j = 0; j < g.n; ++j) bias_copy[j] = g.bias[j * g.bias_stride];
    bias = bias_copy.data();
  }

  // Below ~64 KFLOP per thread the team start-up costs more than it saves.
  const double flops = 2.0 * double(g.m) * double(g.n) * double(g.k);
  const int nthreads = static_cast<int>(std::max<double>(1, std::min<double>(num_threads(), flops / 65536.0)));
  packed_gemm(g, uk, bias, nthreads);
}

template void gemm<float>(const GemmArgs<float>&);
template void gemm<double>(const GemmArgs<double>&);

}  // namespace linneuron
