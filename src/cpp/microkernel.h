// Register-blocked micro-kernels: the innermost loop of the packed GEMM, one family per instruction set.
//
// A micro-kernel multiplies one packed sliver of A by one packed sliver of B and writes an mr x nr tile of C:
//   a_panel is kc x mr, a_panel[p*mr + i] = A(i, p)      (zero-padded past m_valid)
//   b_panel is kc x nr, b_panel[p*nr + j] = B(p, j)      (zero-padded past n_valid)
//   C(i, j) = [C(i, j) if load_c] + sum_p A(i, p) B(p, j) [+ bias[j] if bias] [then H(.) if step]
// for i < m_valid, j < n_valid only; C(i, j) = c[i*c_rs + j*c_cs]. Nothing outside the valid tile is touched.
#pragma once

#include <cstdint>

namespace linneuron {

template <typename T>
using MicroKernelFn = void (*)(int64_t kc, const T* a_panel, const T* b_panel, T* c, int64_t c_rs, int64_t c_cs,
                               int64_t m_valid, int64_t n_valid, bool load_c, const T* bias, bool step);

template <typename T>
struct MicroKernel {
  const char* isa;           // family name, as reported by linneuron.info()
  int64_t mr, nr;            // register tile
  int64_t mc, kc, nc;        // cache blocking suited to this kernel: A block mc x kc (L2), B panel kc x nc (L3)
  MicroKernelFn<T> fn;
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

// The family selected by runtime.h's active_isa().
template <typename T>
const MicroKernel<T>& active_micro_kernel();

}  // namespace linneuron
