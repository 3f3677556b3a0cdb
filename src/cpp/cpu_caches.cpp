// Cache-size detection (cpuid, then sysfs, then sysconf, then defaults) and the GEMM blocking derived from it.
#include "cpu_caches.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__unix__)
#include <unistd.h>
#endif

namespace linneuron {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// Walks the deterministic cache-parameter leaf (Intel 4, AMD 0x8000001D: the same register layout). Returns
// false if the leaf is absent. Sizes are ways x partitions x line x sets.
bool from_cpuid(CacheSizes& out) {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return false;
  const unsigned max_leaf = eax;
  char vendor[13] = {};
  std::memcpy(vendor, &ebx, 4), std::memcpy(vendor + 4, &edx, 4), std::memcpy(vendor + 8, &ecx, 4);
  unsigned leaf = 0;
  if (std::strcmp(vendor, "AuthenticAMD") == 0 || std::strcmp(vendor, "HygonGenuine") == 0) {
    // Needs the topology extensions bit (CPUID 0x80000001 ECX[22]).
    if (!__get_cpuid(0x80000001u, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 22))) return false;
    leaf = 0x8000001Du;
  } else if (max_leaf >= 4) {
    leaf = 4;
  } else {
    return false;
  }
  for (unsigned sub = 0; sub < 16; ++sub) {
    __cpuid_count(leaf, sub, eax, ebx, ecx, edx);
    const unsigned type = eax & 0x1f;  // 0 none, 1 data, 2 instruction, 3 unified
    if (type == 0) break;
    if (type == 2) continue;
    const unsigned level = (eax >> 5) & 0x7;
    const int64_t sharing = ((eax >> 14) & 0xfff) + 1;
    const int64_t line = (ebx & 0xfff) + 1, partitions = ((ebx >> 12) & 0x3ff) + 1, ways = ((ebx >> 22) & 0x3ff) + 1;
    const int64_t sets = int64_t(ecx) + 1;
    const int64_t size = line * partitions * ways * sets;
    if (level == 1) out.l1d = size;
    if (level == 2) out.l2 = size;
    if (level == 3) out.l3 = size, out.l3_sharing = sharing;
  }
  return out.l1d > 0 && out.l2 > 0;
}
#endif

int64_t parse_size(const std::string& text) {  // "32K", "512K", "32M", "1024"
  char* end = nullptr;
  int64_t v = std::strtoll(text.c_str(), &end, 10);
  if (end && (*end == 'K' || *end == 'k')) v *= 1024;
  if (end && (*end == 'M' || *end == 'm')) v *= 1024 * 1024;
  return v;
}

bool from_sysfs(CacheSizes& out) {
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(dir + "level"), type_file(dir + "type"), size_file(dir + "size");
    if (!level_file || !type_file || !size_file) break;
    int level = 0;
    std::string type, size;
    level_file >> level, type_file >> type, size_file >> size;
    if (type == "Instruction") continue;
    if (level == 1) out.l1d = parse_size(size);
    if (level == 2) out.l2 = parse_size(size);
    if (level == 3) out.l3 = parse_size(size);
  }
  return out.l1d > 0 && out.l2 > 0;
}

bool from_sysconf(CacheSizes& out) {
#if defined(_SC_LEVEL1_DCACHE_SIZE)
  out.l1d = sysconf(_SC_LEVEL1_DCACHE_SIZE);
  out.l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  out.l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  return out.l1d > 0 && out.l2 > 0;
}

CacheSizes detect() {
  CacheSizes c;
  if (const char* forced = std::getenv("LINNEURON_CACHES")) {
    long long l1 = 0, l2 = 0, l3 = 0;
    if (std::sscanf(forced, "%lld,%lld,%lld", &l1, &l2, &l3) == 3 && l1 > 0 && l2 > 0 && l3 >= 0) {
      c.l1d = l1, c.l2 = l2, c.l3 = l3, c.source = "LINNEURON_CACHES";
    }
  }
#if defined(__x86_64__) || defined(__i386__)
  if (c.source.empty() && from_cpuid(c)) c.source = "cpuid";
#endif
  if (c.source.empty() && (c = CacheSizes{}, from_sysfs(c))) c.source = "sysfs";
  if (c.source.empty() && (c = CacheSizes{}, from_sysconf(c))) c.source = "sysconf";
  if (c.source.empty()) c = CacheSizes{}, c.l1d = 32 << 10, c.l2 = 512 << 10, c.l3 = 2 << 20, c.source = "default";
  // Sanity: a hypervisor may report nonsense; keep every level within plausible bounds.
  c.l1d = std::clamp<int64_t>(c.l1d, 16 << 10, 256 << 10);
  c.l2 = std::clamp<int64_t>(c.l2, 128 << 10, 8 << 20);
  if (c.l3 < c.l2) c.l3 = 0;  // no L3 (or an unusable report): the L2 is the last level
  // cpuid counts logical processors; two SMT siblings share one core's L3 slice.
  const int64_t cores = std::max<int64_t>(1, c.l3_sharing / 2);
  c.l3_share = c.l3 > 0 ? std::max<int64_t>(c.l2, c.l3 / cores) : c.l2;
  return c;
}

int64_t round_down(int64_t a, int64_t b) { return std::max(b, a / b * b); }

}  // namespace

const CacheSizes& cpu_caches() {
  static const CacheSizes caches = detect();
  return caches;
}

Blocking derive_blocking(const CacheSizes& caches, int64_t mr, int64_t nr, int64_t elem_bytes) {
  Blocking b;
  b.kc = std::clamp<int64_t>(caches.l1d / 2 / (nr * elem_bytes), 64, 1024);
  b.kc = round_down(b.kc, 8);
  b.mc = std::clamp<int64_t>(caches.l2 / 2 / (b.kc * elem_bytes), mr, 4096);
  b.mc = round_down(b.mc, mr);
  b.nc = std::clamp<int64_t>(caches.l3_share / 2 / (b.kc * elem_bytes), 4 * nr, 8192);
  b.nc = round_down(b.nc, nr);
  // The A sliver takes half of L1 (the B slivers stream past it from L2), and kc stops at 512: a longer kc means
  // fewer passes over C, each of which reads and writes every C tile from L3, but kc 1024 (the A sliver alone in
  // half of L1) ran the AVX2 6 x 16 kernel at 85-90 % of the FMA peak on Zen 5, kc 512-552 at 90-92 %. On a Xeon
  // (48 KiB L1d, 2 MiB L2, L3 at a third of L2's bandwidth) float32 2048^3 ran at 81 % of peak with kc 272 (the A
  // and B slivers both in L1), 83-84 % with kc 512; Zen 5 measured kc 192-512 alike.
  const int64_t kc_a_half = caches.l1d / 2 / (mr * elem_bytes);
  b.panel_kc = round_down(std::clamp<int64_t>(std::min<int64_t>(kc_a_half, 512), 64, 1024), 8);
  b.panel_nc = round_down(std::clamp<int64_t>(caches.l2 / 2 / (b.panel_kc * elem_bytes), 2 * nr, 4096), nr);
  // The A panel takes a quarter of this core's L3 share, and at most twice its L2: a VM sees its L3 whole (a Xeon's
  // 480 MiB, shared by two vCPUs as far as cpuid tells) while the cores it does not see share it too, and a panel
  // spread over far slices comes back slowly. Xeon, float64 55447x369->267: 0.83x MKL with a 33 MB panel (16380
  // rows), 0.96-0.97x with 2-4 MB (1020-2040 rows); float32 1.06 -> 1.13-1.15x.
  const int64_t a_panel_bytes = std::min(caches.l3_share / 4, 2 * caches.l2);
  b.panel_mc = round_down(std::clamp<int64_t>(a_panel_bytes / (b.panel_kc * elem_bytes), 4 * mr, 16384), mr);
  auto forced = [](const char* name, int64_t& mc, int64_t& kc, int64_t& nc, int64_t mr, int64_t nr) {
    const char* text = std::getenv(name);
    long long m = 0, k = 0, n = 0;
    if (text && std::sscanf(text, "%lld,%lld,%lld", &m, &k, &n) == 3 && m > 0 && k > 0 && n > 0)
      mc = round_down(m, mr), kc = k, nc = round_down(n, nr);
  };
  forced("LINNEURON_BLOCKING", b.mc, b.kc, b.nc, mr, nr);
  forced("LINNEURON_PANEL_BLOCKING", b.panel_mc, b.panel_kc, b.panel_nc, mr, nr);
  return b;
}

}  // namespace linneuron
