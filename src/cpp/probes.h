// Machine probes for the benchmark's "% of peak" column: FMA throughput and memory bandwidth, measured here.
#pragma once

#include <cstdint>

namespace linneuron {

// GFLOP/s of the active micro-kernel family's FMA loop on `threads` threads: the best of 30 short trials that take
// about `seconds` seconds together.
template <typename T>
double fma_peak_gflops(int threads, double seconds);

// GB/s of a streaming copy-scale (dst = 2 * src, float32) over `bytes`-sized buffers on `threads` threads,
// counting bytes read plus bytes written, best of `repeats` passes (the buffers are touched before timing).
double memory_bandwidth_gbs(int threads, int64_t bytes, int repeats);

// GB/s of a streaming read (a float32 sum) over one `bytes`-sized buffer on `threads` threads, best of `repeats`:
// the peer of products that only read their large operand (a matrix-vector product reads W once and writes a few
// outputs). The copy probe above is not: a copy's stores also pull every line in first (write-allocate), so its
// read + write figure sits well below what a read-only stream reaches.
double memory_read_bandwidth_gbs(int threads, int64_t bytes, int repeats);

}  // namespace linneuron
