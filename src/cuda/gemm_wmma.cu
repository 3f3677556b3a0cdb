// Tensor-core GEMM for float16 and bfloat16 (WMMA 16x16x16 tiles, float32 accumulation and epilogue).
//
// Shapes and layout (src/cpp/gemm.h): C(m, n) = [C +] A(m, k) B(k, n) [+ bias(n)] [then H], with
// A(i, p) = a[i*a_rs + p*a_cs], B(p, j) = b[p*b_rs + j*b_cs], C(i, j) = c[i*c_rs + j*c_cs]; any strides.
// A block computes a 128 x 128 tile of C with 8 warps (2 along M x 4 along N, 64 x 32 each = 4 x 2 fragments),
// stepping K by 32. Each operand sits in shared memory in the layout that its memory order makes a plain copy:
// K-major ([row][k], WMMA row_major for A / col_major for B) when K is contiguous or nothing is, else
// M- or N-major ([k][row]). Rows are padded by 8 elements (16 bytes) against bank conflicts; two stages, the next
// tile's global loads held in registers while the current one is multiplied. With few tiles and a long K, blocks
// split K (kSplit, see gemm_kernels.cuh) and write float partial sums that a second kernel reduces.
#include <mma.h>

#include <type_traits>

#include "gemm_kernels.cuh"

namespace linneuron {
namespace cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kBM = 128, kBN = 128, kBK = 32, kPad = 8, kThreads = 256;
constexpr int kRun = 8;                          // 16-bit elements per 16-byte load
constexpr int kStageElems = kBM * (kBK + kPad);  // >= kBK * (kBM + kPad): room for either layout
static_assert(kBK * (kBM + kPad) <= kStageElems && kBK * (kBN + kPad) <= kStageElems, "stage too small");
static_assert(kBM == kBN, "one stage size serves both operands");

template <typename T>
union Run16 {
  uint4 v;
  T e[kRun];
};

template <typename T, bool A_KMAJOR, bool B_KMAJOR, bool kSplit>
__device__ __forceinline__ void wmma_gemm_body(const GemmParams<T>& params, int64_t m_tiles, int64_t n_tiles,
                                               bool a_vec, bool b_vec, float* partial, int64_t k_per_slice) {
  using ALayout = typename std::conditional<A_KMAJOR, wmma::row_major, wmma::col_major>::type;
  using BLayout = typename std::conditional<B_KMAJOR, wmma::col_major, wmma::row_major>::type;
  constexpr int LDA = A_KMAJOR ? kBK + kPad : kBM + kPad;
  constexpr int LDB = B_KMAJOR ? kBK + kPad : kBN + kPad;

  __shared__ __align__(128) T smem[2 * 2 * kStageElems];  // [stage][A, B]

  GemmParams<T> p = params;
  if constexpr (kSplit) {
    // k_begin is a multiple of kBK (so of the 8-element runs): vector loads stay aligned.
    const int64_t k_begin = static_cast<int64_t>(blockIdx.y) * k_per_slice;
    p.a += k_begin * p.a_cs;
    p.b += k_begin * p.b_rs;
    p.k = (p.k - k_begin) < k_per_slice ? (p.k - k_begin) : k_per_slice;
  }

  const TileCoord tc = tile_of(blockIdx.x, m_tiles, n_tiles);
  const int64_t m0 = tc.mt * kBM, n0 = tc.nt * kBN;
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int warp_m = warp / 4, warp_n = warp % 4;
  const T zero = from_acc<T, float>(0.0f);

  // Each thread moves two 8-element runs of each operand per K step; run u covers (row, k) or (k, row) below.
  Run16<T> a_reg[2], b_reg[2];

  auto load_a = [&](int64_t k0) {
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int u = tid + s * kThreads;
      if (A_KMAJOR) {
        const int64_t gm = m0 + u / (kBK / kRun), gk = k0 + (u % (kBK / kRun)) * kRun;
        if (a_vec && gm < p.m && gk + kRun <= p.k) {
          a_reg[s].v = __ldg(reinterpret_cast<const uint4*>(p.a + gm * p.a_rs + gk));
        } else {
#pragma unroll
          for (int q = 0; q < kRun; ++q)
            a_reg[s].e[q] = (gm < p.m && gk + q < p.k) ? p.a[gm * p.a_rs + (gk + q) * p.a_cs] : zero;
        }
      } else {
        const int64_t gk = k0 + u / (kBM / kRun), gm = m0 + (u % (kBM / kRun)) * kRun;
        if (a_vec && gk < p.k && gm + kRun <= p.m) {
          a_reg[s].v = __ldg(reinterpret_cast<const uint4*>(p.a + gm + gk * p.a_cs));
        } else {
#pragma unroll
          for (int q = 0; q < kRun; ++q)
            a_reg[s].e[q] = (gk < p.k && gm + q < p.m) ? p.a[(gm + q) * p.a_rs + gk * p.a_cs] : zero;
        }
      }
    }
  };
  auto load_b = [&](int64_t k0) {
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int u = tid + s * kThreads;
      if (B_KMAJOR) {
        const int64_t gn = n0 + u / (kBK / kRun), gk = k0 + (u % (kBK / kRun)) * kRun;
        if (b_vec && gn < p.n && gk + kRun <= p.k) {
          b_reg[s].v = __ldg(reinterpret_cast<const uint4*>(p.b + gk + gn * p.b_cs));
        } else {
#pragma unroll
          for (int q = 0; q < kRun; ++q)
            b_reg[s].e[q] = (gn < p.n && gk + q < p.k) ? p.b[(gk + q) * p.b_rs + gn * p.b_cs] : zero;
        }
      } else {
        const int64_t gk = k0 + u / (kBN / kRun), gn = n0 + (u % (kBN / kRun)) * kRun;
        if (b_vec && gk < p.k && gn + kRun <= p.n) {
          b_reg[s].v = __ldg(reinterpret_cast<const uint4*>(p.b + gk * p.b_rs + gn));
        } else {
#pragma unroll
          for (int q = 0; q < kRun; ++q)
            b_reg[s].e[q] = (gk < p.k && gn + q < p.n) ? p.b[gk * p.b_rs + (gn + q) * p.b_cs] : zero;
        }
      }
    }
  };
  auto store_tiles = [&](int stage) {
    T* As = smem + stage * 2 * kStageElems;
    T* Bs = As + kStageElems;
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int u = tid + s * kThreads;
      const int a_off = A_KMAJOR ? (u / (kBK / kRun)) * LDA + (u % (kBK / kRun)) * kRun
                                 : (u / (kBM / kRun)) * LDA + (u % (kBM / kRun)) * kRun;
      const int b_off = B_KMAJOR ? (u / (kBK / kRun)) * LDB + (u % (kBK / kRun)) * kRun
                                 : (u / (kBN / kRun)) * LDB + (u % (kBN / kRun)) * kRun;
      *reinterpret_cast<uint4*>(As + a_off) = a_reg[s].v;
      *reinterpret_cast<uint4*>(Bs + b_off) = b_reg[s].v;
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 2; ++ni) wmma::fill_fragment(acc[mi][ni], 0.0f);

  const int64_t k_tiles = ceil_div(p.k, kBK);
  if (k_tiles > 0) {
    load_a(0);
    load_b(0);
    store_tiles(0);
    __syncthreads();
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      const int stage = static_cast<int>(kt & 1);
      const bool more = kt + 1 < k_tiles;
      if (more) {
        load_a((kt + 1) * kBK);
        load_b((kt + 1) * kBK);
      }
      const T* As = smem + stage * 2 * kStageElems;
      const T* Bs = As + kStageElems;
#pragma unroll 1
      for (int kk = 0; kk < kBK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, ALayout> af[4];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, BLayout> bf[2];
#pragma unroll
        for (int mi = 0; mi < 4; ++mi) {
          const int row = warp_m * 64 + mi * 16;
          wmma::load_matrix_sync(af[mi], A_KMAJOR ? As + row * LDA + kk : As + kk * LDA + row, LDA);
        }
#pragma unroll
        for (int ni = 0; ni < 2; ++ni) {
          const int col = warp_n * 32 + ni * 16;
          wmma::load_matrix_sync(bf[ni], B_KMAJOR ? Bs + col * LDB + kk : Bs + kk * LDB + col, LDB);
        }
#pragma unroll
        for (int mi = 0; mi < 4; ++mi)
#pragma unroll
          for (int ni = 0; ni < 2; ++ni) wmma::mma_sync(acc[mi][ni], af[mi], bf[ni], acc[mi][ni]);
      }
      if (more) store_tiles(stage ^ 1);
      __syncthreads();
    }
  }

  // Epilogue: each warp parks one 16 x 16 float fragment at a time in its own 1 KB of (now idle) shared memory,
  // then its lanes apply [C +] acc [+ bias] [H] to 8 elements each with bounds checks.
  float* park = reinterpret_cast<float*>(smem) + warp * 256;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 2; ++ni) {
      wmma::store_matrix_sync(park, acc[mi][ni], 16, wmma::mem_row_major);
      __syncwarp();
      const int r = lane / 2, c0 = (lane % 2) * 8;
      const int64_t gm = m0 + warp_m * 64 + mi * 16 + r;
      const int64_t gn0 = n0 + warp_n * 32 + ni * 16 + c0;
      if (gm < p.m) {
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          if (gn0 + q >= p.n) continue;
          if constexpr (kSplit)
            partial[(static_cast<int64_t>(blockIdx.y) * p.m + gm) * p.n + gn0 + q] = park[r * 16 + c0 + q];
          else
            store_output<T, float>(p, gm, gn0 + q, park[r * 16 + c0 + q]);
        }
      }
      __syncwarp();
    }
  }
}

template <typename T, bool A_KMAJOR, bool B_KMAJOR, bool kSplit>
__global__ void __launch_bounds__(kThreads)
    wmma_gemm_kernel(GemmParams<T> p, int64_t m_tiles, int64_t n_tiles, bool a_vec, bool b_vec, float* partial,
                     int64_t k_per_slice) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // bfloat16 tensor cores start with sm_80; the dispatcher sends bfloat16 on older GPUs to the CUDA-core kernel.
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    __trap();
  } else {
    wmma_gemm_body<T, A_KMAJOR, B_KMAJOR, kSplit>(p, m_tiles, n_tiles, a_vec, b_vec, partial, k_per_slice);
  }
#else
  wmma_gemm_body<T, A_KMAJOR, B_KMAJOR, kSplit>(p, m_tiles, n_tiles, a_vec, b_vec, partial, k_per_slice);
#endif
}

template <typename T, bool A_KMAJOR, bool B_KMAJOR>
void launch_layout(const GemmParams<T>& p, cudaStream_t stream, const DeviceInfo& dev, bool a_vec, bool b_vec) {
  const int64_t m_tiles = ceil_div(p.m, kBM), n_tiles = ceil_div(p.n, kBN);
  const unsigned int blocks = tile_grid(m_tiles, n_tiles, "gemm");
  const SplitPlan plan = plan_split(p.k, blocks, dev, kBK);
  if (plan.slices > 1 && run_split<T, float>(p, plan, stream, dev, [&](float* partial) {
        wmma_gemm_kernel<T, A_KMAJOR, B_KMAJOR, true>
            <<<dim3(blocks, static_cast<unsigned int>(plan.slices)), kThreads, 0, stream>>>(
                p, m_tiles, n_tiles, a_vec, b_vec, partial, plan.k_per_slice);
      }))
    return;
  wmma_gemm_kernel<T, A_KMAJOR, B_KMAJOR, false>
      <<<blocks, kThreads, 0, stream>>>(p, m_tiles, n_tiles, a_vec, b_vec, nullptr, 0);
  check_launch("gemm");
}

}  // namespace

template <typename T>
void launch_wmma(const GemmParams<T>& p, cudaStream_t stream, const DeviceInfo& dev) {
  constexpr int64_t kRunBytes = kRun * static_cast<int64_t>(sizeof(T));
  // M- or N-major shared layout only when that dimension is contiguous and K is not; otherwise K-major, with
  // element loads unless K is contiguous and aligned.
  const bool a_kmajor = p.a_cs == 1 || p.a_rs != 1;
  const bool b_kmajor = p.b_rs == 1 || p.b_cs != 1;
  const bool a_vec =
      aligned_to(p.a, kRunBytes) && (a_kmajor ? (p.a_cs == 1 && p.a_rs % kRun == 0) : (p.a_cs % kRun == 0));
  const bool b_vec =
      aligned_to(p.b, kRunBytes) && (b_kmajor ? (p.b_rs == 1 && p.b_cs % kRun == 0) : (p.b_rs % kRun == 0));
  if (a_kmajor && b_kmajor)
    launch_layout<T, true, true>(p, stream, dev, a_vec, b_vec);
  else if (a_kmajor)
    launch_layout<T, true, false>(p, stream, dev, a_vec, b_vec);
  else if (b_kmajor)
    launch_layout<T, false, true>(p, stream, dev, a_vec, b_vec);
  else
    launch_layout<T, false, false>(p, stream, dev, a_vec, b_vec);
}

template void launch_wmma<__half>(const GemmParams<__half>&, cudaStream_t, const DeviceInfo&);
template void launch_wmma<__nv_bfloat16>(const GemmParams<__nv_bfloat16>&, cudaStream_t, const DeviceInfo&);

}  // namespace cuda
}  // namespace linneuron
