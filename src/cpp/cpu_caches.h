// Cache sizes of the CPU this code runs on, and the GEMM cache blocking derived from them per micro-kernel.
#pragma once

#include <cstdint>
#include <string>

namespace linneuron {

// Data cache sizes in bytes as seen by one core: its private L1d and L2, and its share of the L3 (the L3 divided
// by the cores that share it). `source` names where they came from: "cpuid" (AMD leaf 0x8000001D or Intel leaf 4),
// "sysfs", "sysconf" or "default" (32 KiB / 512 KiB / 2 MiB, typical of every x86-64 core since 2013).
struct CacheSizes {
  int64_t l1d = 0, l2 = 0, l3 = 0;  // l3 = whole shared cache
  int64_t l3_sharing = 1;           // logical processors that share the L3 (from cpuid; 1 if unknown)
  int64_t l3_share = 0;             // l3 per core that uses it, the budget for one thread's B panel share
  std::string source;
};

// Detected once (thread-safe static); LINNEURON_CACHES="l1d,l2,l3" in bytes overrides it (for tests and tuning).
const CacheSizes& cpu_caches();

// Two blockings for a register tile mr x nr of elements of `elem_bytes` bytes, from the cache sizes (the BLIS
// analytic model, Low et al., "Analytical modeling is enough for high-performance BLIS", TOMS 2016).
// The sliver order (mc / kc / nc), for products where one operand is read in place:
//   kc   the kc x nr B sliver takes about half of L1 (the other half holds the A sliver stream and C tile),
//   mc   the mc x kc A block takes about half of L2 (the B slivers stream through the rest),
//   nc   the kc x nc B panel takes about half of this core's L3 share, clamped to [4 nr, 8192].
// The panel order (panel_mc / panel_kc / panel_nc), for products with both operands packed (BLIS's own order):
//   panel_kc  the mr x kc A sliver (the broadcast operand) takes at most half of L1 and stays there across a B
//             block while the B slivers stream past it; at most 512,
//   panel_nc  the kc x nc B block takes half of L2; its slivers stream from there,
//   panel_mc  the mc x kc A panel takes a quarter of this core's L3 share (C and the B source share the rest), and
//             at most twice its L2.
// LINNEURON_BLOCKING="mc,kc,nc" and LINNEURON_PANEL_BLOCKING="mc,kc,nc" override them for every family
// (measurement, tuning and tests only).
struct Blocking {
  int64_t mc = 0, kc = 0, nc = 0;
  int64_t panel_mc = 0, panel_kc = 0, panel_nc = 0;
};
Blocking derive_blocking(const CacheSizes& caches, int64_t mr, int64_t nr, int64_t elem_bytes);

}  // namespace linneuron
