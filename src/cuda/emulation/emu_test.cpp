// Runs linneuron's CUDA kernels (host-emulated: one std::thread per CUDA thread, barriers for __syncthreads)
// against a float64 reference for many shapes, layouts, dtypes and flags.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common.cuh"
#include "kernels.h"

// Mirrors the ABI of kernels.h; the reference is float64 on the host, the bound the one tests/test_cuda.py uses.

using namespace linneuron::cuda;
static std::mt19937_64 rng(1);
static int failures = 0, checks = 0;

template <class T>
T from_d(double v);
template <>
float from_d<float>(double v) {
  return (float)v;
}
template <>
double from_d<double>(double v) {
  return v;
}
template <>
__half from_d<__half>(double v) {
  return __float2half_rn((float)v);
}
template <>
__nv_bfloat16 from_d<__nv_bfloat16>(double v) {
  return __float2bfloat16_rn((float)v);
}
double to_d(float v) { return v; }
double to_d(double v) { return v; }
double to_d(__half v) { return __half2float(v); }
double to_d(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
constexpr int code() {
  return std::is_same<T, float>::value    ? 0
         : std::is_same<T, double>::value ? 1
         : std::is_same<T, __half>::value ? 2
                                          : 3;
}
template <class T>
constexpr double eps() {
  return std::is_same<T, float>::value    ? 0x1p-24
         : std::is_same<T, double>::value ? 0x1p-53
         : std::is_same<T, __half>::value ? 0x1p-11
                                          : 0x1p-8;
}
template <class T>
constexpr double acc_eps() {
  return std::is_same<T, double>::value ? 0x1p-53 : 0x1p-24;
}

// A rows x cols operand in a buffer, laid out as `kind`.
template <class T>
struct Mat {
  std::vector<T> buf;
  int64_t off = 0, rs = 0, cs = 0, rows = 0, cols = 0;
  T* ptr() { return buf.data() + off; }
  T& at(int64_t i, int64_t j) { return buf[off + i * rs + j * cs]; }
};
template <class T>
Mat<T> make(const std::string& kind, int64_t r, int64_t c) {
  std::normal_distribution<double> nd;
  Mat<T> m;
  m.rows = r;
  m.cols = c;
  int64_t size;
  if (kind == "contiguous") {
    size = r * c;
    m.rs = c;
    m.cs = 1;
  } else if (kind == "transposed") {
    size = r * c;
    m.rs = 1;
    m.cs = r;
  } else if (kind == "misaligned") {
    size = r * c + 1;
    m.off = 1;
    m.rs = c;
    m.cs = 1;
  } else if (kind == "strided") {
    size = r * 2 * c;
    m.rs = 2 * c;
    m.cs = 2;
  } else if (kind == "broadcast") {
    size = c;
    m.rs = 0;
    m.cs = 1;
  } else
    throw std::runtime_error(kind);
  // Allocate with 16-byte alignment of element 0 (vector's allocator gives at least that for these sizes).
  m.buf.resize(size + 8);
  for (auto& v : m.buf) v = from_d<T>(nd(rng));
  return m;
}

template <class T>
void check_gemm(int64_t m, int64_t n, int64_t k, const std::string& ak, const std::string& wk, bool bias,
                bool accumulate, bool step, bool c_transposed) {
  auto A = make<T>(ak, m, k);
  auto W = make<T>(wk, n, k);  // B(k, n) = W(n, k)
  auto Bv = make<T>("strided", 1, n);
  auto C = make<T>(c_transposed ? "transposed" : "contiguous", m, n);
  std::vector<double> c0(m * n), ref(m * n), mag(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, g = 0;
      for (int64_t p = 0; p < k; ++p) {
        s += to_d(A.at(i, p)) * to_d(W.at(j, p));
        g += std::fabs(to_d(A.at(i, p)) * to_d(W.at(j, p)));
      }
      c0[i * n + j] = to_d(C.at(i, j));
      if (accumulate) {
        s += c0[i * n + j];
        g += std::fabs(c0[i * n + j]);
      }
      if (bias) {
        s += to_d(Bv.at(0, j));
        g += std::fabs(to_d(Bv.at(0, j)));
      }
      ref[i * n + j] = s;
      mag[i * n + j] = g;
    }
  GemmCall g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = A.ptr();
  g.a_rs = A.rs;
  g.a_cs = A.cs;
  g.b = W.ptr();
  g.b_rs = W.cs;
  g.b_cs = W.rs;
  g.c = C.ptr();
  g.c_rs = C.rs;
  g.c_cs = C.cs;
  g.bias = bias ? Bv.ptr() : nullptr;
  g.bias_stride = Bv.cs;
  g.accumulate = accumulate;
  g.step = step;
  gemm(code<T>(), g, nullptr);
  int bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double got = to_d(C.at(i, j)), want = ref[i * n + j];
      const double bound = 2 * eps<T>() * std::fabs(want) +
                           4 * std::sqrt(double(std::max<int64_t>(k, 1))) * acc_eps<T>() * mag[i * n + j] + 1e-30;
      bool ok;
      if (step)
        ok = std::fabs(want) <= bound ? (got == 0 || got == 1) : got == (want >= 0 ? 1.0 : 0.0);
      else
        ok = std::fabs(got - want) <= bound;
      if (!ok) {
        ++bad;
        worst = std::max(worst, std::fabs(got - want));
      }
    }
  ++checks;
  if (bad) {
    ++failures;
    std::printf("FAIL gemm dtype %d (%lld,%lld,%lld) A %s W %s bias %d acc %d step %d cT %d: %d bad, worst %.3g\n",
                code<T>(), (long long)m, (long long)n, (long long)k, ak.c_str(), wk.c_str(), bias, accumulate, step,
                c_transposed, bad, worst);
  }
}

template <class T>
void run_dtype(bool big) {
  const char* akinds[] = {"contiguous", "transposed", "misaligned", "strided", "broadcast"};
  const char* wkinds[] = {"contiguous", "transposed", "misaligned", "strided"};
  const int64_t shapes[][3] = {{1, 33, 5},     {3, 101, 5},    {8, 64, 40}, {9, 33, 17},
                               {130, 70, 200}, {136, 72, 264}, {5, 0, 3}};
  for (auto& s : shapes)
    for (auto ak : akinds)
      for (auto wk : wkinds) check_gemm<T>(s[0], s[2], s[1], ak, wk, true, false, false, false);
  // flags
  for (int f = 0; f < 8; ++f) {
    check_gemm<T>(70, 150, 33, "contiguous", "transposed", f & 1, f & 2, f & 4, true);
    check_gemm<T>(4, 50, 9, "contiguous", "contiguous", f & 1, f & 2, f & 4, f & 1);
  }
  // split-K (float/double/bf16-fallback go to the 64x64 kernel) and long K in general
  check_gemm<T>(40, 70, 3001, "contiguous", "contiguous", true, false, false, false);
  check_gemm<T>(6, 40, 3000, "transposed", "transposed", false, false, false, false);  // dW of a narrow layer
  check_gemm<T>(24, 100, 2100, "contiguous", "transposed", true, true, false, false);
  check_gemm<T>(64, 300, 2080, "transposed", "contiguous", true, false, true, true);  // split, M-major A, step
  if (big) {
    check_gemm<T>(1536, 1536, 24, "contiguous", "contiguous", true, false, false, false);  // 128x128 float32 tiles
    check_gemm<T>(1536, 1536, 20, "transposed", "transposed", true, false, true, false);
  }
  std::printf("dtype %d done: %d checks, %d failures so far\n", code<T>(), checks, failures);
}

template <class T>
void run_elementwise() {
  std::normal_distribution<double> nd;
  const int64_t n = 4099;
  std::vector<T> z(n + 8), gy(n + 8), out(n + 8), gz(n + 8);
  for (auto& v : z) v = from_d<T>(nd(rng) * 2);
  for (auto& v : gy) v = from_d<T>(nd(rng));
  z[0] = from_d<T>(-0.0);
  z[1] = from_d<T>(0.0);
  z[2] = from_d<T>(NAN);
  for (int64_t offset : {0, 1}) {
    step_forward(code<T>(), 1, n - offset, z.data() + offset, 0, 1, out.data() + offset, 0, 1, nullptr);
    int bad = 0;
    for (int64_t e = offset; e < n; ++e) {
      const double v = to_d(z[e]), got = to_d(out[e]);
      const bool ok = std::isnan(v) ? std::isnan(got) : got == (v >= 0 ? 1.0 : 0.0);
      bad += !ok;
    }
    // strided 2-D: rows 40 x cols 50 with in_rs 100, in_cs 2
    step_forward(code<T>(), 40, 50, z.data(), 100, 2, out.data(), 1, 40, nullptr);
    for (int64_t r = 0; r < 40; ++r)
      for (int64_t c = 0; c < 50; ++c) {
        const double v = to_d(z[r * 100 + c * 2]), got = to_d(out[r + c * 40]);
        bad += !(std::isnan(v) ? std::isnan(got) : got == (v >= 0 ? 1.0 : 0.0));
      }
    for (int code_s = 0; code_s < 4; ++code_s) {
      const double alpha = code_s == 2 ? 4.0 : code_s == 3 ? 2.0 : 1.0;
      step_backward(code<T>(), 1, n - offset - 3, z.data() + 3 + offset, 0, 1, gy.data() + 3 + offset, 0, 1,
                    gz.data() + 3 + offset, 0, 1, code_s, alpha, nullptr);
      for (int64_t e = 3 + offset; e < n; ++e) {
        const double v = to_d(z[e]), g = to_d(gy[e]);
        double d = 0;
        if (code_s == 1)
          d = std::fabs(alpha * v) <= 1;
        else if (code_s == 2) {
          double s = 1 / (1 + std::exp(-alpha * v));
          d = alpha * s * (1 - s);
        } else if (code_s == 3)
          d = (alpha / 2) / (1 + std::pow(M_PI / 2 * alpha * v, 2));
        const double want = g * d, got = to_d(gz[e]);
        bad += !(std::fabs(got - want) <= 8 * eps<T>() * (std::fabs(want) + alpha * std::fabs(g)) + 1e-300);
      }
    }
    ++checks;
    if (bad) {
      ++failures;
      std::printf("FAIL elementwise dtype %d offset %lld: %d bad\n", code<T>(), (long long)offset, bad);
    }
  }
  // bias_grad: (m, n) with strides, accumulate into strided db, and m = 0
  for (int64_t m : {0, 1, 37, 3001, 100003}) {
    const int64_t cols = m == 100003 ? 3 : 45;  // 3001 and 100003 rows split into row chunks
    std::vector<T> dy(m * cols * 2 + 8), db(2 * cols + 2);
    for (auto& v : dy) v = from_d<T>(nd(rng));
    for (auto& v : db) v = from_d<T>(nd(rng));
    std::vector<double> before(db.size());
    for (size_t i = 0; i < db.size(); ++i) before[i] = to_d(db[i]);
    for (bool acc : {false, true}) {
      for (size_t i = 0; i < db.size(); ++i) db[i] = from_d<T>(before[i]);
      bias_grad(code<T>(), m, cols, dy.data(), 2 * cols, 2, db.data(), 2, acc,
                nullptr);  // dY(i, j) = dy[i*2*cols + 2*j]
      int bad = 0;
      for (int64_t j = 0; j < cols; ++j) {
        double s = acc ? before[2 * j] : 0, g = std::fabs(s);
        for (int64_t i = 0; i < m; ++i) {
          s += to_d(dy[i * 2 * cols + 2 * j]);
          g += std::fabs(to_d(dy[i * 2 * cols + 2 * j]));
        }
        bad += !(std::fabs(to_d(db[2 * j]) - s) <=
                 2 * eps<T>() * std::fabs(s) + 4 * std::sqrt(double(m + 1)) * acc_eps<T>() * g);
        bad += to_d(db[2 * j + 1]) != before[2 * j + 1];
      }
      ++checks;
      if (bad) {
        ++failures;
        std::printf("FAIL bias_grad dtype %d m %lld acc %d: %d bad\n", code<T>(), (long long)m, acc, bad);
      }
    }
  }
}

int main(int argc, char** argv) {
  const bool big = argc > 1 && std::string(argv[1]) == "big";
  run_elementwise<float>();
  run_elementwise<double>();
  run_elementwise<__half>();
  run_elementwise<__nv_bfloat16>();
  std::printf("elementwise: %d checks, %d failures\n", checks, failures);
  run_dtype<float>(big);
  run_dtype<double>(false);
  run_dtype<__half>(big);
  run_dtype<__nv_bfloat16>(false);
  emu::cc_major = 7;  // bfloat16 on a GPU without bfloat16 tensor cores: the CUDA-core fallback
  run_dtype<__nv_bfloat16>(false);
  std::printf("%d checks, %d failures; %ld launches, %ld workspace allocations\n", checks, failures, emu::launches,
              emu::allocs);
  return failures != 0;
}
