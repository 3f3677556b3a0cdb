// Device-side helpers shared by linneuron's CUDA kernels: typed GEMM parameters, conversions between storage and
// accumulation types, vector loads, the launch-error check and cached device properties.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels.h"
#include "neuron_math.h"

namespace linneuron {
namespace cuda {

// The GEMM of kernels.h with typed pointers, passed to kernels by value.
template <typename T>
struct GemmParams {
  int64_t m, n, k;
  const T* a;
  int64_t a_rs, a_cs;
  const T* b;
  int64_t b_rs, b_cs;
  T* c;
  int64_t c_rs, c_cs;
  const T* bias;
  int64_t bias_stride;
  bool accumulate, step;
};

template <typename T>
GemmParams<T> typed(const GemmCall& g) {
  return GemmParams<T>{g.m,
                       g.n,
                       g.k,
                       static_cast<const T*>(g.a),
                       g.a_rs,
                       g.a_cs,
                       static_cast<const T*>(g.b),
                       g.b_rs,
                       g.b_cs,
                       static_cast<T*>(g.c),
                       g.c_rs,
                       g.c_cs,
                       static_cast<const T*>(g.bias),
                       g.bias_stride,
                       g.accumulate,
                       g.step};
}

// Storage <-> accumulation conversions (16-bit types compute in float).
template <typename Acc, typename T>
__device__ __forceinline__ Acc to_acc(T v) {
  return static_cast<Acc>(v);
}
template <>
__device__ __forceinline__ float to_acc<float, __half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_acc<float, __nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T, typename Acc>
__device__ __forceinline__ T from_acc(Acc v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half from_acc<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}

// Accumulation type per storage type.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

// Loads RUN contiguous elements of T from src (aligned to RUN * sizeof(T) bytes) into dst, converted to Acc.
// One 4-, 8- or 16-byte load where the run has that size, element loads otherwise.
template <int RUN, typename T, typename Acc>
__device__ __forceinline__ void load_run(const T* __restrict__ src, Acc* dst) {
  constexpr int kBytes = RUN * static_cast<int>(sizeof(T));
  if constexpr (kBytes == 16) {
    union {
      uint4 v;
      T e[RUN];
    } u;
    u.v = __ldg(reinterpret_cast<const uint4*>(src));
#pragma unroll
    for (int q = 0; q < RUN; ++q) dst[q] = to_acc<Acc>(u.e[q]);
  } else if constexpr (kBytes == 8) {
    union {
      uint2 v;
      T e[RUN];
    } u;
    u.v = __ldg(reinterpret_cast<const uint2*>(src));
#pragma unroll
    for (int q = 0; q < RUN; ++q) dst[q] = to_acc<Acc>(u.e[q]);
  } else {
#pragma unroll
    for (int q = 0; q < RUN; ++q) dst[q] = to_acc<Acc>(src[q]);
  }
}

// The epilogue of every GEMM kernel for one output element: [C +] acc [+ bias] [then H], stored as T.
template <typename T, typename Acc>
__device__ __forceinline__ void store_output(const GemmParams<T>& p, int64_t i, int64_t j, Acc acc) {
  T* dst = p.c + i * p.c_rs + j * p.c_cs;
  Acc v = acc;
  if (p.accumulate) v += to_acc<Acc>(*dst);
  if (p.bias) v += to_acc<Acc>(p.bias[j * p.bias_stride]);
  if (p.step) v = unit_step(v);
  *dst = from_acc<T>(v);
}

__host__ __forceinline__ bool aligned_to(const void* ptr, int64_t bytes) {
  return reinterpret_cast<std::uintptr_t>(ptr) % static_cast<std::uintptr_t>(bytes) == 0;
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Throws std::runtime_error naming `op` if the last launch (or an earlier asynchronous error) failed.
inline void check_launch(const char* op) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("linneuron._cuda.") + op +
                             ": kernel launch failed: " + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")");
}

inline void check_call(cudaError_t err, const char* op, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("linneuron._cuda.") + op + ": " + what +
                             " failed: " + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")");
}

// Multiprocessor count and compute capability of the current device (cached per device; thread-safe).
struct DeviceInfo {
  int sm_count;
  int cc_major;
  int threads_per_sm;  // most resident threads per multiprocessor
};
DeviceInfo current_device_info(const char* op);

// Blocks of `threads` for a grid-stride loop over work_items: one per chunk of work, at most one full wave of
// resident blocks (more would only queue behind the first wave and leave a ragged tail).
inline unsigned int grid_stride_blocks(int64_t work_items, int threads, const DeviceInfo& dev) {
  const int64_t wanted = ceil_div(work_items, threads);
  const int64_t per_sm = dev.threads_per_sm / threads > 0 ? dev.threads_per_sm / threads : 1;
  const int64_t cap = static_cast<int64_t>(dev.sm_count) * per_sm;
  return static_cast<unsigned int>(wanted < cap ? (wanted < 1 ? 1 : wanted) : cap);
}

}  // namespace cuda
}  // namespace linneuron
