// Packing workspace: one growable, 64-byte aligned buffer per calling thread, reused across calls.
//
// The GEMM asks for its whole workspace (B panel plus one A block per OpenMP thread) at the start of a call, so
// the hot path allocates only when a call needs more than any earlier one on that thread did.
#pragma once

#include <cstddef>

namespace linneuron {

// Returns at least `bytes` bytes of 64-byte aligned scratch owned by the calling thread (valid until its next
// call on this thread with the same slot). Returns nullptr if memory is exhausted. Slot 0 is the GEMM's packing
// space; slot 1 holds a result that a product computes in another layout (Cᵀ) while slot 0 packs its operands;
// slot 2 the partial sums of a product whose k is split into parts (each part a product of its own). The bfloat16
// AMX path (gemm_amx.cpp), which runs no float32 GEMM, takes all three for its packed operands and partial sums.
constexpr int kWorkspaceSlots = 3;
void* thread_workspace(std::size_t bytes, int slot = 0);

}  // namespace linneuron
