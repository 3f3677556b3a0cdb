// Launchers of the individual CUDA GEMM kernels, chosen between by the dispatcher in gemm.cu.
#pragma once

#include "common.cuh"

namespace linneuron {
namespace cuda {

// Rows up to which the skinny (one warp per output column) kernel is used when B is K-contiguous.
constexpr int64_t kSkinnyMaxM = 8;

// CUDA-core tiles: 128 x 128 (8 x 8 per thread; float32 only) and 64 x 64 (4 x 4 per thread; float32, float64,
// and bfloat16 on GPUs without bfloat16 tensor cores). The 64 x 64 kernel splits K when its tiles cannot fill
// the GPU and K is long (see plan_split below).
template <typename T>
void launch_simt_large(const GemmParams<T>& p, cudaStream_t stream);
template <typename T>
void launch_simt_small(const GemmParams<T>& p, cudaStream_t stream, const DeviceInfo& dev);

// m <= kSkinnyMaxM and b_rs == 1 (the forward product with a small batch): one warp per column of C.
template <typename T>
void launch_skinny(const GemmParams<T>& p, cudaStream_t stream, const DeviceInfo& dev);

// Tensor cores (WMMA, float32 accumulation), 128 x 128 x 32 tiles: __half, and __nv_bfloat16 on sm_80+; splits
// K like the 64 x 64 CUDA-core kernel.
template <typename T>
void launch_wmma(const GemmParams<T>& p, cudaStream_t stream, const DeviceInfo& dev);

// The 1-D grid of a tiled kernel: one block per (BM x BN) tile of C, grouped for L2 reuse (see tile_of).
unsigned int tile_grid(int64_t m_tiles, int64_t n_tiles, const char* op);

// Maps a block index to its tile: blocks walk groups of kGroupM tile rows column by column, so consecutive blocks
// share B tiles and a group's A rows stay in L2.
struct TileCoord {
  int64_t mt, nt;
};
__device__ __forceinline__ TileCoord tile_of(int64_t tile, int64_t m_tiles, int64_t n_tiles) {
  constexpr int64_t kGroupM = 8;
  const int64_t group_tiles = kGroupM * n_tiles;
  const int64_t group = tile / group_tiles;
  const int64_t first_m = group * kGroupM;
  const int64_t rows = (m_tiles - first_m) < kGroupM ? (m_tiles - first_m) : kGroupM;
  const int64_t in_group = tile - group * group_tiles;
  return TileCoord{first_m + in_group % rows, in_group / rows};
}

// ---- split-K, shared by the CUDA-core and tensor-core kernels ------------------------------------------------
// When a GEMM has too few tiles to fill the GPU and K is long (small batches, weight gradients of narrow layers),
// each tile gets several blocks, one per slice of K; they write raw float sums to partial[slice][m][n] and a
// second kernel adds the slices in a fixed order and applies the epilogue, so results do not depend on scheduling.

constexpr int64_t kSplitMinK = 1024;      // shorter K is never split
constexpr int64_t kSplitMinSliceK = 256;  // the least K per slice
constexpr int64_t kSplitMaxSlices = 16;

struct SplitPlan {
  int64_t slices = 1, k_per_slice = 0;
};

// Aims at two blocks per multiprocessor; k_per_slice is a multiple of the kernel's K step `bk`.
inline SplitPlan plan_split(int64_t k, unsigned int blocks, const DeviceInfo& dev, int64_t bk) {
  SplitPlan plan;
  if (k < kSplitMinK || static_cast<int64_t>(blocks) >= dev.sm_count) return plan;
  int64_t slices = ceil_div(2 * static_cast<int64_t>(dev.sm_count), static_cast<int64_t>(blocks));
  slices = slices < k / kSplitMinSliceK ? slices : k / kSplitMinSliceK;
  slices = slices < kSplitMaxSlices ? slices : kSplitMaxSlices;
  if (slices < 2) return plan;
  plan.k_per_slice = ceil_div(ceil_div(k, slices), bk) * bk;
  plan.slices = ceil_div(k, plan.k_per_slice);
  return plan;
}

namespace {

// C(i, j) = epilogue(sum over slices s, in order, of partial[s][i][j]); grid-stride over m*n.
template <typename T, typename Acc>
__global__ void __launch_bounds__(256)
    split_k_reduce_kernel(GemmParams<T> p, const Acc* __restrict__ partial, int slices) {
  const int64_t count = p.m * p.n;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += stride) {
    Acc sum = partial[e];
    for (int s = 1; s < slices; ++s) sum += partial[s * count + e];
    const int64_t i = e / p.n;
    store_output<T, Acc>(p, i, e - i * p.n, sum);
  }
}

}  // namespace

// Runs a split GEMM: launch_slices(partial) launches the tile kernel over (blocks, plan.slices), then the slices are
// reduced into C. The partial sums live in a stream-ordered allocation (valid under CUDA graph capture too);
// returns false, with nothing launched, if that allocation fails, so the caller can run unsplit.
template <typename T, typename Acc, typename LaunchSlices>
bool run_split(const GemmParams<T>& p, const SplitPlan& plan, cudaStream_t stream, const DeviceInfo& dev,
               LaunchSlices&& launch_slices) {
  void* workspace = nullptr;
  const size_t bytes = static_cast<size_t>(plan.slices * p.m * p.n) * sizeof(Acc);
  if (cudaMallocAsync(&workspace, bytes, stream) != cudaSuccess) {
    cudaGetLastError();  // clear it: the unsplit kernel runs instead
    return false;
  }
  Acc* partial = static_cast<Acc*>(workspace);
  launch_slices(partial);
  check_launch("gemm");
  split_k_reduce_kernel<T, Acc>
      <<<grid_stride_blocks(p.m * p.n, 256, dev), 256, 0, stream>>>(p, partial, static_cast<int>(plan.slices));
  check_launch("gemm");
  check_call(cudaFreeAsync(workspace, stream), "gemm", "cudaFreeAsync");
  return true;
}

}  // namespace cuda
}  // namespace linneuron
