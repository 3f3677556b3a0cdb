// bfloat16 GEMM on Intel AMX tiles (TDPBF16PS): C(m, n) = round([C +] A B [+ bias], then [H]), float32 sums.
//
// Compiled with -mamx-tile -mamx-bf16 -mavx512f -mavx512bw -mavx512vl, so nothing here runs before
// amx_bf16_available() (gemm_lowp.cpp, baseline code) has seen AMX-BF16 in cpuid, the tile state enabled by the OS and
// granted to this process (arch_prctl ARCH_REQ_XCOMP_PERM), and the avx512 family active.
//
// Layout. Every register tile is 16 rows x 64 bytes. A tile holds 16 rows of A by 32 k (bfloat16, row-major); a B
// tile holds 16 k pairs by 16 columns in the VNNI order TDPBF16PS reads, element (kk, j) at pair kk / 2, lane
// 2 j + kk % 2; a C tile 16 x 16 float32. The kernel keeps a 32 x 32 block of C in four tiles (tmm0-3), loads two A
// tiles (tmm4-5) and two B tiles (tmm6-7) per 32 k, so each loaded tile feeds two products.
// Packing: B into VNNI tiles, chunk by chunk of 32 k across all its column blocks (zero-padded to 32 in k and n),
// all of k at once or, for a long reduction, a slab of k at a time that stays in L2 (partial sums in float32 between
// slabs). A a block of 32 rows at a time per thread (copied, or read in place where it feeds at most two column
// blocks), or, column-major (dW's dYᵀ), a slab of it first. A short forward batch runs transposed (Cᵀ = W Xᵀ), W as
// the tiles' A. Column panels of B that take half of L2 are the outer loop, so every row block reads its panel from
// L2. Threads split a panel's 32 x 32 blocks; each C element is one thread's chain of tile products in k order, so
// results do not depend on the thread count. The epilogue (bias, accumulate, step, rounding) runs in AVX-512, 16
// columns a step. Xeon (KVM family 6 model 167), one thread: 1024^3 forward 2.5-2.6 ms (0.77x torch's oneDNN on the
// same tiles; the float32 path took 14-17 ms), 2048^3 26 ms (0.81x); two threads 1.1-1.2x.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>

#include "convert.h"
#include "cpu_caches.h"
#include "lowp.h"
#include "neuron_math.h"
#include "parallel_for.h"
#include "runtime.h"
#include "workspace.h"

namespace linneuron {
namespace {

constexpr int64_t kTile = 16;   // rows of a tile, columns of a C or B tile
constexpr int64_t kChunk = 32;  // bfloat16 k values in a row of an A tile (64 bytes)
constexpr int64_t kBlock = 32;  // rows and columns of the C block the kernel holds (2 x 2 tiles)

struct TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = kTile;
  _tile_loadconfig(&cfg);
}

// B (k x n) into VNNI tiles: for column block jb and k chunk kb, tile t (columns 16 t .. 16 t + 15 of the block) at
// out + ((kb * blocks + jb) * 2 + t) * 512 (blocks = column blocks: a chunk's tiles side by side), element (kk, j) of the chunk at (kk / 2) * 32 + 2 j + kk % 2. A B whose
// columns are contiguous along k (Wᵀ of a row-major W, the forward's) moves whole pairs: 32-bit words of W's rows.
void pack_b_vnni(int64_t k, int64_t n, const uint16_t* b, int64_t b_rs, int64_t b_cs, uint16_t* out, int nthreads) {
  const int64_t chunks = (k + kChunk - 1) / kChunk, blocks = (n + kBlock - 1) / kBlock;
  constexpr int64_t kTileElems = kTile * kChunk;
  const auto tile_at = [&](int64_t jb, int64_t kb, int64_t t) { return out + ((kb * blocks + jb) * 2 + t) * kTileElems; };
  if (b_cs == 1) {
    // A row-major B (dX's W, dW's X): a tile row interleaves 16 elements of rows 2 p and 2 p + 1, missing columns
    // and the missing rows of the last chunk read as zeros, so every tile is written whole. Pair by pair across all
    // columns, B is read in order: group by group, each pass took 32 bytes of every row (dW of 30038 x 685 -> 11:
    // 13 ms against 4 for torch).
    parallel_for(nthreads, chunks, [&](int64_t kb) {
      for (int64_t p = kb * kTile; p < (kb + 1) * kTile; ++p) {
        const uint16_t* even_row = 2 * p < k ? b + 2 * p * b_rs : nullptr;
        const uint16_t* odd_row = 2 * p + 1 < k ? b + (2 * p + 1) * b_rs : nullptr;
        for (int64_t col = 0; col < blocks * kBlock; col += kTile) {
          const __mmask16 live = col + kTile <= n ? __mmask16(0xffff) : col < n ? __mmask16((1u << (n - col)) - 1) : 0;
          const __m512i even = even_row ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(live, even_row + col))
                                        : _mm512_setzero_si512();
          const __m512i odd = odd_row ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(live, odd_row + col))
                                      : _mm512_setzero_si512();
          uint16_t* tile = tile_at(col / kBlock, kb, col % kBlock / kTile);
          _mm512_storeu_si512(tile + (p % kTile) * 32, _mm512_or_si512(even, _mm512_slli_epi32(odd, 16)));
        }
      }
    });
    return;
  }
  parallel_for(nthreads, blocks, [&](int64_t jb) {
    for (int64_t kb = 0; kb < chunks; ++kb) std::fill(tile_at(jb, kb, 0), tile_at(jb, kb, 0) + 2 * kTileElems, uint16_t(0));
    for (int64_t jj = 0; jj < kBlock; ++jj) {
      const int64_t col = jb * kBlock + jj;
      if (col >= n) break;
      const int64_t t = jj / kTile, j = jj % kTile;
      const uint16_t* src = b + col * b_cs;
      if (b_rs == 1 && j == 0 && col + kTile <= n && b_cs < (int64_t(1) << 26)) {
        // 16 whole columns of a B whose columns run along k (Wᵀ of a row-major W, the forward's): each row of a tile
        // (one k pair of the 16 columns) is one 16-lane gather of 32-bit words, at any column stride (scale 2, so
        // an odd k's odd stride too); an odd k's last row, whose pair would read past the column, goes alone.
        const __m512i lanes = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(int(b_cs)));
        for (int64_t p = 0; p < k / 2; ++p) {
          _mm512_storeu_si512(tile_at(jb, p / kTile, t) + (p % kTile) * 32, _mm512_i32gather_epi32(lanes, src + 2 * p, 2));
        }
        if (k % 2 == 1) {
          const int64_t p = k / 2;
          uint16_t* tile = tile_at(jb, p / kTile, t) + (p % kTile) * 32;
          for (int64_t jj2 = 0; jj2 < kTile; ++jj2) tile[2 * jj2] = src[jj2 * b_cs + k - 1];
        }
        jj += kTile - 1;
        continue;
      }
      if (b_rs == 1) {  // pairs (2 p, 2 p + 1) of the column are one 32-bit word; an odd k's last row alone
        for (int64_t p = 0; p < k / 2; ++p) {
          uint32_t word;
          std::memcpy(&word, src + 2 * p, sizeof(word));
          std::memcpy(tile_at(jb, p / kTile, t) + (p % kTile) * 32 + 2 * j, &word, sizeof(word));
        }
        if (k % 2 == 1) {
          const int64_t p = k / 2;
          tile_at(jb, p / kTile, t)[(p % kTile) * 32 + 2 * j] = src[k - 1];
        }
        continue;
      }
      for (int64_t row = 0; row < k; ++row) {
        const int64_t kk = row % kChunk;
        tile_at(jb, row / kChunk, t)[(kk / 2) * 32 + 2 * j + kk % 2] = src[row * b_rs];
      }
    }
  });
}

// Rows i0 .. i0 + rows of A (rows <= 32) into a 32 x (chunks * 32) row-major block, zero-padded. A row-major A
// moves in 64-byte chunks, the last one masked: a memcpy and a fill per row cost a fifth of a short-k product.
void pack_a_rows(int64_t i0, int64_t rows, int64_t k, int64_t k_pad, const uint16_t* a, int64_t a_rs, int64_t a_cs,
                 uint16_t* out) {
  for (int64_t i = 0; i < kBlock; ++i) {
    uint16_t* dst = out + i * k_pad;
    if (i >= rows) {
      std::fill(dst, dst + k_pad, uint16_t(0));
      continue;
    }
    const uint16_t* src = a + (i0 + i) * a_rs;
    if (a_cs == 1) {
      for (int64_t p = 0; p < k_pad; p += kChunk) {
        // A slab's last rows can be shorter than k_pad by more than a chunk: whole chunks past k are zeros.
        const __mmask32 live = p + kChunk <= k ? ~__mmask32(0) : p < k ? __mmask32((uint64_t(1) << (k - p)) - 1) : 0;
        _mm512_storeu_si512(dst + p, _mm512_maskz_loadu_epi16(live, src + p));
      }
      continue;
    }
    for (int64_t p = 0; p < k; ++p) dst[p] = src[p * a_cs];
    std::fill(dst + k, dst + k_pad, uint16_t(0));
  }
}

// A column-major A (dW's dYᵀ: rows of dY hold a k step of every row of A) packed before the products, as row_blocks
// blocks of 32 x k_pad, zero-padded: a 32-bit word of the source holds rows i and i + 1 of one k step, so a 16-lane
// gather down 16 k steps fills 16 elements of both rows (low and high halves). An odd last row and the last k steps
// (k mod 16) go element by element.
void pack_a_columns(int64_t m, int64_t k, int64_t k_pad, const uint16_t* a, int64_t a_cs, uint16_t* out,
                    int nthreads) {
  const int64_t row_blocks = (m + kBlock - 1) / kBlock;
  parallel_for(nthreads, row_blocks, [&](int64_t ib) {
    uint16_t* block = out + ib * kBlock * k_pad;
    const int64_t i0 = ib * kBlock, rows = std::min(kBlock, m - i0);
    for (int64_t i = 0; i < rows; ++i) std::fill(block + i * k_pad + k, block + (i + 1) * k_pad, uint16_t(0));
    std::fill(block + rows * k_pad, block + kBlock * k_pad, uint16_t(0));
    const int64_t paired = a_cs < (int64_t(1) << 26) ? rows / 2 * 2 : 0, gathered = paired > 0 ? k / kTile * kTile : 0;
    const __m512i steps = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(int(std::min<int64_t>(a_cs, 1 << 26))));
    for (int64_t p0 = 0; p0 < gathered; p0 += kTile)
      for (int64_t i = 0; i < paired; i += 2) {
        const __m512i pairs = _mm512_i32gather_epi32(steps, a + i0 + i + p0 * a_cs, 2);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(block + i * k_pad + p0), _mm512_cvtepi32_epi16(pairs));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(block + (i + 1) * k_pad + p0),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(pairs, 16)));
      }
    for (int64_t p = 0; p < k; ++p) {
      const uint16_t* src = a + i0 + p * a_cs;
      for (int64_t i = p < gathered ? paired : 0; i < rows; ++i) block[i * k_pad + p] = src[i];
    }
  });
}

// One 32 x 32 block of C: the sums over `chunks` k chunks, added to `init` (32 x 32 float32, init_rs apart; zero
// where null), into `out` (out_rs apart). A's rows for the first `direct` chunks at a_rows (a_rs elements apart),
// the rest from `a_tail` (32 x 32, row-major); B's two tiles of chunk kb at b_tiles + kb * b_chunk_stride. With
// next_rows, the next row block's rows (next_rs bytes apart from
// next_a) are prefetched into L2, a line a row per chunk.
struct BlockSums {
  const float* init;
  int64_t init_rs;
  float* out;
  int64_t out_rs;
};
void block_product(int64_t chunks, const uint16_t* a_rows, int64_t a_rs, int64_t direct, const uint16_t* a_tail,
                   const uint16_t* b_tiles, int64_t b_chunk_stride, const BlockSums& c, const char* next_a, int64_t next_rs,
                   int64_t next_rows) {
  if (c.init) {
    const int64_t stride = c.init_rs * int64_t(sizeof(float));
    _tile_loadd(0, c.init, stride);
    _tile_loadd(1, c.init + kTile, stride);
    _tile_loadd(2, c.init + kTile * c.init_rs, stride);
    _tile_loadd(3, c.init + kTile * c.init_rs + kTile, stride);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t kb = 0; kb < chunks; ++kb) {
    const uint16_t* a = kb < direct ? a_rows + kb * kChunk : a_tail;
    const int64_t rs = kb < direct ? a_rs : kChunk;
    _tile_loadd(4, a, rs * int64_t(sizeof(uint16_t)));
    _tile_loadd(5, a + kTile * rs, rs * int64_t(sizeof(uint16_t)));
    _tile_loadd(6, b_tiles + kb * b_chunk_stride, 64);
    _tile_loadd(7, b_tiles + kb * b_chunk_stride + kTile * kChunk, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
    for (int64_t i = 0; i < next_rows; ++i) _mm_prefetch(next_a + i * next_rs + kb * 64, _MM_HINT_T1);
  }
  const int64_t stride = c.out_rs * int64_t(sizeof(float));
  _tile_stored(0, c.out, stride);
  _tile_stored(1, c.out + kTile, stride);
  _tile_stored(2, c.out + kTile * c.out_rs, stride);
  _tile_stored(3, c.out + kTile * c.out_rs + kTile, stride);
}

// float32 to bfloat16 in 16 lanes, bit for bit f32_to_bf16 (convert.h): nearest even, NaN kept and made quiet;
// each result in the low half of its 32-bit lane. (VCVTNEPS2BF16 would treat subnormal inputs as zero.)
inline __m512i round_to_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                 _mm512_set1_epi32(0x7f800000));
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_mask_mov_epi32(rounded, nan, quiet);
}

// Rows line0 .. line0 + lines of C, columns col0 .. col0 + width (<= 32), from the block's float32 sums: element e of
// line l is sums(l, e), or sums(e, l) where the tiles computed Cᵀ; [C +] sums [+ bias], [H], rounded once, in the
// order and with the bits of finish_element (convert.h). A line is two 16-lane halves joined into one 64-byte store:
// two narrowing stores a line cost a third of a short-k product.
void store_block(const LowpGemmArgs& g, const float* sums, bool transposed, const float* bias, int64_t line0,
                 int64_t lines, int64_t col0, int64_t width) {
  const auto sum_at = [&](int64_t l, int64_t e) { return transposed ? sums[e * kBlock + l] : sums[l * kBlock + e]; };
  if (g.c_cs != 1) {
    for (int64_t l = 0; l < lines; ++l)
      for (int64_t e = 0; e < width; ++e) {
        uint16_t& out = g.c[(line0 + l) * g.c_rs + (col0 + e) * g.c_cs];
        out = finish_element(LowpType::BFloat16, sum_at(l, e), bias, col0 + e, g.accumulate, g.step, out);
      }
    return;
  }
  const __mmask32 live = width >= kBlock ? ~__mmask32(0) : __mmask32((uint32_t(1) << width) - 1);
  const __mmask16 live_half[2] = {__mmask16(live), __mmask16(live >> kTile)};
  __m512 bias_half[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  if (bias)
    for (int h = 0; h < 2; ++h) bias_half[h] = _mm512_maskz_loadu_ps(live_half[h], bias + col0 + h * kTile);
  // Word 2 l of the first half's lanes, then of the second's: the low halves of both, in column order.
  const __m512i join = _mm512_set_epi16(62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32, 30, 28, 26,
                                        24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i down = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(int(kBlock)));  // a column of sums
  for (int64_t l = 0; l < lines; ++l) {
    uint16_t* out = g.c + (line0 + l) * g.c_rs + col0;
    const __m512i old = g.accumulate ? _mm512_maskz_loadu_epi16(live, out) : _mm512_setzero_si512();
    __m512i half[2];
    for (int h = 0; h < 2; ++h) {
      __m512 x = transposed ? _mm512_i32gather_ps(down, sums + h * kTile * kBlock + l, 4)
                            : _mm512_loadu_ps(sums + l * kBlock + h * kTile);
      if (g.accumulate) {
        const __m256i old_half = h == 0 ? _mm512_castsi512_si256(old) : _mm512_extracti64x4_epi64(old, 1);
        x = _mm512_add_ps(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(old_half), 16)), x);
      }
      if (bias) x = _mm512_add_ps(x, bias_half[h]);
      if (g.step) {
        const __mmask16 fires = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
        const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        x = _mm512_mask_mov_ps(_mm512_mask_mov_ps(_mm512_setzero_ps(), fires, _mm512_set1_ps(1.0f)), nan, x);
      }
      half[h] = round_to_bf16(x);
    }
    _mm512_mask_storeu_epi16(out, live, _mm512_permutex2var_epi16(half[0], join, half[1]));
  }
}

// The operands the tiles multiply: A (m x k) and B (k x n) of the call, or, to compute Cᵀ = Bᵀ Aᵀ, Bᵀ and Aᵀ.
struct Operands {
  int64_t m, n, k;
  const uint16_t* a;
  int64_t a_rs, a_cs;
  const uint16_t* b;
  int64_t b_rs, b_cs;
};

}  // namespace

void gemm_amx_bf16(const LowpGemmArgs& g, const float* bias, int nthreads, bool transposed) {
  // Transposed, the tiles compute Cᵀ = Bᵀ Aᵀ: a short batch's W is then their A, read in place once, and X their
  // small B, where W packed as B for a few rows of X cost what the whole product does.
  const Operands p = transposed ? Operands{g.n, g.m, g.k, g.b, g.b_cs, g.b_rs, g.a, g.a_cs, g.a_rs}
                                : Operands{g.m, g.n, g.k, g.a, g.a_rs, g.a_cs, g.b, g.b_rs, g.b_cs};
  const int64_t chunks = (p.k + kChunk - 1) / kChunk;
  const int64_t col_blocks = (p.n + kBlock - 1) / kBlock, row_blocks = (p.m + kBlock - 1) / kBlock;
  const int64_t l2 = int64_t(cpu_caches().l2);
  // k in slabs, where B is long and A has few rows (dW's X over a large batch) or A is column-major (dW's dYᵀ): each
  // slab of B (and of a column-major A) is read from memory once, packed and used while in L2. Packed whole, a long
  // B was written and read back as a copy as large as itself, and each row block of A went to memory between column
  // panels (Xeon, one thread, dW of 30038 x 685 -> 11: 49 ms through float32, torch 4.1; 15485 x 118 -> 868: 19 ms,
  // torch 7.1). A slab's packed operands take half of L2, but at least 32 chunks where all the partial sums do not
  // fit in L2 either, so that storing and reloading them stays a small part of each block's work. Partial sums wait
  // in float32 between slabs, loaded into and stored from the tiles exactly: the result is the same for every slab
  // size. Otherwise one slab.
  const bool a_columns = p.a_rs == 1 && p.a_cs != 1;
  const int64_t b_chunk_bytes = col_blocks * 2 * kTile * kChunk * int64_t(sizeof(uint16_t));
  const int64_t a_chunk_bytes = a_columns ? row_blocks * kBlock * kChunk * int64_t(sizeof(uint16_t)) : 0;
  const int64_t all_partial_bytes = row_blocks * col_blocks * kBlock * kBlock * int64_t(sizeof(float));
  const int64_t fitting_chunks = l2 / 2 / (b_chunk_bytes + a_chunk_bytes);
  const int64_t slab_floor = all_partial_bytes <= l2 / 2 ? 4 : 32;
  const bool slabs = (row_blocks <= 4 || a_columns) && std::max(fitting_chunks, slab_floor) < chunks;
  const int64_t slab_chunks = slabs ? std::max(fitting_chunks, slab_floor) : chunks;
  const int64_t k_pad = slab_chunks * kChunk;  // the packed slabs' row length
  // Packed operands in the calling thread's workspace (slots 0 and 1, the partial sums after A in slot 1; the
  // float32 GEMM does not run here) and each thread's A block in its slot 2: reused across calls, where fresh
  // buffers cost page faults every call (18 % of 1024^3).
  auto workspace = [](int64_t bytes, int slot) {
    void* ptr = thread_workspace(size_t(std::max<int64_t>(bytes, 1)), slot);
    if (!ptr) throw std::bad_alloc();
    return ptr;
  };
  uint16_t* const b_tiles = static_cast<uint16_t*>(workspace(slab_chunks * b_chunk_bytes, 0));
  const int64_t a_all_bytes = a_columns ? row_blocks * kBlock * k_pad * int64_t(sizeof(uint16_t)) : 0;
  const int64_t partial_rs = col_blocks * kBlock;
  const int64_t partial_bytes = slabs ? row_blocks * kBlock * partial_rs * int64_t(sizeof(float)) : 0;
  char* const slot1 = static_cast<char*>(workspace(a_all_bytes + partial_bytes, 1));
  uint16_t* const a_all = reinterpret_cast<uint16_t*>(slot1);
  float* const partial = reinterpret_cast<float*>(slot1 + a_all_bytes);  // a_all_bytes is a multiple of 64
  // Column panels of B that take half of L2, so that every row block reads them from there.
  const int64_t panel_blocks = std::max<int64_t>(1, l2 / 2 / (kBlock * k_pad * int64_t(sizeof(uint16_t))));
  // A row-major A (the forward's X, dX's dY) streams from memory once per panel. Its next row block is prefetched
  // into L2 a line a row per k chunk while the tiles run, and where it feeds at most two column blocks its whole
  // blocks are read in place rather than copied (Xeon, one thread, 45231 x 490 -> 8: 5.9 ms, prefetched 4.8, in place
  // too 3.2; torch 4.1). Against many column blocks the copy pays (4096 x 1024 -> 1024 in place: 1.15x slower).
  const bool a_by_rows = !a_columns && p.a_cs == 1;
  const bool a_in_place = a_by_rows && col_blocks <= 2;
  // Threads split the blocks of a panel in row-major order (by rows where there are enough, else by columns too):
  // each block of C is one thread's chain of tile products in k order, whatever the thread count.
  const int team = static_cast<int>(std::min<int64_t>(nthreads, row_blocks * col_blocks));
  for (int64_t c0 = 0; c0 < chunks; c0 += slab_chunks) {
    const int64_t k0 = c0 * kChunk, k_len = std::min(p.k - k0, k_pad), slab = (k_len + kChunk - 1) / kChunk;
    const bool first = c0 == 0, last = c0 + slab_chunks >= chunks;
    const uint16_t* const a_slab = p.a + k0 * p.a_cs;
    pack_b_vnni(k_len, p.n, p.b + k0 * p.b_rs, p.b_rs, p.b_cs, b_tiles, nthreads);
    if (a_columns) pack_a_columns(p.m, k_len, k_pad, a_slab, p.a_cs, a_all, nthreads);
    run_team(team, [&](int t, int size) {
      configure_tiles();
      uint16_t* const a_buffer =
          a_columns ? nullptr : static_cast<uint16_t*>(workspace(kBlock * k_pad * int64_t(sizeof(uint16_t)), 2));
      alignas(64) float sums[kBlock * kBlock];
      alignas(64) uint16_t a_tail[kBlock * kChunk];
      for (int64_t jc = 0; jc < col_blocks; jc += panel_blocks) {
        const int64_t panel = std::min(panel_blocks, col_blocks - jc), items = row_blocks * panel;
        const int64_t item_end = items * (t + 1) / size;
        int64_t packed_ib = -1;
        for (int64_t item = items * t / size; item < item_end; ++item) {
          const int64_t ib = item / panel, jb = jc + item % panel;
          const int64_t i0 = ib * kBlock, rows = std::min(kBlock, p.m - i0);
          // Whole blocks of an A read in place take their last, partial k chunk from a copy; others are packed.
          const bool in_place = a_in_place && rows == kBlock;
          const uint16_t* a_rows = a_columns ? a_all + ib * kBlock * k_pad
                                   : in_place ? a_slab + i0 * p.a_rs
                                              : a_buffer;
          const int64_t a_rs = in_place ? p.a_rs : k_pad;
          const int64_t direct = in_place ? k_len / kChunk : slab;
          if (ib != packed_ib) {
            if (in_place && direct < slab)
              pack_a_rows(i0, rows, k_len - direct * kChunk, kChunk, a_slab + direct * kChunk, p.a_rs, 1, a_tail);
            else if (!a_columns && !in_place)
              pack_a_rows(i0, rows, k_len, k_pad, a_slab, p.a_rs, p.a_cs, a_buffer);
            packed_ib = ib;
          }
          // The next row block's A is prefetched while its row's first block of this thread runs.
          const bool prefetch = a_by_rows && item % panel == 0 && (ib + 1) * panel < item_end;
          const char* next_a = prefetch ? reinterpret_cast<const char*>(a_slab + (i0 + kBlock) * p.a_rs) : nullptr;
          float* const partial_block = slabs ? partial + i0 * partial_rs + jb * kBlock : nullptr;
          const BlockSums c{first ? nullptr : partial_block, partial_rs, last ? sums : partial_block,
                            last ? kBlock : partial_rs};
          block_product(slab, a_rows, a_rs, direct, a_tail, b_tiles + jb * 2 * (kTile * kChunk),
                        col_blocks * 2 * (kTile * kChunk), c, next_a, p.a_rs * int64_t(sizeof(uint16_t)),
                        prefetch ? std::min(kBlock, p.m - i0 - kBlock) : 0);
          if (!last) continue;
          const int64_t j0 = jb * kBlock, cols = std::min(kBlock, p.n - j0);
          if (transposed)
            store_block(g, sums, true, bias, j0, cols, i0, rows);
          else
            store_block(g, sums, false, bias, i0, rows, j0, cols);
        }
      }
      _tile_release();
    });
  }
}

}  // namespace linneuron
