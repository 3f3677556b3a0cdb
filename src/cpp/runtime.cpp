// Run-time state of the CPU backend: thread count, micro-kernel selection (CPU detection, LINNEURON_ISA), workspace.
#include "runtime.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <utility>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#include "cpu_caches.h"
#include "microkernel.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace linneuron {
namespace {

// 0 means "not set": follow OpenMP's current maximum for the calling thread, which is the value torch.set_num_threads
// writes (torch and linneuron share one libgomp in a process), so the two libraries never oversubscribe the cores.
std::atomic<int> g_thread_setting{0};

// Set in the child of a fork(). GNU libgomp is not fork-safe: a child that enters a parallel region with more than one
// thread waits forever for pool threads that were not copied by fork(). One-thread regions never touch the pool.
std::atomic<bool> g_forked_child{false};

#if defined(__unix__) || defined(__APPLE__)
void mark_forked_child() { g_forked_child.store(true, std::memory_order_relaxed); }
// Registered when the module is loaded, before any parallel region of ours can run.
[[maybe_unused]] const int g_atfork_registered = pthread_atfork(nullptr, nullptr, &mark_forked_child);
#endif

int openmp_default_threads() {
#if defined(_OPENMP)
  return std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

bool cpu_supports(const std::string& isa) {
  if (isa == "portable") return true;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == "avx512") return __builtin_cpu_supports("avx512f");
#endif
  return false;
}

std::string initial_isa() {
  const std::vector<std::string> usable = supported_isas();
  if (const char* forced = std::getenv("LINNEURON_ISA")) {
    // An unusable request falls back to the best family; linneuron.info() shows which one is really in use.
    if (std::find(usable.begin(), usable.end(), std::string(forced)) != usable.end()) return forced;
  }
  return usable.front();
}

const std::vector<std::string>& compiled_isa_table() {
  static const std::vector<std::string> table = compiled_isas();
  return table;
}

std::atomic<int>& active_index() {
  // Index into compiled_isas(); an atomic so that Python threads may switch and read it concurrently.
  static std::atomic<int> index{[] {
    const std::vector<std::string>& all = compiled_isa_table();
    return static_cast<int>(std::find(all.begin(), all.end(), initial_isa()) - all.begin());
  }()};
  return index;
}

}  // namespace

int num_threads() {
  if (g_forked_child.load(std::memory_order_relaxed)) return 1;
  const int explicit_setting = g_thread_setting.load(std::memory_order_relaxed);
  return explicit_setting > 0 ? explicit_setting : openmp_default_threads();
}
void set_num_threads(int n) { g_thread_setting.store(std::max(0, n), std::memory_order_relaxed); }
bool in_forked_child() { return g_forked_child.load(std::memory_order_relaxed); }

bool openmp_enabled() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

std::vector<std::string> compiled_isas() {
  std::vector<std::string> isas;
#if defined(LINNEURON_HAVE_AVX512)
  isas.push_back("avx512");
#endif
#if defined(LINNEURON_HAVE_AVX2)
  isas.push_back("avx2");
#endif
  isas.push_back("portable");
  return isas;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> isas;
  for (const std::string& isa : compiled_isas())
    if (cpu_supports(isa)) isas.push_back(isa);
  return isas;
}

std::string active_isa() { return compiled_isa_table()[active_index().load()]; }

bool set_active_isa(const std::string& name) {
  const std::vector<std::string>& all = compiled_isa_table();
  const auto it = std::find(all.begin(), all.end(), name);
  if (it == all.end() || !cpu_supports(name)) return false;
  active_index().store(static_cast<int>(it - all.begin()));
  return true;
}

template <typename T>
const MicroKernel<T>& active_micro_kernel() {
  // Called on every GEMM: compare table indices, not strings.
  static const std::vector<const MicroKernel<T>*> kernels = [] {
    std::vector<const MicroKernel<T>*> table;
    for (const std::string& isa : compiled_isa_table()) {
#if defined(LINNEURON_HAVE_AVX512)
      if (isa == "avx512") table.push_back(&avx512_micro_kernel<T>());
#endif
#if defined(LINNEURON_HAVE_AVX2)
      if (isa == "avx2") table.push_back(&avx2_micro_kernel<T>());
#endif
      if (isa == "portable") table.push_back(&portable_micro_kernel<T>());
    }
    return table;
  }();
  return *kernels[active_index().load(std::memory_order_relaxed)];
}

template <typename T>
const Blocking& kernel_blocking(const MicroKernel<T>& uk) {
  // One entry per compiled family, filled on first use; the lookup is a pointer comparison.
  static const std::vector<std::pair<const MicroKernel<T>*, Blocking>> table = [] {
    std::vector<std::pair<const MicroKernel<T>*, Blocking>> t;
    auto add = [&t](const MicroKernel<T>& k) {
      t.emplace_back(&k, derive_blocking(cpu_caches(), k.mr, k.nr, int64_t(sizeof(T))));
    };
#if defined(LINNEURON_HAVE_AVX512)
    add(avx512_micro_kernel<T>());
#endif
#if defined(LINNEURON_HAVE_AVX2)
    add(avx2_micro_kernel<T>());
#endif
    add(portable_micro_kernel<T>());
    return t;
  }();
  for (const auto& entry : table)
    if (entry.first == &uk) return entry.second;
  return table.back().second;
}

template const Blocking& kernel_blocking<float>(const MicroKernel<float>&);
template const Blocking& kernel_blocking<double>(const MicroKernel<double>&);
template const MicroKernel<float>& active_micro_kernel<float>();
template const MicroKernel<double>& active_micro_kernel<double>();

}  // namespace linneuron
