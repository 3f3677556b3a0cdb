// pybind11 module linneuron._core: thin bindings over the CPU kernels, on raw pointers, sizes and element strides.
//
// The Python layer validates shapes, dtypes and memory before calling in; these bindings only check what would
// otherwise crash (negative sizes, null pointers) and release the GIL around every kernel.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

#include "cpu_caches.h"
#include "fastpath.h"
#include "gemm.h"
#include "lowp.h"
#include "microkernel.h"
#include "runtime.h"
#include "workspace.h"
#include "probes.h"  // used only by the probe block at the end of the module

namespace py = pybind11;
using linneuron::Surrogate;

namespace {

// Element types by code; the codes are part of the binding ABI (python/linneuron/_dtypes.py).
enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

template <typename T>
const T* cptr(std::uintptr_t p) {
  return reinterpret_cast<const T*>(p);
}
template <typename T>
T* mptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(what);
}

void check_dtype(int dtype) { require(dtype >= kFloat32 && dtype <= kBFloat16, "_core: unknown dtype code"); }

bool is_lowp(int dtype) { return dtype == kFloat16 || dtype == kBFloat16; }
linneuron::LowpType lowp_type(int dtype) {
  return dtype == kBFloat16 ? linneuron::LowpType::BFloat16 : linneuron::LowpType::Float16;
}
std::size_t element_size(int dtype) {
  return dtype == kFloat32 ? sizeof(float) : dtype == kFloat64 ? sizeof(double) : sizeof(uint16_t);
}

// Element-aligned data is a precondition of the kernels: a float read from an address that is not a multiple of
// 4 is undefined behaviour, and loops the compiler vectorised with alignment peeling can fault on it. Callers copy
// such buffers first (numpy.py does; torch.from_numpy can produce them); this turns a miss into an error.
void require_aligned(int dtype, const char* fn, std::initializer_list<std::pair<const char*, std::uintptr_t>> ptrs) {
  const std::uintptr_t size = element_size(dtype);
  for (const auto& [name, p] : ptrs)
    if (p % size != 0)
      throw std::invalid_argument(std::string(fn) + ": " + name + " is not aligned to its " + std::to_string(size) +
                                  "-byte elements (address " + std::to_string(p) + "); pass an aligned copy");
}

template <typename T>
linneuron::GemmArgs<T> make_gemm_args(int64_t m, int64_t n, int64_t k, std::uintptr_t a, int64_t a_rs, int64_t a_cs,
                                      std::uintptr_t b, int64_t b_rs, int64_t b_cs, std::uintptr_t c, int64_t c_rs,
                                      int64_t c_cs, std::uintptr_t bias, int64_t bias_stride, bool accumulate,
                                      bool step) {
  linneuron::GemmArgs<T> g;
  g.m = m, g.n = n, g.k = k;
  g.a = cptr<T>(a), g.a_rs = a_rs, g.a_cs = a_cs;
  g.b = cptr<T>(b), g.b_rs = b_rs, g.b_cs = b_cs;
  g.c = mptr<T>(c), g.c_rs = c_rs, g.c_cs = c_cs;
  g.bias = bias ? cptr<T>(bias) : nullptr, g.bias_stride = bias_stride;
  g.accumulate = accumulate, g.step = step;
  return g;
}

void gemm(int dtype, int64_t m, int64_t n, int64_t k, std::uintptr_t a, int64_t a_rs, int64_t a_cs,
          std::uintptr_t b, int64_t b_rs, int64_t b_cs, std::uintptr_t c, int64_t c_rs, int64_t c_cs,
          std::uintptr_t bias, int64_t bias_stride, bool accumulate, bool step) {
  check_dtype(dtype);
  require(m >= 0 && n >= 0 && k >= 0, "_core.gemm: negative size");
  if (m == 0 || n == 0) return;
  require(c != 0, "_core.gemm: null output");
  require(k == 0 || (a != 0 && b != 0), "_core.gemm: null operand");
  require_aligned(dtype, "_core.gemm", {{"a", k ? a : 0}, {"b", k ? b : 0}, {"c", c}, {"bias", bias}});
  py::gil_scoped_release release;
  if (is_lowp(dtype)) {
    linneuron::LowpGemmArgs g;
    g.type = lowp_type(dtype);
    g.m = m, g.n = n, g.k = k;
    g.a = cptr<uint16_t>(a), g.a_rs = a_rs, g.a_cs = a_cs;
    g.b = cptr<uint16_t>(b), g.b_rs = b_rs, g.b_cs = b_cs;
    g.c = mptr<uint16_t>(c), g.c_rs = c_rs, g.c_cs = c_cs;
    g.bias = bias ? cptr<uint16_t>(bias) : nullptr, g.bias_stride = bias_stride;
    g.accumulate = accumulate, g.step = step;
    linneuron::gemm_lowp(g);
  } else if (dtype == kFloat32)
    linneuron::gemm(make_gemm_args<float>(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, c_cs, bias, bias_stride,
                                          accumulate, step));
  else
    linneuron::gemm(make_gemm_args<double>(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, c_cs, bias, bias_stride,
                                           accumulate, step));
}

std::string gemm_plan(int dtype, int64_t m, int64_t n, int64_t k, int64_t a_rs, int64_t a_cs, int64_t b_rs,
                      int64_t b_cs, int64_t c_rs, int64_t c_cs) {
  check_dtype(dtype);
  require(m >= 0 && n >= 0 && k >= 0, "_core.gemm_plan: negative size");
  require(!is_lowp(dtype), "_core.gemm_plan: float32 or float64 only (16-bit products run through float32)");
  if (dtype == kFloat32)
    return linneuron::gemm_plan(make_gemm_args<float>(m, n, k, 0, a_rs, a_cs, 0, b_rs, b_cs, 0, c_rs, c_cs, 0, 1,
                                                      false, false));
  return linneuron::gemm_plan(make_gemm_args<double>(m, n, k, 0, a_rs, a_cs, 0, b_rs, b_cs, 0, c_rs, c_cs, 0, 1,
                                                     false, false));
}

void step_forward(int dtype, int64_t rows, int64_t cols, std::uintptr_t in, int64_t in_rs, int64_t in_cs,
                  std::uintptr_t out, int64_t out_rs, int64_t out_cs) {
  check_dtype(dtype);
  require(rows >= 0 && cols >= 0, "_core.step: negative size");
  if (rows == 0 || cols == 0) return;
  require(in != 0 && out != 0, "_core.step: null pointer");
  require_aligned(dtype, "_core.step_forward", {{"src", in}, {"out", out}});
  py::gil_scoped_release release;
  if (is_lowp(dtype))
    linneuron::step_forward_lowp(lowp_type(dtype), rows, cols, cptr<uint16_t>(in), in_rs, in_cs, mptr<uint16_t>(out),
                                 out_rs, out_cs);
  else if (dtype == kFloat32)
    linneuron::step_forward(rows, cols, cptr<float>(in), in_rs, in_cs, mptr<float>(out), out_rs, out_cs);
  else
    linneuron::step_forward(rows, cols, cptr<double>(in), in_rs, in_cs, mptr<double>(out), out_rs, out_cs);
}

void step_backward(int dtype, int64_t rows, int64_t cols, std::uintptr_t z, int64_t z_rs, int64_t z_cs,
                   std::uintptr_t gy, int64_t gy_rs, int64_t gy_cs, std::uintptr_t gz, int64_t gz_rs, int64_t gz_cs,
                   int surrogate, double alpha) {
  check_dtype(dtype);
  require(rows >= 0 && cols >= 0, "_core.step_backward: negative size");
  require(surrogate >= 0 && surrogate <= 3, "_core.step_backward: unknown surrogate code");
  if (rows == 0 || cols == 0) return;
  require(z != 0 && gy != 0 && gz != 0, "_core.step_backward: null pointer");
  require_aligned(dtype, "_core.step_backward", {{"z", z}, {"grad_y", gy}, {"grad_z", gz}});
  const auto kind = static_cast<Surrogate>(surrogate);
  py::gil_scoped_release release;
  if (is_lowp(dtype))
    linneuron::step_backward_lowp(lowp_type(dtype), rows, cols, cptr<uint16_t>(z), z_rs, z_cs, cptr<uint16_t>(gy),
                                  gy_rs, gy_cs, mptr<uint16_t>(gz), gz_rs, gz_cs, kind, static_cast<float>(alpha));
  else if (dtype == kFloat32)
    linneuron::step_backward(rows, cols, cptr<float>(z), z_rs, z_cs, cptr<float>(gy), gy_rs, gy_cs, mptr<float>(gz),
                             gz_rs, gz_cs, kind, static_cast<float>(alpha));
  else
    linneuron::step_backward(rows, cols, cptr<double>(z), z_rs, z_cs, cptr<double>(gy), gy_rs, gy_cs,
                             mptr<double>(gz), gz_rs, gz_cs, kind, alpha);
}

void bias_grad(int dtype, int64_t m, int64_t n, std::uintptr_t dy, int64_t dy_rs, int64_t dy_cs, std::uintptr_t db,
               int64_t db_stride, bool accumulate) {
  check_dtype(dtype);
  require(m >= 0 && n >= 0, "_core.bias_grad: negative size");
  if (n == 0) return;
  require(db != 0 && (m == 0 || dy != 0), "_core.bias_grad: null pointer");
  require_aligned(dtype, "_core.bias_grad", {{"dy", m ? dy : 0}, {"db", db}});
  py::gil_scoped_release release;
  if (is_lowp(dtype))
    linneuron::bias_grad_lowp(lowp_type(dtype), m, n, cptr<uint16_t>(dy), dy_rs, dy_cs, mptr<uint16_t>(db), db_stride,
                              accumulate);
  else if (dtype == kFloat32)
    linneuron::bias_grad(m, n, cptr<float>(dy), dy_rs, dy_cs, mptr<float>(db), db_stride, accumulate);
  else
    linneuron::bias_grad(m, n, cptr<double>(dy), dy_rs, dy_cs, mptr<double>(db), db_stride, accumulate);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "linneuron CPU kernels (C++/OpenMP) on raw pointers; use linneuron.numpy or linneuron.functional.";
  m.attr("FLOAT32") = static_cast<int>(kFloat32);
  m.attr("FLOAT64") = static_cast<int>(kFloat64);
  m.attr("FLOAT16") = static_cast<int>(kFloat16);
  m.attr("BFLOAT16") = static_cast<int>(kBFloat16);

  m.def("gemm", &gemm, "C = [C +] A B [+ bias] [then step]; see src/cpp/gemm.h", py::arg("dtype"), py::arg("m"),
        py::arg("n"), py::arg("k"), py::arg("a"), py::arg("a_rs"), py::arg("a_cs"), py::arg("b"), py::arg("b_rs"),
        py::arg("b_cs"), py::arg("c"), py::arg("c_rs"), py::arg("c_cs"), py::arg("bias"), py::arg("bias_stride"),
        py::arg("accumulate"), py::arg("step"));
  m.def("gemm_plan", &gemm_plan, "the path gemm takes for these sizes and strides: 'dot', 'blocked', ...",
        py::arg("dtype"), py::arg("m"), py::arg("n"), py::arg("k"), py::arg("a_rs"), py::arg("a_cs"),
        py::arg("b_rs"), py::arg("b_cs"), py::arg("c_rs"), py::arg("c_cs"));
  m.def("step_forward", &step_forward, "out = H(in) over a strided rows x cols grid", py::arg("dtype"),
        py::arg("rows"), py::arg("cols"), py::arg("src"), py::arg("src_rs"), py::arg("src_cs"), py::arg("out"),
        py::arg("out_rs"), py::arg("out_cs"));
  m.def("step_backward", &step_backward, "grad_z = grad_y * surrogate'(z) over a strided rows x cols grid",
        py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("z"), py::arg("z_rs"), py::arg("z_cs"),
        py::arg("grad_y"), py::arg("gy_rs"), py::arg("gy_cs"), py::arg("grad_z"), py::arg("gz_rs"),
        py::arg("gz_cs"), py::arg("surrogate"), py::arg("alpha"));
  m.def("bias_grad", &bias_grad, "db = [db +] column sums of dY", py::arg("dtype"), py::arg("m"), py::arg("n"),
        py::arg("dy"), py::arg("dy_rs"), py::arg("dy_cs"), py::arg("db"), py::arg("db_stride"),
        py::arg("accumulate"));

  // The eager fast path of linneuron.functional (src/cpp/fastpath.cpp): plain CPython entries, no pybind11 casts.
  if (!linneuron::add_fastpath(m.ptr())) throw py::error_already_set();

  m.def("get_num_threads", &linneuron::num_threads);
  m.def("set_num_threads", [](int n) {
    // 0 restores the default: follow OpenMP's (and so torch's) thread count.
    if (n < 0) throw std::invalid_argument("set_num_threads(): n must be >= 0, got " + std::to_string(n));
    linneuron::set_num_threads(n);
  });
  m.def("in_forked_child", &linneuron::in_forked_child,
        "True in the child of a fork(): kernels then run on one thread, as libgomp cannot start threads there");
  m.def("openmp_enabled", &linneuron::openmp_enabled);
  m.def("compiled_isas", &linneuron::compiled_isas);
  m.def("supported_isas", &linneuron::supported_isas);
  m.def("active_isa", &linneuron::active_isa);
  m.def("set_active_isa", &linneuron::set_active_isa,
        "Switch the micro-kernel family; returns False if it is not compiled or this CPU lacks it");
  m.def(
      "lowp_paths",
      []() {
        return py::dict(py::arg("bfloat16") = linneuron::lowp_path(linneuron::LowpType::BFloat16),
                        py::arg("float16") = linneuron::lowp_path(linneuron::LowpType::Float16));
      },
      "How bfloat16/float16 run on this CPU: the conversion kernels in use (products run on the float32 GEMM)");
  m.def("workspace_bytes", &linneuron::workspace_bytes);
  m.def("workspace_peak_bytes", &linneuron::workspace_peak_bytes);

  // ---- Machine probes for `linneuron bench` (issue 4, simd branch) -----------------------------------------
  m.def(
      "fma_peak_gflops",
      [](int dtype, int threads, double seconds) {
        require(dtype == kFloat32 || dtype == kFloat64, "_core.fma_peak_gflops: dtype must be FLOAT32 or FLOAT64");
        require(threads >= 1 && seconds > 0, "_core.fma_peak_gflops: threads must be >= 1 and seconds > 0");
        py::gil_scoped_release release;
        return dtype == kFloat32 ? linneuron::fma_peak_gflops<float>(threads, seconds)
                                 : linneuron::fma_peak_gflops<double>(threads, seconds);
      },
      "GFLOP/s of the active micro-kernel family's FMA loop on `threads` threads (about `seconds` long)",
      py::arg("dtype"), py::arg("threads"), py::arg("seconds"));
  m.def(
      "memory_bandwidth_gbs",
      [](int threads, int64_t bytes, int repeats) {
        require(threads >= 1 && bytes > 0 && repeats >= 1, "_core.memory_bandwidth_gbs: arguments must be >= 1");
        py::gil_scoped_release release;
        return linneuron::memory_bandwidth_gbs(threads, bytes, repeats);
      },
      "GB/s (read + written) of a streaming float32 copy-scale over two `bytes`-sized buffers, best of `repeats`",
      py::arg("threads"), py::arg("bytes"), py::arg("repeats"));
  m.def(
      "memory_read_bandwidth_gbs",
      [](int threads, int64_t bytes, int repeats) {
        require(threads >= 1 && bytes > 0 && repeats >= 1,
                "_core.memory_read_bandwidth_gbs: arguments must be >= 1");
        py::gil_scoped_release release;
        return linneuron::memory_read_bandwidth_gbs(threads, bytes, repeats);
      },
      "GB/s read by a streaming float32 sum over one `bytes`-sized buffer, best of `repeats`",
      py::arg("threads"), py::arg("bytes"), py::arg("repeats"));
  m.def(
      "cpu_caches",
      [] {
        const linneuron::CacheSizes& c = linneuron::cpu_caches();
        py::dict d;
        d["l1d"] = c.l1d, d["l2"] = c.l2, d["l3"] = c.l3, d["l3_sharing"] = c.l3_sharing;
        d["l3_share"] = c.l3_share, d["source"] = c.source;
        return d;
      },
      "Cache sizes (bytes) the GEMM blocking is derived from: per-core l1d, l2, shared l3 and this core's share");
  m.def(
      "gemm_blocking",
      [] {
        // Register tile and cache blocking of the active family, per dtype, as the GEMM driver uses them.
        py::dict d;
        auto entry = [](const auto& uk) {
          const linneuron::Blocking& b = linneuron::kernel_blocking(uk);
          py::dict e;
          e["mr"] = uk.mr, e["nr"] = uk.nr, e["mc"] = b.mc, e["kc"] = b.kc, e["nc"] = b.nc;
          e["panel_mc"] = b.panel_mc, e["panel_kc"] = b.panel_kc, e["panel_nc"] = b.panel_nc;
          return e;
        };
        d["float32"] = entry(linneuron::active_micro_kernel<float>());
        d["float64"] = entry(linneuron::active_micro_kernel<double>());
        return d;
      },
      "The active family's register tile (mr, nr) and cache blockings (mc, kc, nc; panel_mc, panel_kc, panel_nc) "
      "per dtype");
  // ---- end of probe block ------------------------------------------------------------------------------------
}
