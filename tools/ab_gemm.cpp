// In-process A/B of the GEMM: a baseline build of the CPU kernels (its symbols renamed from namespace linneuron to
// linneurob by tools/ab_gemm.sh) against the working tree's, linked into one program, timed interleaved.
//
// Each argument is one product "m,k,n[,dtype[,layout[,threads]]]": dtype f (float32) or d (float64); layout 0 the
// forward X Wᵀ (A row-major, B = Wᵀ), 1 a row-major B (dX = dY W), 3 the weight gradient dYᵀ X (A column-major,
// B row-major). Per product: 15 rounds of both sides in alternating order, each sample about 2 ms and normalised by
// an FMA probe run just before it (a shared host changes its clock from second to second); prints both medians,
// their ratio and the largest difference between the two results.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "probes.h"
#include "runtime.h"

namespace linneurob {  // the baseline: the same declarations under the renamed namespace
template <typename T>
struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const T* a = nullptr;
  int64_t a_rs = 0, a_cs = 0;
  const T* b = nullptr;
  int64_t b_rs = 0, b_cs = 0;
  T* c = nullptr;
  int64_t c_rs = 0, c_cs = 0;
  const T* bias = nullptr;
  int64_t bias_stride = 1;
  bool accumulate = false;
  bool step = false;
};
template <typename T>
void gemm(const GemmArgs<T>& args);
void set_num_threads(int n);
}  // namespace linneurob

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename T>
void compare(int64_t m, int64_t k, int64_t n, int layout, int threads) {
  std::vector<T> a(m * k), b(k * n), c_new(m * n), c_base(m * n);
  for (auto& x : a) x = T(std::rand() % 1000) / T(1000) - T(0.5);
  for (auto& x : b) x = T(std::rand() % 1000) / T(1000) - T(0.5);
  linneuron::GemmArgs<T> g;
  g.m = m, g.n = n, g.k = k, g.a = a.data(), g.b = b.data(), g.c = c_new.data(), g.c_rs = n, g.c_cs = 1;
  g.a_rs = layout == 3 ? 1 : k, g.a_cs = layout == 3 ? m : 1;
  g.b_rs = layout == 0 ? 1 : n, g.b_cs = layout == 0 ? k : 1;
  static_assert(sizeof(linneurob::GemmArgs<T>) == sizeof(linneuron::GemmArgs<T>), "the two builds disagree");
  linneurob::GemmArgs<T> h;
  std::memcpy(static_cast<void*>(&h), &g, sizeof g);
  h.c = c_base.data();
  linneuron::set_num_threads(threads);
  linneurob::set_num_threads(threads);
  linneuron::gemm(g), linneurob::gemm(h);
  const double t0 = now();
  linneuron::gemm(g);
  const int inner = std::max(1, int(2e-3 / std::max(now() - t0, 1e-9)));
  std::vector<double> t_new, t_base, r_new, r_base;
  for (int round = 0; round < 15; ++round)
    for (int side = 0; side < 2; ++side) {
      const bool base = (side == 0) == (round % 2 == 0);
      const double peak = linneuron::fma_peak_gflops<T>(threads, 0.0005);
      const double start = now();
      for (int i = 0; i < inner; ++i) base ? linneurob::gemm(h) : linneuron::gemm(g);
      const double t = (now() - start) / inner;
      (base ? t_base : t_new).push_back(t);
      (base ? r_base : r_new).push_back(2.0 * m * n * k / t / 1e9 / peak);
    }
  double diff = 0;
  for (int64_t i = 0; i < m * n; ++i) diff = std::max(diff, double(std::abs(c_new[i] - c_base[i])));
  const double flops = 2.0 * m * n * k, tb = median(t_base), tn = median(t_new);
  std::printf("%s %6lldx%5lldx%5lld L%d t%d  base %7.1f GFLOP/s (%4.1f %% of peak)  new %7.1f (%4.1f %%)  new/base %.3f"
              "  max diff %.1e\n",
              sizeof(T) == 4 ? "f32" : "f64", (long long)m, (long long)k, (long long)n, layout, threads,
              flops / tb / 1e9, 100 * median(r_base), flops / tn / 1e9, 100 * median(r_new), tb / tn, diff);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s m,k,n[,f|d[,layout[,threads]]] ...\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; ++i) {
    long long m = 0, k = 0, n = 0;
    char dtype = 'f';
    int layout = 0, threads = 1;
    if (std::sscanf(argv[i], "%lld,%lld,%lld,%c,%d,%d", &m, &k, &n, &dtype, &layout, &threads) < 3 || m < 1 ||
        k < 1 || n < 1 || (layout != 0 && layout != 1 && layout != 3) || threads < 1) {
      std::fprintf(stderr, "ab_gemm: cannot read the product %s\n", argv[i]);
      return 2;
    }
    if (dtype == 'd')
      compare<double>(m, k, n, layout, threads);
    else
      compare<float>(m, k, n, layout, threads);
  }
  return 0;
}
