// FMA-peak and memory-bandwidth probes (see probes.h); small, self-timed, OpenMP-parallel.
#include "probes.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <new>

#include "microkernel.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace linneuron {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

template <typename T>
double fma_peak_gflops(int threads, double seconds) {
  const MicroKernel<T>& uk = active_micro_kernel<T>();
  threads = std::max(1, threads);
  // Calibrate the iteration count on one thread so the timed run lasts about `seconds`.
  T sink = T(0);
  int64_t iterations = 1 << 16;
  for (;;) {
    const double t0 = now_seconds();
    uk.fma_probe(iterations, &sink);
    const double dt = now_seconds() - t0;
    if (dt > seconds / 8 || iterations > (int64_t(1) << 40)) {
      iterations = std::max<int64_t>(1, static_cast<int64_t>(iterations * (seconds / std::max(dt, 1e-9))));
      break;
    }
    iterations *= 4;
  }
  // Best of several short trials: on a shared machine a trial only ever runs slower than the hardware allows.
  constexpr int kTrials = 30;
  iterations = std::max<int64_t>(1, iterations / kTrials);
  double best = 0.0;
  for (int trial = 0; trial < kTrials; ++trial) {
    int64_t flops = 0;
    const double t0 = now_seconds();
#pragma omp parallel num_threads(threads) reduction(+ : flops) if (threads > 1)
    {
      T local = T(0);
      flops += uk.fma_probe(iterations, &local);
      if (local == T(-12345)) sink = local;  // keeps the result observable
    }
    const double dt = now_seconds() - t0;
    best = std::max(best, double(flops) / dt / 1e9);
  }
  return best + (sink == T(-12345) ? 1e-30 : 0.0);
}

double memory_bandwidth_gbs(int threads, int64_t bytes, int repeats) {
  threads = std::max(1, threads);
  const int64_t n = std::max<int64_t>(1024, bytes / int64_t(sizeof(float)));
  std::unique_ptr<float[]> src(new (std::nothrow) float[n]), dst(new (std::nothrow) float[n]);
  if (!src || !dst) throw std::bad_alloc();
  // First touch from the same threads and split as the timed loop, so pages are mapped before timing.
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t i = 0; i < n; ++i) src[i] = float(i & 1023), dst[i] = 0.0f;
  double best = 0.0;
  for (int r = 0; r < std::max(1, repeats); ++r) {
    const double t0 = now_seconds();
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t i = 0; i < n; ++i) dst[i] = 2.0f * src[i];
    const double dt = now_seconds() - t0;
    best = std::max(best, 2.0 * double(n) * sizeof(float) / dt / 1e9);
  }
  if (dst[n / 2] < 0.0f) best = -best;  // never true; keeps the stores observable
  return best;
}

double memory_read_bandwidth_gbs(int threads, int64_t bytes, int repeats) {
  threads = std::max(1, threads);
  constexpr int kLanes = 32;  // independent partial sums, so the adds are not one serial chain
  const int64_t n = std::max<int64_t>(1024, bytes / int64_t(sizeof(float))) / kLanes * kLanes;
  std::unique_ptr<float[]> src(new (std::nothrow) float[n]);
  if (!src) throw std::bad_alloc();
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t i = 0; i < n; ++i) src[i] = float(i & 1023);
  double best = 0.0, total = 0.0;
  for (int r = 0; r < std::max(1, repeats); ++r) {
    const double t0 = now_seconds();
    double sum = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : sum) if (threads > 1)
    {
      float partial[kLanes] = {};
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) partial[l] += src[i + l];
      for (int l = 0; l < kLanes; ++l) sum += partial[l];
    }
    const double dt = now_seconds() - t0;
    total += sum;
    best = std::max(best, double(n) * sizeof(float) / dt / 1e9);
  }
  return total < 0.0 ? -best : best;  // the sums are never negative; using them keeps the loads observable
}

template double fma_peak_gflops<float>(int, double);
template double fma_peak_gflops<double>(int, double);

}  // namespace linneuron
