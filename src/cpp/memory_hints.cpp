// Hints to the operating system about large outputs (memory_hints.h).
#include "memory_hints.h"

#include <cstdint>
#include <initializer_list>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace linneuron {

void advise_huge_pages(void* p, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHuge = std::uintptr_t(2) << 20;
  const std::uintptr_t begin = (reinterpret_cast<std::uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p, (void)bytes;
#endif
}

bool pages_resident(const void* p, std::size_t bytes) {
#if defined(__linux__)
  if (bytes == 0) return false;
  static const std::uintptr_t page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const std::uintptr_t first = reinterpret_cast<std::uintptr_t>(p) & ~(page - 1);
  const std::uintptr_t last = (reinterpret_cast<std::uintptr_t>(p) + bytes - 1) & ~(page - 1);
  for (const std::uintptr_t at : {first, last}) {
    unsigned char resident = 0;
    if (mincore(reinterpret_cast<void*>(at), page, &resident) != 0 || !(resident & 1)) return false;
  }
  return true;
#else
  (void)p, (void)bytes;
  return false;
#endif
}

}  // namespace linneuron
