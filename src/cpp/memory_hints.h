// Hints to the operating system about large outputs: transparent huge pages for a buffer about to be written.
#pragma once

#include <cstddef>

namespace linneuron {

// Outputs from this size on get huge-page advice before they are written (and the step's bypass the caches).
constexpr std::size_t kLargeOutputBytes = std::size_t(8) << 20;

// Asks the kernel to back [p, p + bytes) with 2 MiB pages where it can (whole aligned 2 MiB blocks only), so that a
// freshly allocated output costs one page fault per 2 MiB instead of one per 4 KiB (a 64 MiB output: 32 faults
// instead of 16384, which took longer than the step writing it). Purely advisory: memory already mapped keeps its
// pages, and without transparent huge pages (or off Linux) it does nothing.
void advise_huge_pages(void* p, std::size_t bytes);

// Whether the first and last pages of [p, p + bytes) are in memory (mincore). A fresh output's are not: each page
// is zeroed by the kernel as it faults in, which leaves it in the cache, where plain stores beat streaming ones.
// False where it cannot tell (off Linux, or the call fails).
bool pages_resident(const void* p, std::size_t bytes);

}  // namespace linneuron
