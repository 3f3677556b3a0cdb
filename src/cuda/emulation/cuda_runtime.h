// Host emulation shim of the CUDA runtime pieces linneuron's kernels use, for checking the kernels' logic on a CPU:
// a launch runs each block in turn with one std::thread per CUDA thread, std::barrier for __syncthreads and
// __syncwarp, and an exchange buffer for warp shuffles. Launch limits (grid y/z, block size, empty grids) and the
// alignment of __ldg vector loads are checked. It proves indexing, bounds, staging and synchronisation structure;
// it says nothing about speed, and the real hardware's memory model is weaker than this one's.
#pragma once
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount,
  cudaDevAttrComputeCapabilityMajor,
  cudaDevAttrMaxThreadsPerMultiProcessor
};

namespace emu {
inline int sm_count = 132, cc_major = 9, threads_per_sm = 2048;
inline long launches = 0, split_launches = 0, allocs = 0;
struct Warp {
  std::unique_ptr<std::barrier<>> bar;
  double buf[32];
};
struct Block {
  std::unique_ptr<std::barrier<>> bar;
  std::vector<Warp> warps;
};
inline thread_local uint3 tIdx, bIdx;
inline thread_local Block* cur_block = nullptr;
inline dim3 bDim, gDim;
template <class F>
void launch(dim3 grid, dim3 block, size_t, cudaStream_t, F&& fn) {
  ++launches;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x * block.y * block.z == 0)
    throw std::runtime_error("emu: empty launch");
  if (grid.y > 65535 || grid.z > 65535 || block.x * block.y * block.z > 1024)
    throw std::runtime_error("emu: bad launch config");
  bDim = block;
  gDim = grid;
  const unsigned nt = block.x * block.y * block.z;
  const unsigned nw = (nt + 31) / 32;
  const size_t nblocks = size_t(grid.x) * grid.y * grid.z;
  // One OS thread per CUDA thread of a block, reused for every block; blocks run one after another (so a
  // `static` stands in for __shared__), each with fresh barriers.
  std::vector<Block> blocks(nblocks);
  for (auto& blk : blocks) {
    blk.bar = std::make_unique<std::barrier<>>(nt);
    blk.warps.resize(nw);
    for (unsigned w = 0; w < nw; ++w)
      blk.warps[w].bar = std::make_unique<std::barrier<>>(w + 1 < nw ? 32 : nt - 32 * w);
  }
  std::barrier<> next(nt);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < nt; ++t)
    threads.emplace_back([&, t] {
      tIdx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
      for (size_t b = 0; b < nblocks; ++b) {
        bIdx = uint3{unsigned(b % grid.x), unsigned((b / grid.x) % grid.y), unsigned(b / (size_t(grid.x) * grid.y))};
        cur_block = &blocks[b];
        fn();
        blocks[b].warps[t / 32].bar->arrive_and_drop();
        blocks[b].bar->arrive_and_drop();
        next.arrive_and_wait();
      }
    });
  for (auto& th : threads) th.join();
}
inline unsigned linear_tid() { return tIdx.x + tIdx.y * bDim.x + tIdx.z * bDim.x * bDim.y; }
}  // namespace emu

#define threadIdx (::emu::tIdx)
#define blockIdx (::emu::bIdx)
#define blockDim (::emu::bDim)
#define gridDim (::emu::gDim)

inline void __syncthreads() { emu::cur_block->bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::cur_block->warps[emu::linear_tid() / 32].bar->arrive_and_wait(); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int off) {
  auto& w = emu::cur_block->warps[emu::linear_tid() / 32];
  const unsigned lane = emu::linear_tid() % 32;
  static_assert(sizeof(T) <= sizeof(double));
  std::memcpy(&w.buf[lane], &v, sizeof(T));
  w.bar->arrive_and_wait();
  T r;
  std::memcpy(&r, &w.buf[lane ^ off], sizeof(T));
  w.bar->arrive_and_wait();
  return r;
}
template <class T>
T __ldg(const T* p) {
  if (reinterpret_cast<std::uintptr_t>(p) % alignof(T)) {
    std::fprintf(stderr, "emu: misaligned __ldg\n");
    std::abort();
  }
  return *p;
}
inline void __trap() { std::abort(); }

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "emu error"; }
inline const char* cudaGetErrorName(cudaError_t) { return "emuError"; }
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount      ? emu::sm_count
       : a == cudaDevAttrComputeCapabilityMajor ? emu::cc_major
                                                : emu::threads_per_sm;
  return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) {
  ++emu::allocs;
  *p = std::malloc(n + 1);
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  std::free(p);
  return cudaSuccess;
}
