// CUDA-core GEMM kernels (float32, float64, and bfloat16 where tensor cores lack it): a shared-memory and register
// tiled kernel with double buffering, and a skinny one-warp-per-column kernel for small batches.
//
// Shapes and layout (src/cpp/gemm.h): C(m, n) = [C +] A(m, k) B(k, n) [+ bias(n)] [then H], with
// A(i, p) = a[i*a_rs + p*a_cs], B(p, j) = b[p*b_rs + j*b_cs], C(i, j) = c[i*c_rs + j*c_cs]; any strides.
#include "gemm_kernels.cuh"

namespace linneuron {
namespace cuda {
namespace {

// Copies H elements of Acc from shared memory with one 8- or 16-byte load where that size fits.
template <int H, typename Acc>
__device__ __forceinline__ void load_fragment(const Acc* src, Acc* dst) {
  constexpr int kBytes = H * static_cast<int>(sizeof(Acc));
  if constexpr (kBytes == 16) {
    union {
      uint4 v;
      Acc e[H];
    } u;
    u.v = *reinterpret_cast<const uint4*>(src);
#pragma unroll
    for (int q = 0; q < H; ++q) dst[q] = u.e[q];
  } else if constexpr (kBytes == 8) {
    union {
      uint2 v;
      Acc e[H];
    } u;
    u.v = *reinterpret_cast<const uint2*>(src);
#pragma unroll
    for (int q = 0; q < H; ++q) dst[q] = u.e[q];
  } else {
#pragma unroll
    for (int q = 0; q < H; ++q) dst[q] = src[q];
  }
}

// One block computes a BM x BN tile of C with (BM/TM) x (BN/TN) threads, each a TM x TN sub-tile made of two
// halves in each direction (rows ty*TM/2 + i and BM/2 + ty*TM/2 + i), so a warp's shared-memory reads are
// broadcasts (A) or contiguous (B). Per BK-deep step, every thread loads one run of RA elements of A and RB of B;
// the run lies along K (a_along_k) or along M (B: along K or along N), whichever is contiguous in memory, and is one
// vector load when vec says the operand is aligned for it. Shared memory holds A as [k][m] and B as [k][n] in Acc,
// padded by 16 bytes per row (conflict-free transposing stores), in two stages: the next tile's global loads are
// in registers while the current one is multiplied.
//
// Split-K (kSplit): blockIdx.y picks a slice of k_per_slice (a multiple of BK) along K, and the block writes its raw
// sums to partial[slice][m][n] instead of C; split_k_reduce_kernel then adds the slices in order and applies the
// epilogue, so the result does not depend on scheduling.
template <typename T, typename Acc, int BM, int BN, int BK, int TM, int TN, bool kSplit>
__global__ void __launch_bounds__((BM / TM) * (BN / TN))
    simt_gemm_kernel(GemmParams<T> params, int64_t m_tiles, int64_t n_tiles, bool a_along_k, bool a_vec, bool b_along_k,
                     bool b_vec, Acc* partial, int64_t k_per_slice) {
  constexpr int kThreads = (BM / TM) * (BN / TN);
  constexpr int RA = BM * BK / kThreads;
  constexpr int RB = BN * BK / kThreads;
  constexpr int kPad = 16 / static_cast<int>(sizeof(Acc));
  constexpr int HM = TM / 2, HN = TN / 2;
  static_assert(RA * kThreads == BM * BK && RB * kThreads == BN * BK, "tile must split evenly into runs");
  static_assert(BK % RA == 0 && BK % RB == 0 && BM % RA == 0 && BN % RB == 0, "runs must tile the block");

  __shared__ __align__(16) Acc As[2][BK][BM + kPad];
  __shared__ __align__(16) Acc Bs[2][BK][BN + kPad];

  GemmParams<T> p = params;
  if constexpr (kSplit) {
    // k_begin is a multiple of BK (so of every run length): vector loads stay aligned.
    const int64_t k_begin = static_cast<int64_t>(blockIdx.y) * k_per_slice;
    p.a += k_begin * p.a_cs;
    p.b += k_begin * p.b_rs;
    p.k = (p.k - k_begin) < k_per_slice ? (p.k - k_begin) : k_per_slice;
  }

  const TileCoord tc = tile_of(blockIdx.x, m_tiles, n_tiles);
  const int64_t m0 = tc.mt * BM, n0 = tc.nt * BN;
  const int tid = threadIdx.x;
  const int tx = tid % (BN / TN), ty = tid / (BN / TN);

  // This thread's run within the A tile (row a_r, depth a_k) and the B tile (depth b_k, column b_n).
  const int a_r = a_along_k ? tid / (BK / RA) : (tid % (BM / RA)) * RA;
  const int a_k = a_along_k ? (tid % (BK / RA)) * RA : tid / (BM / RA);
  const int b_n = b_along_k ? tid / (BK / RB) : (tid % (BN / RB)) * RB;
  const int b_k = b_along_k ? (tid % (BK / RB)) * RB : tid / (BN / RB);

  Acc a_reg[RA], b_reg[RB];

  auto load_a = [&](int64_t k0) {
    const int64_t gm = m0 + a_r, gk = k0 + a_k;
    if (a_along_k) {
      if (a_vec && gm < p.m && gk + RA <= p.k) {
        load_run<RA>(p.a + gm * p.a_rs + gk, a_reg);
      } else {
#pragma unroll
        for (int q = 0; q < RA; ++q)
          a_reg[q] = (gm < p.m && gk + q < p.k) ? to_acc<Acc>(p.a[gm * p.a_rs + (gk + q) * p.a_cs]) : Acc(0);
      }
    } else {
      if (a_vec && gk < p.k && gm + RA <= p.m) {
        load_run<RA>(p.a + gm + gk * p.a_cs, a_reg);
      } else {
#pragma unroll
        for (int q = 0; q < RA; ++q)
          a_reg[q] = (gm + q < p.m && gk < p.k) ? to_acc<Acc>(p.a[(gm + q) * p.a_rs + gk * p.a_cs]) : Acc(0);
      }
    }
  };
  auto load_b = [&](int64_t k0) {
    const int64_t gn = n0 + b_n, gk = k0 + b_k;
    if (b_along_k) {
      if (b_vec && gn < p.n && gk + RB <= p.k) {
        load_run<RB>(p.b + gk + gn * p.b_cs, b_reg);
      } else {
#pragma unroll
        for (int q = 0; q < RB; ++q)
          b_reg[q] = (gn < p.n && gk + q < p.k) ? to_acc<Acc>(p.b[(gk + q) * p.b_rs + gn * p.b_cs]) : Acc(0);
      }
    } else {
      if (b_vec && gk < p.k && gn + RB <= p.n) {
        load_run<RB>(p.b + gk * p.b_rs + gn, b_reg);
      } else {
#pragma unroll
        for (int q = 0; q < RB; ++q)
          b_reg[q] = (gk < p.k && gn + q < p.n) ? to_acc<Acc>(p.b[gk * p.b_rs + (gn + q) * p.b_cs]) : Acc(0);
      }
    }
  };
  auto store_tiles = [&](int buf) {
#pragma unroll
    for (int q = 0; q < RA; ++q) {
      if (a_along_k)
        As[buf][a_k + q][a_r] = a_reg[q];
      else
        As[buf][a_k][a_r + q] = a_reg[q];
    }
#pragma unroll
    for (int q = 0; q < RB; ++q) {
      if (b_along_k)
        Bs[buf][b_k + q][b_n] = b_reg[q];
      else
        Bs[buf][b_k][b_n + q] = b_reg[q];
    }
  };

  Acc acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = Acc(0);

  const int64_t k_tiles = ceil_div(p.k, BK);
  if (k_tiles > 0) {
    load_a(0);
    load_b(0);
    store_tiles(0);
    __syncthreads();
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      const int buf = static_cast<int>(kt & 1);
      const bool more = kt + 1 < k_tiles;
      if (more) {
        load_a((kt + 1) * BK);
        load_b((kt + 1) * BK);
      }
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        Acc af[TM], bf[TN];
        load_fragment<HM>(&As[buf][kk][ty * HM], af);
        load_fragment<HM>(&As[buf][kk][BM / 2 + ty * HM], af + HM);
        load_fragment<HN>(&Bs[buf][kk][tx * HN], bf);
        load_fragment<HN>(&Bs[buf][kk][BN / 2 + tx * HN], bf + HN);
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] += af[i] * bf[j];
      }
      // The other stage was last read before the previous barrier, so it can be overwritten now.
      if (more) store_tiles(buf ^ 1);
      __syncthreads();
    }
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t gm = m0 + (i < HM ? ty * HM + i : BM / 2 + ty * HM + (i - HM));
    if (gm >= p.m) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t gn = n0 + (j < HN ? tx * HN + j : BN / 2 + tx * HN + (j - HN));
      if (gn >= p.n) continue;
      if constexpr (kSplit)
        partial[(static_cast<int64_t>(blockIdx.y) * p.m + gm) * p.n + gn] = acc[i][j];
      else
        store_output<T, Acc>(p, gm, gn, acc[i][j]);
    }
  }
}

// C(i, j) for i < m <= MAXM: one warp per column j of C walks B's column (contiguous, b_rs == 1) and the m rows of
// A once, then reduces across lanes. Reading each element of B once is the floor when m is small, so this kernel
// is bound by B's bandwidth; unrolling keeps several 16-byte loads in flight per lane.
template <typename T, typename Acc, int MAXM>
__global__ void __launch_bounds__(256) skinny_gemm_kernel(GemmParams<T> p, bool b_vec, bool a_vec) {
  constexpr int VEC = 16 / static_cast<int>(sizeof(T));
  // 16-bit types widen 8 elements per load into floats, so they are not unrolled (that would spill registers).
  constexpr int kUnroll = sizeof(T) == 2 ? 1 : 4;
  const int lane = threadIdx.x & 31;
  const int64_t warps_per_block = blockDim.x / 32;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
  for (int64_t j = blockIdx.x * warps_per_block + threadIdx.x / 32; j < p.n; j += warp_stride) {
    Acc acc[MAXM];
#pragma unroll
    for (int i = 0; i < MAXM; ++i) acc[i] = Acc(0);
    const T* bcol = p.b + j * p.b_cs;
    int64_t k_vec_end = 0;
    if (b_vec) {
      k_vec_end = (p.k / VEC) * VEC;
#pragma unroll kUnroll
      for (int64_t k0 = static_cast<int64_t>(lane) * VEC; k0 < k_vec_end; k0 += 32 * VEC) {
        Acc bv[VEC];
        load_run<VEC>(bcol + k0, bv);
#pragma unroll
        for (int i = 0; i < MAXM; ++i) {
          if (i < p.m) {
            const T* arow = p.a + i * p.a_rs;
            Acc av[VEC];
            if (a_vec) {
              load_run<VEC>(arow + k0, av);
            } else {
#pragma unroll
              for (int q = 0; q < VEC; ++q) av[q] = to_acc<Acc>(arow[(k0 + q) * p.a_cs]);
            }
#pragma unroll
            for (int q = 0; q < VEC; ++q) acc[i] += av[q] * bv[q];
          }
        }
      }
    }
    for (int64_t kk = k_vec_end + lane; kk < p.k; kk += 32) {
      const Acc bv = to_acc<Acc>(bcol[kk]);
#pragma unroll
      for (int i = 0; i < MAXM; ++i)
        if (i < p.m) acc[i] += to_acc<Acc>(p.a[i * p.a_rs + kk * p.a_cs]) * bv;
    }
#pragma unroll
    for (int i = 0; i < MAXM; ++i) {
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], offset);
    }
#pragma unroll
    for (int i = 0; i < MAXM; ++i)
      if (i < p.m && lane == i) store_output<T, Acc>(p, i, j, acc[i]);
  }
}

// How a tiled kernel reads one operand: along which dimension a thread's run lies, and whether as vector loads.
struct OperandPlan {
  bool along_k;
  bool vec;
};

// For an operand X(outer, k) = x[outer*outer_stride + k*k_stride] loaded in runs of `run` elements.
template <typename T>
OperandPlan plan_operand(const T* x, int64_t outer_stride, int64_t k_stride, int run) {
  const int64_t run_bytes = static_cast<int64_t>(run) * static_cast<int64_t>(sizeof(T));
  const bool aligned = aligned_to(x, run_bytes);
  if (k_stride == 1) return {true, aligned && outer_stride % run == 0};
  if (outer_stride == 1) return {false, aligned && k_stride % run == 0};
  // Neither dimension is contiguous: element loads, along the dimension with the smaller stride.
  const int64_t abs_k = k_stride < 0 ? -k_stride : k_stride;
  const int64_t abs_outer = outer_stride < 0 ? -outer_stride : outer_stride;
  return {abs_k <= abs_outer, false};
}

template <typename T, typename Acc, int BM, int BN, int BK, int TM, int TN>
void launch_simt(const GemmParams<T>& p, cudaStream_t stream, const DeviceInfo* dev) {
  constexpr int kThreads = (BM / TM) * (BN / TN);
  constexpr int RA = BM * BK / kThreads;
  constexpr int RB = BN * BK / kThreads;
  const OperandPlan a = plan_operand(p.a, p.a_rs, p.a_cs, RA);
  const OperandPlan b = plan_operand(p.b, p.b_cs, p.b_rs, RB);
  const int64_t m_tiles = ceil_div(p.m, BM), n_tiles = ceil_div(p.n, BN);
  const unsigned int blocks = tile_grid(m_tiles, n_tiles, "gemm");

  if (dev != nullptr) {
    const SplitPlan plan = plan_split(p.k, blocks, *dev, BK);
    if (plan.slices > 1 && run_split<T, Acc>(p, plan, stream, *dev, [&](Acc* partial) {
          simt_gemm_kernel<T, Acc, BM, BN, BK, TM, TN, true>
              <<<dim3(blocks, static_cast<unsigned int>(plan.slices)), kThreads, 0, stream>>>(
                  p, m_tiles, n_tiles, a.along_k, a.vec, b.along_k, b.vec, partial, plan.k_per_slice);
        }))
      return;
  }
  simt_gemm_kernel<T, Acc, BM, BN, BK, TM, TN, false>
      <<<blocks, kThreads, 0, stream>>>(p, m_tiles, n_tiles, a.along_k, a.vec, b.along_k, b.vec, nullptr, 0);
  check_launch("gemm");
}

}  // namespace

unsigned int tile_grid(int64_t m_tiles, int64_t n_tiles, const char* op) {
  const int64_t tiles = m_tiles * n_tiles;
  if (tiles > 0x7fffffff)
    throw std::runtime_error(std::string("linneuron._cuda.") + op + ": output too large for one launch (" +
                             std::to_string(tiles) + " tiles)");
  return static_cast<unsigned int>(tiles);
}

template <typename T>
void launch_simt_large(const GemmParams<T>& p, cudaStream_t stream) {
  launch_simt<T, typename AccOf<T>::type, 128, 128, 8, 8, 8>(p, stream, nullptr);
}

template <typename T>
void launch_simt_small(const GemmParams<T>& p, cudaStream_t stream, const DeviceInfo& dev) {
  launch_simt<T, typename AccOf<T>::type, 64, 64, 8, 4, 4>(p, stream, &dev);
}

template <typename T>
void launch_skinny(const GemmParams<T>& p, cudaStream_t stream, const DeviceInfo& dev) {
  constexpr int VEC = 16 / static_cast<int>(sizeof(T));
  constexpr int kThreads = 256;
  const bool b_vec = p.b_rs == 1 && aligned_to(p.b, 16) && p.b_cs % VEC == 0;
  const bool a_vec = p.a_cs == 1 && aligned_to(p.a, 16) && p.a_rs % VEC == 0;
  const unsigned int blocks = grid_stride_blocks(p.n * 32, kThreads, dev);
  skinny_gemm_kernel<T, typename AccOf<T>::type, static_cast<int>(kSkinnyMaxM)>
      <<<blocks, kThreads, 0, stream>>>(p, b_vec, a_vec);
  check_launch("gemm");
}

template void launch_simt_large<float>(const GemmParams<float>&, cudaStream_t);
template void launch_simt_small<float>(const GemmParams<float>&, cudaStream_t, const DeviceInfo&);
template void launch_simt_small<double>(const GemmParams<double>&, cudaStream_t, const DeviceInfo&);
template void launch_simt_small<__nv_bfloat16>(const GemmParams<__nv_bfloat16>&, cudaStream_t, const DeviceInfo&);
template void launch_skinny<float>(const GemmParams<float>&, cudaStream_t, const DeviceInfo&);
template void launch_skinny<double>(const GemmParams<double>&, cudaStream_t, const DeviceInfo&);
template void launch_skinny<__half>(const GemmParams<__half>&, cudaStream_t, const DeviceInfo&);
template void launch_skinny<__nv_bfloat16>(const GemmParams<__nv_bfloat16>&, cudaStream_t, const DeviceInfo&);

}  // namespace cuda
}  // namespace linneuron
