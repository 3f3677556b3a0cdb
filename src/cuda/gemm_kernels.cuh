// Launchers of the individual CUDA GEMM kernels, chosen between by the dispatcher in gemm.cu.
#pragma once

#include "common.cuh"

namespace linneuron {
namespace cuda {

// Rows up to which the skinny (one warp per output column) kernel is used when B is K-contiguous.
constexpr int64_t kSkinnyMaxM = 8;

// CUDA-core tiles: 128 x 128 (8 x 8 per thread; float32 only) and 64 x 64 (4 x 4 per thread; float32, float64,
// and bfloat16 on GPUs without bfloat16 tensor cores). The 64 x 64 kernel splits K when its tiles cannot fill
// the GPU and K is long.
template <typename T>
void launch_simt_large(const GemmParams<T>& p, cudaStream_t stream);
template <typename T>
void launch_simt_small(const GemmParams<T>& p, cudaStream_t stream, const DeviceInfo& dev);

// m <= kSkinnyMaxM and b_rs == 1 (the forward product with a small batch): one warp per column of C.
template <typename T>
void launch_skinny(const GemmParams<T>& p, cudaStream_t stream, const DeviceInfo& dev);

// Tensor cores (WMMA, float32 accumulation), 128 x 128 x 32 tiles: __half, and __nv_bfloat16 on sm_80+.
template <typename T>
void launch_wmma(const GemmParams<T>& p, cudaStream_t stream);

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

}  // namespace cuda
}  // namespace linneuron
