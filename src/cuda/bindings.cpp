// pybind11 module linneuron._cuda: thin bindings over the CUDA kernels, on raw device pointers, sizes and element
// strides, with the device index and the cudaStream_t (as an int) last. The CUDA runtime is linked statically, so
// this module imports on machines without a driver or GPU; availability_error() then says why it cannot run.
// The Python layer validates shapes, dtypes and devices first; these bindings check only what would otherwise
// crash (negative sizes, null pointers, unknown codes) and release the GIL around every launch.
#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels.h"

namespace py = pybind11;
namespace lc = linneuron::cuda;

namespace {

std::string cuda_error_text(cudaError_t err) {
  return std::string(cudaGetErrorString(err)) + " (" + cudaGetErrorName(err) + ")";
}

// Makes `device` current for the kernels' launch and restores the caller's device afterwards, so that calling in
// never changes which device torch (or anything else in the process) considers current on this thread.
class DeviceGuard {
 public:
  DeviceGuard(int device, const char* op) : device_(device) {
    if (device < 0) throw std::invalid_argument(std::string("linneuron._cuda.") + op + ": negative device index");
    cudaError_t err = cudaGetDevice(&previous_);
    if (err == cudaSuccess && previous_ != device) err = cudaSetDevice(device);
    if (err != cudaSuccess)
      throw std::runtime_error(std::string("linneuron._cuda.") + op + ": cannot select CUDA device " +
                               std::to_string(device) + ": " + cuda_error_text(err));
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = -1;
};

void require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(what);
}

void* as_stream(std::uintptr_t stream) { return reinterpret_cast<void*>(stream); }

template <typename P>
P* as_ptr(std::uintptr_t p) {
  return reinterpret_cast<P*>(p);
}

void check_dtype(int dtype, const char* what) {
  require(dtype == lc::kFloat32 || dtype == lc::kFloat64 || dtype == lc::kFloat16 || dtype == lc::kBFloat16, what);
}

void gemm(int dtype, int64_t m, int64_t n, int64_t k, std::uintptr_t a, int64_t a_rs, int64_t a_cs, std::uintptr_t b,
          int64_t b_rs, int64_t b_cs, std::uintptr_t c, int64_t c_rs, int64_t c_cs, std::uintptr_t bias,
          int64_t bias_stride, bool accumulate, bool step, int device, std::uintptr_t stream) {
  check_dtype(dtype, "linneuron._cuda.gemm: unknown dtype code");
  require(m >= 0 && n >= 0 && k >= 0, "linneuron._cuda.gemm: negative size");
  if (m == 0 || n == 0) return;
  require(c != 0, "linneuron._cuda.gemm: null output");
  require(k == 0 || (a != 0 && b != 0), "linneuron._cuda.gemm: null operand");
  lc::GemmCall g;
  g.m = m, g.n = n, g.k = k;
  g.a = as_ptr<const void>(a), g.a_rs = a_rs, g.a_cs = a_cs;
  g.b = as_ptr<const void>(b), g.b_rs = b_rs, g.b_cs = b_cs;
  g.c = as_ptr<void>(c), g.c_rs = c_rs, g.c_cs = c_cs;
  g.bias = as_ptr<const void>(bias), g.bias_stride = bias_stride;
  g.accumulate = accumulate, g.step = step;
  py::gil_scoped_release release;
  DeviceGuard guard(device, "gemm");
  lc::gemm(dtype, g, as_stream(stream));
}

void step_forward(int dtype, int64_t rows, int64_t cols, std::uintptr_t src, int64_t src_rs, int64_t src_cs,
                  std::uintptr_t out, int64_t out_rs, int64_t out_cs, int device, std::uintptr_t stream) {
  check_dtype(dtype, "linneuron._cuda.step_forward: unknown dtype code");
  require(rows >= 0 && cols >= 0, "linneuron._cuda.step_forward: negative size");
  if (rows == 0 || cols == 0) return;
  require(src != 0 && out != 0, "linneuron._cuda.step_forward: null pointer");
  py::gil_scoped_release release;
  DeviceGuard guard(device, "step_forward");
  lc::step_forward(dtype, rows, cols, as_ptr<const void>(src), src_rs, src_cs, as_ptr<void>(out), out_rs, out_cs,
                   as_stream(stream));
}

void step_backward(int dtype, int64_t rows, int64_t cols, std::uintptr_t z, int64_t z_rs, int64_t z_cs,
                   std::uintptr_t gy, int64_t gy_rs, int64_t gy_cs, std::uintptr_t gz, int64_t gz_rs, int64_t gz_cs,
                   int surrogate, double alpha, int device, std::uintptr_t stream) {
  check_dtype(dtype, "linneuron._cuda.step_backward: unknown dtype code");
  require(rows >= 0 && cols >= 0, "linneuron._cuda.step_backward: negative size");
  require(surrogate >= 0 && surrogate <= 3, "linneuron._cuda.step_backward: unknown surrogate code");
  if (rows == 0 || cols == 0) return;
  require(z != 0 && gy != 0 && gz != 0, "linneuron._cuda.step_backward: null pointer");
  py::gil_scoped_release release;
  DeviceGuard guard(device, "step_backward");
  lc::step_backward(dtype, rows, cols, as_ptr<const void>(z), z_rs, z_cs, as_ptr<const void>(gy), gy_rs, gy_cs,
                    as_ptr<void>(gz), gz_rs, gz_cs, surrogate, alpha, as_stream(stream));
}

void bias_grad(int dtype, int64_t m, int64_t n, std::uintptr_t dy, int64_t dy_rs, int64_t dy_cs, std::uintptr_t db,
               int64_t db_stride, bool accumulate, int device, std::uintptr_t stream) {
  check_dtype(dtype, "linneuron._cuda.bias_grad: unknown dtype code");
  require(m >= 0 && n >= 0, "linneuron._cuda.bias_grad: negative size");
  if (n == 0) return;
  require(db != 0 && (m == 0 || dy != 0), "linneuron._cuda.bias_grad: null pointer");
  py::gil_scoped_release release;
  DeviceGuard guard(device, "bias_grad");
  lc::bias_grad(dtype, m, n, as_ptr<const void>(dy), dy_rs, dy_cs, as_ptr<void>(db), db_stride, accumulate,
                as_stream(stream));
}

std::string runtime_version() {
  return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string((CUDART_VERSION % 1000) / 10);
}

// "" when at least one CUDA device can be used, else why not. Never throws: it is what `import`-time code and
// linneuron.info() ask on machines without a GPU.
std::string availability_error() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it, so that it is not reported later as a launch error
    if (err == cudaErrorInsufficientDriver)
      return "no CUDA driver, or one older than this build's CUDA runtime " + runtime_version() + " (" +
             cudaGetErrorName(err) + ")";
    if (err == cudaErrorNoDevice) return std::string("no CUDA device found (") + cudaGetErrorName(err) + ")";
    return "the CUDA runtime cannot be used: " + cuda_error_text(err);
  }
  if (count == 0) return "no CUDA device found";
  return "";
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "linneuron CUDA kernels on raw device pointers; use linneuron.functional with CUDA tensors.";
  m.attr("FLOAT32") = static_cast<int>(lc::kFloat32);
  m.attr("FLOAT64") = static_cast<int>(lc::kFloat64);
  m.attr("FLOAT16") = static_cast<int>(lc::kFloat16);
  m.attr("BFLOAT16") = static_cast<int>(lc::kBFloat16);

  m.def("gemm", &gemm, "C = [C +] A B [+ bias] [then step] on `stream` of `device`; see src/cpp/gemm.h",
        py::arg("dtype"), py::arg("m"), py::arg("n"), py::arg("k"), py::arg("a"), py::arg("a_rs"), py::arg("a_cs"),
        py::arg("b"), py::arg("b_rs"), py::arg("b_cs"), py::arg("c"), py::arg("c_rs"), py::arg("c_cs"), py::arg("bias"),
        py::arg("bias_stride"), py::arg("accumulate"), py::arg("step"), py::arg("device"), py::arg("stream"));
  m.def("step_forward", &step_forward, "out = H(in) over a strided rows x cols grid", py::arg("dtype"), py::arg("rows"),
        py::arg("cols"), py::arg("src"), py::arg("src_rs"), py::arg("src_cs"), py::arg("out"), py::arg("out_rs"),
        py::arg("out_cs"), py::arg("device"), py::arg("stream"));
  m.def("step_backward", &step_backward, "grad_z = grad_y * surrogate'(z) over a strided rows x cols grid",
        py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("z"), py::arg("z_rs"), py::arg("z_cs"),
        py::arg("grad_y"), py::arg("gy_rs"), py::arg("gy_cs"), py::arg("grad_z"), py::arg("gz_rs"), py::arg("gz_cs"),
        py::arg("surrogate"), py::arg("alpha"), py::arg("device"), py::arg("stream"));
  m.def("bias_grad", &bias_grad, "db = [db +] column sums of dY", py::arg("dtype"), py::arg("m"), py::arg("n"),
        py::arg("dy"), py::arg("dy_rs"), py::arg("dy_cs"), py::arg("db"), py::arg("db_stride"), py::arg("accumulate"),
        py::arg("device"), py::arg("stream"));
  m.def("availability_error", &availability_error,
        "'' when a usable CUDA device exists, else the reason (no driver, no device, ...)");
  m.def("device_count", &device_count, "number of CUDA devices (0 without a driver)");
  m.def("runtime_version", &runtime_version, "the CUDA runtime version this module was built with, e.g. '13.0'");
}
