// Conversions between float32 and the 16-bit float formats, scalar (inline) and as per-ISA vector kernels.
//
// The scalar forms are the reference the vector kernels must match bit for bit: bfloat16 is the top half of a
// float32 (rounded to nearest even, NaN kept quiet); float16 is IEEE binary16 with subnormals, rounded to nearest
// even, overflow to infinity, NaN kept quiet.
#pragma once

#include <cstdint>
#include <cstring>

#include "lowp.h"

namespace linneuron {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // NaN: keep sign and payload, quiet
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// IEEE half <-> single without F16C (the branch-free method of M. Dukhan's FP16 library).
inline float f16_to_f32(uint16_t h) {
  const uint32_t w = uint32_t(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = f32_from_bits((two_w >> 4) + (uint32_t(0xE0) << 23)) * 0x1.0p-112f;
  const float denormalized = f32_from_bits((two_w >> 17) | (uint32_t(126) << 23)) - 0.5f;
  const uint32_t result = sign | (two_w < (uint32_t(1) << 27) ? f32_bits(denormalized) : f32_bits(normalized));
  return f32_from_bits(result);
}

inline uint16_t f32_to_f16(float f) {
  const float abs_f = f32_from_bits(f32_bits(f) & 0x7fffffffu);
  float base = (abs_f * 0x1.0p+112f) * 0x1.0p-110f;  // overflows to infinity where the half does
  const uint32_t w = f32_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = f32_from_bits((bias >> 1) + 0x07800000u) + base;  // rounds the mantissa to 10 bits, nearest even
  const uint32_t bits = f32_bits(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  if (shl1_w > 0xFF000000u) return uint16_t((sign >> 16) | 0x7E00u | ((w >> 13) & 0x3ffu));  // NaN, quiet
  return uint16_t((sign >> 16) | nonsign);
}

inline float lowp_to_f32(LowpType t, uint16_t h) { return t == LowpType::BFloat16 ? bf16_to_f32(h) : f16_to_f32(h); }
inline uint16_t f32_to_lowp(LowpType t, float f) { return t == LowpType::BFloat16 ? f32_to_bf16(f) : f32_to_f16(f); }

// The vector kernels of one instruction set.
struct LowpKernels {
  const char* name;
  // dst[i] = float(src[i]) for i < n (contiguous source).
  void (*to_f32)(LowpType t, int64_t n, const uint16_t* src, float* dst);
  // dst[i] = round(src[i]) for i < n (contiguous destination).
  void (*from_f32)(LowpType t, int64_t n, const float* src, uint16_t* dst);
  // Matrix-vector block, W converted on load: c[i*c_rs + j] = sum_p a[i*k + p] * W(j, p) for i < m, j0 <= j < j1,
  // W(j, p) = w[j*w_rs + p]; `a` is float32 (m x k, row-major), any m.
  void (*dot_rows)(LowpType t, int64_t m, int64_t j0, int64_t j1, int64_t k, const float* a, const uint16_t* w,
                   int64_t w_rs, float* c, int64_t c_rs);
  // Few-row accumulation, M converted on load: acc[i*n + j] += coef[i*coef_rs + p] * M(p, j) for i < rows (1 or 2),
  // j < n, p from p0 to p1 - 1 in order (one float32 chain per element), M(p, j) = m[p*m_rs + j].
  void (*axpy_rows)(LowpType t, int64_t rows, int64_t p0, int64_t p1, int64_t n, const float* coef, int64_t coef_rs,
                    const uint16_t* m, int64_t m_rs, float* acc);
  // Outer product rows with the GEMM's epilogue: c[i*c_rs + j] = round(H?([c +] a[i] * b[j] [+ bias[j]])) for
  // i < rows, j < n (bias may be null), in that order, each step in float32.
  void (*outer_rows)(LowpType t, int64_t rows, const float* a, const float* b, int64_t n, const float* bias,
                     bool accumulate, bool step, uint16_t* c, int64_t c_rs);
};

// The GEMM's epilogue on one float32 sum v of C(i, j), the reference for its vector forms: [C +] v [+ bias[j]],
// [then H], each step in float32, rounded once; `old` is C(i, j) before (read only with accumulate).
inline uint16_t finish_element(LowpType t, float v, const float* bias, int64_t j, bool accumulate, bool step,
                               uint16_t old) {
  if (accumulate) v = lowp_to_f32(t, old) + v;
  if (bias) v += bias[j];
  if (step) v = unit_step(v);
  return f32_to_lowp(t, v);
}

const LowpKernels& portable_lowp_kernels();
#if defined(LINNEURON_HAVE_AVX2)
const LowpKernels& f16c_lowp_kernels();  // AVX2 + FMA + F16C
#endif

}  // namespace linneuron
