// The eager fast path of linneuron.functional: checks, tensor reads, output allocation and kernel call in one C call.
//
// No torch headers (one build serves every torch): tensors are read through the CPython API, by the C-level
// properties and methods of torch.Tensor (is_cpu, dtype, requires_grad, shape, stride(), data_ptr(), is_neg()),
// and outputs are allocated by a cached per-dtype allocator (the bound .new of an empty tensor of that dtype). Python hands over everything torch-specific once, in
// fastpath_init (python/linneuron/_fastpath.py): the tensor types, the dtype table (dtype object ->
// kernel code, so new dtypes are a table entry), the mode/transform probes and the autograd.Function appliers.
//
// Every entry returns a result, or None when the call is anything but the plain case: a tensor subclass, an active
// dispatch or function mode, a functorch transform, forward-mode AD, compile/export, a non-CPU device, a layout other
// than strided, the negative bit, a dtype without a kernel code, mismatched dtypes or shapes, empty operands,
// misaligned or null memory, rows that no single stride describes, or gradients where autograd is needed but no
// applier fits. None sends the caller to the general path (python/linneuron/_kernels.py via functional.py), which
// keeps every behaviour and error message; so nothing here raises for bad input. Python errors raised while reading
// a tensor are cleared and also mean None. The GIL is released around every kernel.
#include <Python.h>

#include <cstdint>
#include <exception>
#include <string>

#include "fastpath.h"
#include "gemm.h"

namespace linneuron {
namespace {

constexpr int kMaxDtypes = 8;
constexpr int kMaxDims = 16;

// Kernel codes, as in bindings.cpp (kFloat32 = 0, kFloat64 = 1). Table entries with other codes are accepted by
// fastpath_init but fall back here until a kernel exists for them.
constexpr int kCodeFloat32 = 0;
constexpr int kCodeFloat64 = 1;

struct State {
  bool ready = false;
  PyTypeObject* tensor_type = nullptr;
  PyTypeObject* parameter_type = nullptr;
  PyObject* dtypes[kMaxDtypes] = {};
  PyObject* allocators[kMaxDtypes] = {};  // per dtype: the bound .new of an empty tensor (cheapest allocation)
  int codes[kMaxDtypes] = {};
  int n_dtypes = 0;
  PyObject* grad_enabled = nullptr;       // torch.is_grad_enabled
  PyObject* dispatch_stack_len = nullptr;  // torch._C._len_torch_dispatch_stack
  PyObject* autocast_cpu_enabled = nullptr;  // () -> bool: CPU autocast on (ops.py's AutocastCPU rule must cast)
  PyObject* function_mode_on = nullptr;    // torch._C._is_torch_function_mode_enabled
  PyObject* functorch_peek = nullptr;      // torch._C._functorch.peek_interpreter_stack (may be None)
  PyObject* forward_ad = nullptr;          // module torch.autograd.forward_ad (reads _current_level)
  PyObject* compiler = nullptr;            // module torch.compiler (reads _is_compiling_flag if present)
  PyObject* linear_apply = nullptr;        // bound C apply of the grad-mode autograd.Functions
  PyObject* step_apply = nullptr;
  // Interned attribute names.
  PyObject *s_is_cpu, *s_dtype, *s_requires_grad, *s_shape, *s_stride, *s_data_ptr, *s_is_neg;
  PyObject *s_current_level, *s_is_compiling_flag;
};

State g;

// ---- reading one tensor -------------------------------------------------------------------------------------

struct TensorView {
  PyObject* obj = nullptr;
  PyObject* dtype = nullptr;  // borrowed from the table
  PyObject* allocate = nullptr;
  int code = -1;
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t stride[kMaxDims];
  int64_t numel = 1;
  std::uintptr_t ptr = 0;
  bool requires_grad = false;
};

// Reads an int64 tuple (torch.Size or a tuple of ints) into out; false if it is not one or too long.
bool read_int_tuple(PyObject* tuple, int64_t* out, int* n) {
  if (!PyTuple_Check(tuple)) return false;
  const Py_ssize_t size = PyTuple_GET_SIZE(tuple);
  if (size > kMaxDims) return false;
  for (Py_ssize_t i = 0; i < size; ++i) {
    const long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(tuple, i));
    if (v == -1 && PyErr_Occurred()) return false;
    out[i] = v;
  }
  *n = static_cast<int>(size);
  return true;
}

bool is_true_attr(PyObject* obj, PyObject* name, bool* value) {
  PyObject* v = PyObject_GetAttr(obj, name);
  if (!v) return false;
  *value = v == Py_True;
  Py_DECREF(v);
  return true;
}

// Fills view from a plain, CPU, strided tensor without the negative bit and with a known dtype; false otherwise
// (a Python error may be pending; callers clear it).
bool read_tensor(PyObject* obj, TensorView* view) {
  PyTypeObject* type = Py_TYPE(obj);
  if (type != g.tensor_type && type != g.parameter_type) return false;
  view->obj = obj;
  bool flag = false;
  if (!is_true_attr(obj, g.s_is_cpu, &flag) || !flag) return false;
  // Layouts other than strided (sparse, mkldnn) need no test of their own: their stride() raises, below.
  PyObject* dtype = PyObject_GetAttr(obj, g.s_dtype);
  if (!dtype) return false;
  Py_DECREF(dtype);  // dtype objects are singletons kept alive by the table
  view->code = -1;
  for (int i = 0; i < g.n_dtypes; ++i)
    if (g.dtypes[i] == dtype) view->dtype = dtype, view->code = g.codes[i], view->allocate = g.allocators[i];
  if (view->code != kCodeFloat32 && view->code != kCodeFloat64) return false;
  PyObject* neg = PyObject_CallMethodNoArgs(obj, g.s_is_neg);
  if (!neg) return false;
  Py_DECREF(neg);
  if (neg != Py_False) return false;
  if (!is_true_attr(obj, g.s_requires_grad, &view->requires_grad)) return false;
  PyObject* shape = PyObject_GetAttr(obj, g.s_shape);
  if (!shape) return false;
  int ndim = 0;
  const bool shape_ok = read_int_tuple(shape, view->shape, &ndim);
  Py_DECREF(shape);
  if (!shape_ok) return false;
  PyObject* stride = PyObject_CallMethodNoArgs(obj, g.s_stride);
  if (!stride) return false;
  int stride_ndim = 0;
  const bool stride_ok = read_int_tuple(stride, view->stride, &stride_ndim);
  Py_DECREF(stride);
  if (!stride_ok || stride_ndim != ndim) return false;
  view->ndim = ndim;
  view->numel = 1;
  for (int i = 0; i < ndim; ++i) view->numel *= view->shape[i];
  if (view->numel == 0) return false;  // empty operands: the general path has the edge cases
  PyObject* ptr = PyObject_CallMethodNoArgs(obj, g.s_data_ptr);
  if (!ptr) return false;
  view->ptr = static_cast<std::uintptr_t>(PyLong_AsUnsignedLongLong(ptr));
  Py_DECREF(ptr);
  if (PyErr_Occurred()) return false;
  const std::uintptr_t item = view->code == kCodeFloat32 ? sizeof(float) : sizeof(double);
  if (view->ptr == 0 || view->ptr % item != 0) return false;  // ZeroTensor (no memory) or misaligned memory
  return true;
}

// The leading dims [0, end) of view as one row index: rows and row stride, or false if no single stride fits
// (the same rule as python/linneuron/_layout.py collapse_rows).
bool collapse(const TensorView& view, int end, int64_t* rows, int64_t* row_stride) {
  int64_t count = 1;
  int64_t inner_size = 0, inner_stride = 0;
  bool first = true;
  for (int i = end - 1; i >= 0; --i) {  // innermost first
    count *= view.shape[i];
    if (view.shape[i] == 1) continue;
    if (first) {
      *row_stride = view.stride[i];
      first = false;
    } else if (view.stride[i] != inner_stride * inner_size) {
      return false;
    }
    inner_size = view.shape[i], inner_stride = view.stride[i];
  }
  if (first) *row_stride = 0;
  *rows = count;
  return true;
}

// ---- global state: modes, transforms, grad mode ---------------------------------------------------------------

bool call_is_truthy(PyObject* fn, bool* value) {
  PyObject* r = PyObject_CallNoArgs(fn);
  if (!r) return false;
  const int truth = PyObject_IsTrue(r);
  Py_DECREF(r);
  if (truth < 0) return false;
  *value = truth != 0;
  return true;
}

// True when nothing (mode, transform, forward AD, compile/export) needs the registered ops instead of the kernels.
bool plain_eager() {
  bool on = false;
  if (!call_is_truthy(g.dispatch_stack_len, &on) || on) return false;
  if (!call_is_truthy(g.function_mode_on, &on) || on) return false;
  if (!call_is_truthy(g.autocast_cpu_enabled, &on) || on) return false;
  if (g.functorch_peek != Py_None) {
    PyObject* level = PyObject_CallNoArgs(g.functorch_peek);
    if (!level) return false;
    Py_DECREF(level);
    if (level != Py_None) return false;
  }
  PyObject* fwd = PyObject_GetAttr(g.forward_ad, g.s_current_level);
  if (!fwd) return false;
  const long long fwd_level = PyLong_AsLongLong(fwd);
  Py_DECREF(fwd);
  if (fwd_level != -1 || PyErr_Occurred()) return false;
  if (g.compiler != Py_None) {
    PyObject* flag = PyObject_GetAttr(g.compiler, g.s_is_compiling_flag);
    if (!flag) {
      PyErr_Clear();  // torch versions without the flag: torch.compile is caught by functional.py's dynamo guard
    } else {
      Py_DECREF(flag);
      if (flag == Py_True) return false;
    }
  }
  return true;
}

// 1 if grad mode is on, 0 if off, -1 on error.
int grad_mode() {
  bool on = false;
  if (!call_is_truthy(g.grad_enabled, &on)) return -1;
  return on ? 1 : 0;
}

// A fresh contiguous CPU tensor of shape dims[0..ndim) from a dtype's allocator (template.new(*dims): measured
// cheaper than torch.empty(*dims, dtype=...), whose keyword parsing costs about as much as a tiny GEMM).
PyObject* empty_like_dtype(const int64_t* dims, int ndim, PyObject* allocate) {
  if (ndim < 1) {  // .new() with no sizes is a (0,) tensor, not a 0-d one: 0-d results take the general path
    PyErr_SetString(PyExc_ValueError, "fast path: 0-d result");
    return nullptr;
  }
  PyObject* args[kMaxDims + 1];
  int made = 0;
  for (; made < ndim; ++made) {
    args[made] = PyLong_FromLongLong(dims[made]);
    if (!args[made]) break;
  }
  PyObject* out = nullptr;
  if (made == ndim) out = PyObject_Vectorcall(allocate, args, static_cast<size_t>(ndim), nullptr);
  for (int i = 0; i < made; ++i) Py_DECREF(args[i]);
  return out;
}

bool data_ptr_of(PyObject* tensor, std::uintptr_t* ptr) {
  PyObject* p = PyObject_CallMethodNoArgs(tensor, g.s_data_ptr);
  if (!p) return false;
  *ptr = static_cast<std::uintptr_t>(PyLong_AsUnsignedLongLong(p));
  Py_DECREF(p);
  return !PyErr_Occurred();
}

// A fresh output tensor and its data pointer, or nullptr with the Python error set.
PyObject* new_output(const int64_t* dims, int ndim, PyObject* allocate, std::uintptr_t* ptr) {
  PyObject* out = empty_like_dtype(dims, ndim, allocate);
  if (out && !data_ptr_of(out, ptr)) Py_CLEAR(out);
  return out;
}

// Runs fn with the GIL released; a C++ exception becomes a RuntimeError. Returns false with the error set.
template <typename Fn>
bool run_kernel(const char* what, Fn&& fn) {
  std::string error;
  Py_BEGIN_ALLOW_THREADS try {
    fn();
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "kernel failed";
  } catch (...) {
    error = "unknown C++ exception";
  }
  Py_END_ALLOW_THREADS if (!error.empty()) {
    PyErr_Format(PyExc_RuntimeError, "%s: %s", what, error.c_str());
    return false;
  }
  return true;
}

template <typename T>
void gemm_typed(int64_t m, int64_t n, int64_t k, std::uintptr_t a, int64_t a_rs, int64_t a_cs, std::uintptr_t b,
                int64_t b_rs, int64_t b_cs, std::uintptr_t c, std::uintptr_t bias, int64_t bias_stride, bool step) {
  GemmArgs<T> args;
  args.m = m, args.n = n, args.k = k;
  args.a = reinterpret_cast<const T*>(a), args.a_rs = a_rs, args.a_cs = a_cs;
  args.b = reinterpret_cast<const T*>(b), args.b_rs = b_rs, args.b_cs = b_cs;
  args.c = reinterpret_cast<T*>(c), args.c_rs = n, args.c_cs = 1;
  args.bias = bias ? reinterpret_cast<const T*>(bias) : nullptr, args.bias_stride = bias_stride;
  args.step = step;
  gemm(args);
}

// C(m, n) contiguous = A B [+ bias] [then H], dispatched on the dtype code.
bool gemm_call(int code, int64_t m, int64_t n, int64_t k, std::uintptr_t a, int64_t a_rs, int64_t a_cs,
               std::uintptr_t b, int64_t b_rs, int64_t b_cs, std::uintptr_t c, std::uintptr_t bias,
               int64_t bias_stride, bool step) {
  return run_kernel("linneuron fast path (gemm)", [&] {
    if (code == kCodeFloat32)
      gemm_typed<float>(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, bias, bias_stride, step);
    else
      gemm_typed<double>(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, bias, bias_stride, step);
  });
}

PyObject* fallback() {
  PyErr_Clear();
  Py_RETURN_NONE;
}

// ---- entries --------------------------------------------------------------------------------------------------

// fast_linear(input, weight, bias, step) -> Tensor | None: [H](input @ weight.T + bias), input (*, K).
// With a gradient to record (grad mode on, an operand requiring grad), the result is computed here and handed to
// the linear applier (functional._FastLinear), which records it; for step=True that case falls back (the neuron
// then needs z or the exact-zero formula, both in the general path).
PyObject* fast_linear(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!g.ready || nargs != 4) return fallback();
  PyObject* bias_obj = args[2];
  const bool step = args[3] == Py_True;
  TensorView x, w, b;
  if (!read_tensor(args[0], &x) || !read_tensor(args[1], &w)) return fallback();
  const bool has_bias = bias_obj != Py_None;
  if (has_bias && !read_tensor(bias_obj, &b)) return fallback();
  if (w.ndim != 2 || x.ndim < 1 || w.dtype != x.dtype || (has_bias && b.dtype != x.dtype)) return fallback();
  const int64_t n = w.shape[0], k = w.shape[1];
  if (x.shape[x.ndim - 1] != k || (has_bias && (b.ndim != 1 || b.shape[0] != n))) return fallback();
  int64_t m = 0, x_rs = 0;
  if (!collapse(x, x.ndim - 1, &m, &x_rs)) return fallback();
  bool record = false;  // grad mode on and an operand requiring grad: autograd records the call
  if (x.requires_grad || w.requires_grad || (has_bias && b.requires_grad)) {
    const int mode = grad_mode();
    if (mode < 0) return fallback();
    record = mode == 1;
    if (record && (step || g.linear_apply == Py_None)) return fallback();
  }
  if (!plain_eager()) return fallback();
  int64_t dims[kMaxDims];
  for (int i = 0; i < x.ndim - 1; ++i) dims[i] = x.shape[i];
  dims[x.ndim - 1] = n;
  std::uintptr_t c = 0;
  PyObject* out = new_output(dims, x.ndim, x.allocate, &c);
  if (!out) return fallback();
  // B(k, n) = W(n, k): b_rs = w_cs, b_cs = w_rs.
  if (!gemm_call(x.code, m, n, k, x.ptr, x_rs, x.stride[x.ndim - 1], w.ptr, w.stride[1], w.stride[0], c,
                 has_bias ? b.ptr : 0, has_bias ? b.stride[0] : 0, step)) {
    Py_DECREF(out);
    return nullptr;
  }
  if (!record) return out;
  PyObject* box = PyTuple_Pack(1, out);  // a tuple: autograd does not see the result as an input
  Py_DECREF(out);
  if (!box) return nullptr;
  PyObject* call_args[4] = {args[0], args[1], bias_obj, box};
  PyObject* result = PyObject_Vectorcall(g.linear_apply, call_args, 4, nullptr);
  Py_DECREF(box);
  return result;  // errors from autograd propagate
}

// The whole of view as one strided run of numel elements (rows 1), or false when its dims do not collapse.
bool as_run(const TensorView& view, int64_t* stride) {
  int64_t count = 0;
  return collapse(view, view.ndim, &count, stride);
}

// fast_step(input, surrogate, alpha) -> Tensor | None: H(input); with a gradient to record, via the step applier.
PyObject* fast_step(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!g.ready || nargs != 3) return fallback();
  TensorView z;
  if (!read_tensor(args[0], &z)) return fallback();
  int64_t z_stride = 0;
  if (!as_run(z, &z_stride)) return fallback();
  bool record = false;
  if (z.requires_grad) {
    const int mode = grad_mode();
    if (mode < 0 || (mode == 1 && g.step_apply == Py_None)) return fallback();
    record = mode == 1;
  }
  if (!plain_eager()) return fallback();
  std::uintptr_t c = 0;
  PyObject* out = new_output(z.shape, z.ndim, z.allocate, &c);
  if (!out) return fallback();
  const int64_t count = z.numel;
  const bool ok = run_kernel("linneuron fast path (step)", [&] {
    if (z.code == kCodeFloat32)
      step_forward(1, count, reinterpret_cast<const float*>(z.ptr), 0, z_stride, reinterpret_cast<float*>(c), count, 1);
    else
      step_forward(1, count, reinterpret_cast<const double*>(z.ptr), 0, z_stride, reinterpret_cast<double*>(c), count,
                   1);
  });
  if (!ok) {
    Py_DECREF(out);
    return nullptr;
  }
  if (!record) return out;
  PyObject* box = PyTuple_Pack(1, out);
  Py_DECREF(out);
  if (!box) return nullptr;
  PyObject* call_args[4] = {args[0], args[1], args[2], box};
  PyObject* result = PyObject_Vectorcall(g.step_apply, call_args, 4, nullptr);
  Py_DECREF(box);
  return result;
}

// Reads the optional tensor arg (None allowed when !needed); false means fall back.
bool read_optional(PyObject* obj, bool needed, TensorView* view) {
  if (!needed) return true;
  return obj != Py_None && read_tensor(obj, view);
}

// fast_linear_backward(grad_output, input, weight, need_input, need_weight, need_bias) -> (dX, dW, db) | None.
// The products of Y = X Wᵀ + b's backward, straight on the kernels: dX = dY W, dW = dYᵀ X, db = column sums of dY.
// Only for a backward that records nothing (grad mode off); create_graph=True falls back to the formulas.
PyObject* fast_linear_backward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!g.ready || nargs != 6) return fallback();
  const bool need_x = args[3] == Py_True, need_w = args[4] == Py_True, need_b = args[5] == Py_True;
  TensorView dy, x, w;
  if (!read_tensor(args[0], &dy) || !read_optional(args[1], need_w, &x) || !read_optional(args[2], need_x, &w))
    return fallback();
  if (grad_mode() != 0) return fallback();
  if (dy.ndim < 1) return fallback();
  int64_t m = 0, dy_rs = 0;
  if (!collapse(dy, dy.ndim - 1, &m, &dy_rs)) return fallback();
  const int64_t n = dy.shape[dy.ndim - 1], dy_cs = dy.stride[dy.ndim - 1];
  int64_t x_rs = 0, k = 0;
  if (need_x && (w.ndim != 2 || w.dtype != dy.dtype || w.shape[0] != n)) return fallback();
  if (need_w) {
    int64_t x_rows = 0;
    if (x.ndim < 1 || x.dtype != dy.dtype || !collapse(x, x.ndim - 1, &x_rows, &x_rs) || x_rows != m)
      return fallback();
    k = x.shape[x.ndim - 1];
    if (need_x && w.shape[1] != k) return fallback();
  }
  if (!plain_eager()) return fallback();
  PyObject* result = PyTuple_New(3);
  if (!result) return nullptr;
  for (int i = 0; i < 3; ++i) {
    Py_INCREF(Py_None);
    PyTuple_SET_ITEM(result, i, Py_None);
  }
  auto fail = [&]() -> PyObject* {
    Py_DECREF(result);
    return PyErr_Occurred() ? nullptr : fallback();  // a failed allocation or kernel raises
  };
  auto set_out = [&](int slot, const int64_t* dims, int ndim, std::uintptr_t* c) {
    PyObject* out = empty_like_dtype(dims, ndim, dy.allocate);
    if (!out) return false;
    Py_DECREF(PyTuple_GET_ITEM(result, slot));
    PyTuple_SET_ITEM(result, slot, out);
    return data_ptr_of(out, c);
  };
  if (need_x) {  // dX (*, K) = dY (rows, N) W (N, K): B(k=N, n=K) = W
    const int64_t kin = w.shape[1];
    int64_t dims[kMaxDims];
    for (int i = 0; i < dy.ndim - 1; ++i) dims[i] = dy.shape[i];
    dims[dy.ndim - 1] = kin;
    std::uintptr_t c = 0;
    if (!set_out(0, dims, dy.ndim, &c)) return fail();
    if (!gemm_call(dy.code, m, kin, n, dy.ptr, dy_rs, dy_cs, w.ptr, w.stride[0], w.stride[1], c, 0, 0, false))
      return fail();
  }
  if (need_w) {  // dW (N, K) = dYᵀ (N, rows) X (rows, K)
    const int64_t dims[2] = {n, k};
    std::uintptr_t c = 0;
    if (!set_out(1, dims, 2, &c)) return fail();
    if (!gemm_call(dy.code, n, k, m, dy.ptr, dy_cs, dy_rs, x.ptr, x_rs, x.stride[x.ndim - 1], c, 0, 0, false))
      return fail();
  }
  if (need_b) {  // db (N,) = column sums of dY
    const int64_t dims[1] = {n};
    std::uintptr_t c = 0;
    if (!set_out(2, dims, 1, &c)) return fail();
    const bool ok = run_kernel("linneuron fast path (bias_grad)", [&] {
      if (dy.code == kCodeFloat32)
        bias_grad(m, n, reinterpret_cast<const float*>(dy.ptr), dy_rs, dy_cs, reinterpret_cast<float*>(c), 1, false);
      else
        bias_grad(m, n, reinterpret_cast<const double*>(dy.ptr), dy_rs, dy_cs, reinterpret_cast<double*>(c), 1,
                  false);
    });
    if (!ok) return fail();
  }
  return result;
}

// fast_step_backward(grad_output, input, surrogate, alpha) -> Tensor | None: grad_output * s'(input), grad mode off.
PyObject* fast_step_backward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!g.ready || nargs != 4) return fallback();
  TensorView gy, z;
  if (!read_tensor(args[0], &gy) || !read_tensor(args[1], &z)) return fallback();
  if (gy.dtype != z.dtype || gy.ndim != z.ndim) return fallback();
  for (int i = 0; i < z.ndim; ++i)
    if (gy.shape[i] != z.shape[i]) return fallback();
  const long surrogate = PyLong_AsLong(args[2]);
  const double alpha = PyFloat_AsDouble(args[3]);
  if (PyErr_Occurred() || surrogate < 0 || surrogate > 3) return fallback();
  int64_t z_stride = 0, gy_stride = 0;
  if (!as_run(z, &z_stride) || !as_run(gy, &gy_stride)) return fallback();
  if (grad_mode() != 0 || !plain_eager()) return fallback();
  std::uintptr_t c = 0;
  PyObject* out = new_output(z.shape, z.ndim, z.allocate, &c);
  if (!out) return fallback();
  const int64_t count = z.numel;
  const auto kind = static_cast<Surrogate>(surrogate);
  const bool ok = run_kernel("linneuron fast path (step_backward)", [&] {
    if (z.code == kCodeFloat32)
      step_backward(1, count, reinterpret_cast<const float*>(z.ptr), 0, z_stride,
                    reinterpret_cast<const float*>(gy.ptr), 0, gy_stride, reinterpret_cast<float*>(c), count, 1, kind,
                    static_cast<float>(alpha));
    else
      step_backward(1, count, reinterpret_cast<const double*>(z.ptr), 0, z_stride,
                    reinterpret_cast<const double*>(gy.ptr), 0, gy_stride, reinterpret_cast<double*>(c), count, 1,
                    kind, alpha);
  });
  if (!ok) {
    Py_DECREF(out);
    return nullptr;
  }
  return out;
}

PyObject* keep(PyObject* obj) {
  Py_XINCREF(obj);
  return obj;
}

PyObject* get_item(PyObject* dict, const char* key) {
  PyObject* v = PyDict_GetItemString(dict, key);
  if (!v) PyErr_Format(PyExc_KeyError, "fastpath_init: missing %s", key);
  return v;
}

// fastpath_init(config: dict) -> None. Keys: tensor_type, parameter_type, dtypes (a list of (dtype, kernel code,
// allocator) triples, the allocator called with the sizes), grad_enabled, dispatch_stack_len, function_mode_on, functorch_peek (or None), forward_ad,
// compiler (or None), linear_apply, step_apply (either may be None: then grad mode falls back),
// autocast_cpu_enabled.
PyObject* fastpath_init(PyObject*, PyObject* config) {
  if (!PyDict_Check(config)) {
    PyErr_SetString(PyExc_TypeError, "fastpath_init(): expected a dict");
    return nullptr;
  }
  State s;
  const char* keys[] = {"tensor_type",      "parameter_type", "dtypes",     "grad_enabled",
                        "dispatch_stack_len", "function_mode_on", "functorch_peek", "forward_ad",
                        "compiler",         "linear_apply",   "step_apply", "autocast_cpu_enabled"};
  constexpr int kKeys = sizeof(keys) / sizeof(keys[0]);
  PyObject* v[kKeys];
  for (int i = 0; i < kKeys; ++i)
    if (!(v[i] = get_item(config, keys[i]))) return nullptr;
  if (!PyType_Check(v[0]) || !PyType_Check(v[1])) {
    PyErr_SetString(PyExc_TypeError, "fastpath_init(): tensor_type and parameter_type must be types");
    return nullptr;
  }
  PyObject* dtypes = PySequence_Fast(v[2], "fastpath_init(): dtypes must be a sequence");
  if (!dtypes) return nullptr;
  const Py_ssize_t count = PySequence_Fast_GET_SIZE(dtypes);
  if (count > kMaxDtypes) {
    Py_DECREF(dtypes);
    PyErr_SetString(PyExc_ValueError, "fastpath_init(): too many dtypes");
    return nullptr;
  }
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* pair = PySequence_Fast_GET_ITEM(dtypes, i);
    PyObject *dtype = nullptr, *code = nullptr, *allocate = nullptr;
    if (!PyArg_ParseTuple(pair, "OOO", &dtype, &code, &allocate)) {
      Py_DECREF(dtypes);
      return nullptr;
    }
    s.dtypes[i] = keep(dtype);
    s.allocators[i] = keep(allocate);
    s.codes[i] = static_cast<int>(PyLong_AsLong(code));
  }
  Py_DECREF(dtypes);
  if (PyErr_Occurred()) return nullptr;
  s.n_dtypes = static_cast<int>(count);
  s.tensor_type = reinterpret_cast<PyTypeObject*>(keep(v[0]));
  s.parameter_type = reinterpret_cast<PyTypeObject*>(keep(v[1]));
  s.grad_enabled = keep(v[3]);
  s.dispatch_stack_len = keep(v[4]);
  s.function_mode_on = keep(v[5]);
  s.functorch_peek = keep(v[6]);
  s.forward_ad = keep(v[7]);
  s.compiler = keep(v[8]);
  s.linear_apply = keep(v[9]);
  s.step_apply = keep(v[10]);
  s.autocast_cpu_enabled = keep(v[11]);
  s.s_is_cpu = PyUnicode_InternFromString("is_cpu");
  s.s_dtype = PyUnicode_InternFromString("dtype");
  s.s_requires_grad = PyUnicode_InternFromString("requires_grad");
  s.s_shape = PyUnicode_InternFromString("shape");
  s.s_stride = PyUnicode_InternFromString("stride");
  s.s_data_ptr = PyUnicode_InternFromString("data_ptr");
  s.s_is_neg = PyUnicode_InternFromString("is_neg");
  s.s_current_level = PyUnicode_InternFromString("_current_level");
  s.s_is_compiling_flag = PyUnicode_InternFromString("_is_compiling_flag");
  if (PyErr_Occurred()) return nullptr;
  s.ready = true;
  g = s;  // the previous state's references (a re-init) are kept alive on purpose: other threads may read them
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"fastpath_init", reinterpret_cast<PyCFunction>(fastpath_init), METH_O,
     "Hand the fast path torch's types, dtypes and probes (python/linneuron/_fastpath.py calls this once)."},
    {"fast_linear", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_linear)), METH_FASTCALL,
     "fast_linear(input, weight, bias, step) -> Tensor or None (None: use the general path)."},
    {"fast_step", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_step)), METH_FASTCALL,
     "fast_step(input, surrogate, alpha) -> Tensor or None."},
    {"fast_linear_backward", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_linear_backward)),
     METH_FASTCALL,
     "fast_linear_backward(grad_output, input, weight, need_input, need_weight, need_bias) -> (dX, dW, db) or None."},
    {"fast_step_backward", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_step_backward)),
     METH_FASTCALL, "fast_step_backward(grad_output, input, surrogate, alpha) -> Tensor or None."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

bool add_fastpath(PyObject* module) {
  PyObject* name = PyModule_GetNameObject(module);
  if (!name) return false;
  for (PyMethodDef* def = kMethods; def->ml_name; ++def) {
    PyObject* fn = PyCFunction_NewEx(def, nullptr, name);
    if (!fn || PyModule_AddObject(module, def->ml_name, fn) < 0) {
      Py_XDECREF(fn);
      Py_DECREF(name);
      return false;
    }
  }
  Py_DECREF(name);
  return true;
}

}  // namespace linneuron
