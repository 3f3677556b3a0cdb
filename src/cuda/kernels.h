// Host interface of linneuron's CUDA kernels: plain C++ (no CUDA or torch types), raw device pointers, int64 sizes
// and element strides. Each launcher enqueues work on `stream` (a cudaStream_t) on the CURRENT device, which the
// caller sets first, and throws std::runtime_error naming the op if a launch fails.
#pragma once

#include <cstdint>

namespace linneuron {
namespace cuda {

// Element type codes; part of the _cuda binding ABI (python/linneuron/_cuda_loader.py and the torch layer).
enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// C(m, n) = [C +] A(m, k) B(k, n) [+ bias(n)] [then H], as linneuron::GemmArgs in src/cpp/gemm.h, type-erased.
// A(i, p) = a[i*a_rs + p*a_cs], B(p, j) = b[p*b_rs + j*b_cs], C(i, j) = c[i*c_rs + j*c_cs]. C must not overlap the
// inputs. 16-bit types accumulate in float32; bias has the same dtype as the inputs.
struct GemmCall {
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t a_rs = 0, a_cs = 0;
  const void* b = nullptr;
  int64_t b_rs = 0, b_cs = 0;
  void* c = nullptr;
  int64_t c_rs = 0, c_cs = 0;
  const void* bias = nullptr;
  int64_t bias_stride = 1;
  bool accumulate = false;
  bool step = false;
};

void gemm(int dtype, const GemmCall& g, void* stream);

// out(r, c) = H(in(r, c)) over a rows x cols grid with element strides.
void step_forward(int dtype, int64_t rows, int64_t cols, const void* in, int64_t in_rs, int64_t in_cs, void* out,
                  int64_t out_rs, int64_t out_cs, void* stream);

// grad_z(r, c) = grad_y(r, c) * surrogate'(z(r, c)); surrogate is a linneuron::Surrogate code (0..3).
void step_backward(int dtype, int64_t rows, int64_t cols, const void* z, int64_t z_rs, int64_t z_cs, const void* grad_y,
                   int64_t gy_rs, int64_t gy_cs, void* grad_z, int64_t gz_rs, int64_t gz_cs, int surrogate,
                   double alpha, void* stream);

// db(j) = [db(j) +] sum_i dY(i, j) for dY (m, n); m == 0 gives zeros (or leaves db unchanged when accumulating).
void bias_grad(int dtype, int64_t m, int64_t n, const void* dy, int64_t dy_rs, int64_t dy_cs, void* db,
               int64_t db_stride, bool accumulate, void* stream);

}  // namespace cuda
}  // namespace linneuron
