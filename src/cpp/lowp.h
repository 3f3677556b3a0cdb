// bfloat16 and float16 on the CPU: the GEMM, step, surrogate backward and bias gradient on 16-bit storage.
//
// Storage is 16-bit (uint16_t bit patterns), arithmetic is float32: operands are converted to float32 on load,
// products accumulate in float32 (through linneuron's one float32 GEMM, gemm.h), the bias is added and the step
// applied in float32, and every output is rounded once to the storage type (round to nearest, ties to even; NaN
// stays NaN). The argument conventions are those of gemm.h and its neighbours, with elements of type `LowpType`.
#pragma once

#include <cstdint>

#include "neuron_math.h"

namespace linneuron {

enum class LowpType : int { BFloat16 = 0, Float16 = 1 };

struct LowpGemmArgs {
  LowpType type = LowpType::BFloat16;
  int64_t m = 0, n = 0, k = 0;
  const uint16_t* a = nullptr;
  int64_t a_rs = 0, a_cs = 0;  // A is (m, k)
  const uint16_t* b = nullptr;
  int64_t b_rs = 0, b_cs = 0;  // B is (k, n)
  uint16_t* c = nullptr;
  int64_t c_rs = 0, c_cs = 0;  // C is (m, n); must not overlap A, B or bias
  const uint16_t* bias = nullptr;
  int64_t bias_stride = 1;
  bool accumulate = false;
  bool step = false;
};

// C(m, n) = round([C +] sum_k A B [+ bias], then [H]) with float32 accumulation; see gemm.h.
void gemm_lowp(const LowpGemmArgs& args);

// out = H(in), exactly (the step of a 16-bit value is 0, 1 or the same NaN).
void step_forward_lowp(LowpType type, int64_t rows, int64_t cols, const uint16_t* in, int64_t in_rs, int64_t in_cs,
                       uint16_t* out, int64_t out_rs, int64_t out_cs);

// grad_z = round(grad_y * s'(z)), the product and derivative in float32.
void step_backward_lowp(LowpType type, int64_t rows, int64_t cols, const uint16_t* z, int64_t z_rs, int64_t z_cs,
                        const uint16_t* grad_y, int64_t gy_rs, int64_t gy_cs, uint16_t* grad_z, int64_t gz_rs,
                        int64_t gz_cs, Surrogate kind, float alpha);

// db(n) = round([db(n) +] sum_m dY(m, n)), summed in float32 over fixed chunks of rows (identical for every thread
// count).
void bias_grad_lowp(LowpType type, int64_t m, int64_t n, const uint16_t* dy, int64_t dy_rs, int64_t dy_cs,
                    uint16_t* db, int64_t db_stride, bool accumulate);

// bfloat16 on AMX tiles (gemm_amx.cpp, built where the compiler targets AMX): whether this CPU, OS and process can
// run it with the avx512 family active, and the product itself (bias contiguous float32 or null).
bool amx_bf16_available();
void gemm_amx_bf16(const LowpGemmArgs& g, const float* bias, int nthreads, bool transposed);

// Human-readable description of the conversion path in use for `type` (for linneuron.info()).
const char* lowp_path(LowpType type);

}  // namespace linneuron
