// Packing workspace: one growable, 64-byte aligned buffer per calling thread, reused across calls.
//
// The GEMM asks for its whole workspace (B panel plus one A block per OpenMP thread) at the start of a call, so
// the hot path allocates only when a call needs more than any earlier one on that thread did.
#pragma once

#include <cstddef>

namespace linneuron {

// Returns at least `bytes` bytes of 64-byte aligned scratch owned by the calling thread (valid until its next
// call on this thread). Returns nullptr if memory is exhausted.
void* thread_workspace(std::size_t bytes);

}  // namespace linneuron
