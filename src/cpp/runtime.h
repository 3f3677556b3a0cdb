// Run-time settings of the CPU backend: the OpenMP thread count, the micro-kernel in use, workspace accounting.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace linneuron {

// Threads used by every kernel: the value given to set_num_threads, else OpenMP's current maximum for the calling
// thread (which torch.set_num_threads sets, so linneuron follows torch). Always 1 in the child of a fork(), where
// a multi-threaded OpenMP region would hang.
int num_threads();
void set_num_threads(int n);  // n >= 1; 0 restores the default (follow OpenMP/torch)
bool in_forked_child();
bool openmp_enabled();

// Instruction sets with a micro-kernel in this build ("portable" always; "avx2", "avx512" on x86-64).
std::vector<std::string> compiled_isas();
// Of those, the ones this CPU can run, best first.
std::vector<std::string> supported_isas();
// The micro-kernel family in use: the best supported one, or LINNEURON_ISA from the environment at load.
std::string active_isa();
// Switches the micro-kernel family; returns false (and changes nothing) if it is not compiled or not supported.
bool set_active_isa(const std::string& name);

// Bytes of packing workspace held now (summed over calling threads) and the most ever held at once.
std::size_t workspace_bytes();
std::size_t workspace_peak_bytes();

}  // namespace linneuron
