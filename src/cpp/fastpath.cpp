// The eager fast path of linneuron.functional: checks, tensor reads, output allocation and kernel call in one C call.
//
// No torch headers (one build serves every torch). A tensor is read by torch's DLPack exchange table where torch
// publishes one (torch.Tensor.__dlpack_c_exchange_api__: device, dtype, shape, strides and address in one C call
// that makes no Python objects), else through the C-level properties and methods of torch.Tensor (is_cpu, dtype,
// shape, stride(), data_ptr()), each called through its descriptor, resolved once on the type; is_neg() and
// requires_grad, which DLPack does not carry, always so. Outputs are allocated by a cached per-dtype allocator
// (the bound .new of an empty tensor of that dtype). Python hands over everything torch-specific once, in
// fastpath_init (python/linneuron/_fastpath.py): the tensor types, the dtype table (dtype object -> kernel code,
// so new dtypes are a table entry), the exchange table, the mode/transform probes and the autograd.Function
// appliers.
//
// Every entry returns a result, or None when the call is anything but the plain case: a tensor subclass, an active
// dispatch or function mode, a functorch transform, forward-mode AD, compile/export, autocast, a non-CPU device, a
// layout other than strided, the negative bit, a dtype without a kernel code, mismatched dtypes or shapes, empty
// operands, misaligned or null memory, rows that no single stride describes, or gradients where autograd is needed
// but no applier fits. None sends the caller to the general path (python/linneuron/_kernels.py via functional.py),
// which keeps every behaviour and error message; so nothing here raises for bad input. Python errors raised while
// reading a tensor are cleared and also mean None. The GIL is released around every kernel.
#include <Python.h>

#include <cstdint>
#include <exception>
#include <string>

#include "dlpack_abi.h"
#include "fastpath.h"
#include "gemm.h"
#include "lowp.h"

namespace linneuron {
namespace {

constexpr int kMaxDtypes = 8;
constexpr int kMaxDims = 16;

// Kernel codes, as in bindings.cpp. Table entries with other codes are accepted by fastpath_init but fall back.
constexpr int kCodeFloat32 = 0;
constexpr int kCodeFloat64 = 1;
constexpr int kCodeFloat16 = 2;
constexpr int kCodeBFloat16 = 3;
constexpr int kCodes = 4;

int item_size(int code) { return code == kCodeFloat32 ? 4 : code == kCodeFloat64 ? 8 : 2; }

// The tensor type's attributes the readers use, resolved once on the type (what attribute lookup would find for
// a plain tensor; handed over by _fastpath.py), so a read is one C call: a property's getter or a method called
// with the tensor as self. An instance attribute shadowing a method is ignored: these read the tensor itself.
enum Descriptor { kIsCpu, kDtype, kRequiresGrad, kShape, kStride, kDataPtr, kIsNeg, kDescriptors };
const char* const kDescriptorNames[kDescriptors] = {"is_cpu", "dtype", "requires_grad", "shape", "stride", "data_ptr",
                                                    "is_neg"};

struct State {
  bool ready = false;
  PyTypeObject* tensor_type = nullptr;
  PyTypeObject* parameter_type = nullptr;
  PyObject* dtypes[kMaxDtypes] = {};
  int codes[kMaxDtypes] = {};
  int n_dtypes = 0;
  PyObject* allocators[kCodes] = {};  // per kernel code: the bound .new of an empty tensor (cheapest allocation)
  PyObject* descriptors[kDescriptors] = {};
  bool descriptor_is_method[kDescriptors] = {};
  const dlpack::ExchangeApi* dlpack = nullptr;  // torch's DLPack exchange table, or null: read by attributes
  PyObject* grad_enabled = nullptr;       // torch.is_grad_enabled
  PyObject* dispatch_stack_len = nullptr;  // torch._C._len_torch_dispatch_stack
  PyObject* autocast_enabled = nullptr;  // () -> bool: autocast on (ops.py's AutocastCPU rule must cast first)
  PyObject* function_mode_on = nullptr;    // torch._C._is_torch_function_mode_enabled
  PyObject* functorch_peek = nullptr;      // torch._C._functorch.peek_interpreter_stack (may be None)
  PyObject* forward_ad = nullptr;          // module torch.autograd.forward_ad (reads _current_level)
  PyObject* compiler = nullptr;            // module torch.compiler (reads _is_compiling_flag if present)
  PyObject* linear_apply = nullptr;        // bound C apply of the grad-mode autograd.Functions
  PyObject* step_apply = nullptr;
  PyObject* to_save = nullptr;  // torch._C._FunctionBase's to_save property (a getset), or null: set by name
  PyObject *s_current_level, *s_is_compiling_flag, *s_to_save, *s_surrogate, *s_alpha;  // interned names
};

State g;

// ---- reading one tensor -------------------------------------------------------------------------------------

struct TensorView {
  PyObject* obj = nullptr;
  int code = -1;
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t stride[kMaxDims];
  int64_t numel = 1;
  std::uintptr_t ptr = 0;
  bool requires_grad = false;
};

// A new reference to the tensor attribute d (see Descriptor), or nullptr with a Python error set.
PyObject* read_attr(PyObject* obj, Descriptor d) {
  PyObject* desc = g.descriptors[d];
  if (g.descriptor_is_method[d]) return PyObject_Vectorcall(desc, &obj, 1, nullptr);
  return Py_TYPE(desc)->tp_descr_get(desc, obj, reinterpret_cast<PyObject*>(Py_TYPE(obj)));
}

bool read_flag(PyObject* obj, Descriptor d, bool* value) {
  PyObject* v = read_attr(obj, d);
  if (!v) return false;
  *value = v == Py_True;
  Py_DECREF(v);
  return true;
}

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

bool read_int_tuple_attr(PyObject* obj, Descriptor d, int64_t* out, int* n) {
  PyObject* tuple = read_attr(obj, d);
  if (!tuple) return false;
  const bool ok = read_int_tuple(tuple, out, n);
  Py_DECREF(tuple);
  return ok;
}

bool read_pointer(PyObject* obj, std::uintptr_t* ptr) {
  PyObject* p = read_attr(obj, kDataPtr);
  if (!p) return false;
  *ptr = static_cast<std::uintptr_t>(PyLong_AsUnsignedLongLong(p));
  Py_DECREF(p);
  return !PyErr_Occurred();
}

// Device, dtype, shape, strides and address through the DLPack exchange table: one C call, no Python objects.
// Layouts without strides or memory (sparse, mkldnn, nested) make it raise, which means fall back.
bool read_by_dlpack(PyObject* obj, TensorView* view) {
  dlpack::Tensor t;
  if (g.dlpack->dltensor_from_py_object_no_sync(obj, &t) != 0) return false;
  if (t.device.device_type != dlpack::kDeviceCpu || t.dtype.lanes != 1 || t.ndim > kMaxDims || t.ndim < 0)
    return false;
  const uint8_t code = t.dtype.code, bits = t.dtype.bits;
  view->code = code == dlpack::kFloat && bits == 32   ? kCodeFloat32
               : code == dlpack::kFloat && bits == 64 ? kCodeFloat64
               : code == dlpack::kFloat && bits == 16 ? kCodeFloat16
               : code == dlpack::kBfloat && bits == 16 ? kCodeBFloat16
                                                       : -1;
  if (view->code < 0 || !g.allocators[view->code]) return false;
  view->ndim = t.ndim;
  int64_t compact = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    view->shape[i] = t.shape[i];
    view->stride[i] = t.strides ? t.strides[i] : compact;
    compact *= t.shape[i];
  }
  view->ptr = reinterpret_cast<std::uintptr_t>(t.data) + static_cast<std::uintptr_t>(t.byte_offset);
  return true;
}

// The same through the tensor's C-level properties and methods (torch versions without the exchange table).
bool read_by_attributes(PyObject* obj, TensorView* view) {
  bool is_cpu = false;
  if (!read_flag(obj, kIsCpu, &is_cpu) || !is_cpu) return false;
  // Layouts other than strided (sparse, mkldnn) need no test of their own: their stride() raises, below.
  PyObject* dtype = read_attr(obj, kDtype);
  if (!dtype) return false;
  Py_DECREF(dtype);  // dtype objects are singletons kept alive by the table
  view->code = -1;
  for (int i = 0; i < g.n_dtypes; ++i)
    if (g.dtypes[i] == dtype) view->code = g.codes[i];
  if (view->code < 0 || view->code >= kCodes || !g.allocators[view->code]) return false;
  int ndim = 0, stride_ndim = 0;
  if (!read_int_tuple_attr(obj, kShape, view->shape, &ndim)) return false;
  if (!read_int_tuple_attr(obj, kStride, view->stride, &stride_ndim) || stride_ndim != ndim) return false;
  view->ndim = ndim;
  return read_pointer(obj, &view->ptr);
}

// Fills view from a plain, CPU, strided tensor without the negative bit and with a dtype that has a kernel;
// false otherwise (a Python error may be pending; callers clear it). requires_grad is read only when
// want_requires_grad (grad mode on): with grad mode off nothing is recorded whatever the flag says.
bool read_tensor(PyObject* obj, TensorView* view, bool want_requires_grad) {
  PyTypeObject* type = Py_TYPE(obj);
  if (type != g.tensor_type && type != g.parameter_type) return false;
  view->obj = obj;
  if (!(g.dlpack ? read_by_dlpack(obj, view) : read_by_attributes(obj, view))) return false;
  // The negative bit (a lazy negation, e.g. z.conj().imag) is invisible in the memory and to DLPack.
  PyObject* neg = read_attr(obj, kIsNeg);
  if (!neg) return false;
  Py_DECREF(neg);
  if (neg != Py_False) return false;
  view->requires_grad = false;
  if (want_requires_grad && !read_flag(obj, kRequiresGrad, &view->requires_grad)) return false;
  view->numel = 1;
  for (int i = 0; i < view->ndim; ++i) view->numel *= view->shape[i];
  if (view->numel == 0) return false;  // empty operands: the general path has the edge cases
  const std::uintptr_t item = static_cast<std::uintptr_t>(item_size(view->code));
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

// True when nothing (mode, transform, autocast, forward AD, compile/export) needs the registered ops (or their
// casts) instead of the kernels.
bool plain_eager() {
  bool on = false;
  if (!call_is_truthy(g.dispatch_stack_len, &on) || on) return false;
  if (!call_is_truthy(g.function_mode_on, &on) || on) return false;
  if (!call_is_truthy(g.autocast_enabled, &on) || on) return false;
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

// A fresh contiguous CPU tensor of shape dims[0..ndim) and kernel code `code`, and its data pointer, or nullptr
// with the Python error set. Made by the code's allocator (template.new(*dims): measured cheaper than
// torch.empty(*dims, dtype=...), whose keyword parsing costs about as much as a tiny GEMM).
PyObject* new_output(const int64_t* dims, int ndim, int code, std::uintptr_t* ptr) {
  if (ndim < 1) {  // .new() with no sizes is a (0,) tensor, not a 0-d one: 0-d results take the general path
    PyErr_SetString(PyExc_ValueError, "fast path: 0-d result");
    return nullptr;
  }
  PyObject* args[kMaxDims];
  int made = 0;
  for (; made < ndim; ++made) {
    args[made] = PyLong_FromLongLong(dims[made]);
    if (!args[made]) break;
  }
  PyObject* out = nullptr;
  if (made == ndim) out = PyObject_Vectorcall(g.allocators[code], args, static_cast<size_t>(ndim), nullptr);
  for (int i = 0; i < made; ++i) Py_DECREF(args[i]);
  if (out && !read_pointer(out, ptr)) Py_CLEAR(out);
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

LowpType lowp_type(int code) { return code == kCodeBFloat16 ? LowpType::BFloat16 : LowpType::Float16; }

void gemm_lowp_call(int code, int64_t m, int64_t n, int64_t k, std::uintptr_t a, int64_t a_rs, int64_t a_cs,
                    std::uintptr_t b, int64_t b_rs, int64_t b_cs, std::uintptr_t c, std::uintptr_t bias,
                    int64_t bias_stride, bool step) {
  LowpGemmArgs args;
  args.type = lowp_type(code);
  args.m = m, args.n = n, args.k = k;
  args.a = reinterpret_cast<const uint16_t*>(a), args.a_rs = a_rs, args.a_cs = a_cs;
  args.b = reinterpret_cast<const uint16_t*>(b), args.b_rs = b_rs, args.b_cs = b_cs;
  args.c = reinterpret_cast<uint16_t*>(c), args.c_rs = n, args.c_cs = 1;
  args.bias = bias ? reinterpret_cast<const uint16_t*>(bias) : nullptr, args.bias_stride = bias_stride;
  args.step = step;
  gemm_lowp(args);
}

// C(m, n) contiguous = A B [+ bias] [then H], dispatched on the kernel code.
bool gemm_call(int code, int64_t m, int64_t n, int64_t k, std::uintptr_t a, int64_t a_rs, int64_t a_cs,
               std::uintptr_t b, int64_t b_rs, int64_t b_cs, std::uintptr_t c, std::uintptr_t bias,
               int64_t bias_stride, bool step) {
  return run_kernel("linneuron fast path (gemm)", [&] {
    if (code == kCodeFloat32)
      gemm_typed<float>(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, bias, bias_stride, step);
    else if (code == kCodeFloat64)
      gemm_typed<double>(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, bias, bias_stride, step);
    else
      gemm_lowp_call(code, m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, bias, bias_stride, step);
  });
}

PyObject* fallback() {
  PyErr_Clear();
  Py_RETURN_NONE;
}

// ---- recording in grad mode ------------------------------------------------------------------------------------

// (saved tensors, result) of the call being recorded on this thread, for the applier's forward to take: handing
// them over here rather than as arguments of apply keeps them out of autograd's inputs (each input costs apply
// about 0.2 µs) and spares forward the needs_input_grad reads. Two slots, not a tuple: one allocation less.
thread_local PyObject* t_saved = nullptr;
thread_local PyObject* t_result = nullptr;

// applier(*call_args) with (saved, result) pending; steals saved and result. Returns the recorded result, or
// nullptr with autograd's error set.
PyObject* apply_recording(PyObject* applier, PyObject* const* call_args, Py_ssize_t n, PyObject* saved,
                          PyObject* result) {
  if (!saved) {
    Py_DECREF(result);
    return nullptr;
  }
  PyObject *outer_saved = t_saved, *outer_result = t_result;  // a forward that itself records must not lose ours
  t_saved = saved, t_result = result;
  PyObject* recorded = PyObject_Vectorcall(applier, call_args, static_cast<size_t>(n), nullptr);
  Py_XDECREF(t_saved);  // still there if apply failed before forward took them
  Py_XDECREF(t_result);
  t_saved = outer_saved, t_result = outer_result;
  return recorded;  // errors from autograd propagate
}

// Moves the pending (saved, result) into *saved and *result (new references); false with an error if none.
bool take_pending(PyObject** saved, PyObject** result) {
  if (!t_result) {
    PyErr_SetString(PyExc_RuntimeError, "linneuron fast path: nothing to record (apply() called directly?)");
    return false;
  }
  *saved = t_saved, *result = t_result;
  t_saved = t_result = nullptr;
  return true;
}

// fast_take() -> (saved, result): what the recording entry left for the applier's forward on this thread (the
// Python forwards of functional._FastLinear/_FastStep, used where the C forwards below are not).
PyObject* fast_take(PyObject*, PyObject*) {
  PyObject *saved = nullptr, *result = nullptr;
  if (!take_pending(&saved, &result)) return nullptr;
  PyObject* pair = PyTuple_New(2);
  if (!pair) {
    Py_DECREF(saved);
    Py_DECREF(result);
    return nullptr;
  }
  PyTuple_SET_ITEM(pair, 0, saved);
  PyTuple_SET_ITEM(pair, 1, result);
  return pair;
}

// ctx.to_save = saved (what FunctionCtx.save_for_backward does), through the to_save property of torch's
// _FunctionBase resolved once (fastpath_init's to_save), else by name. Steals saved; -1 with an error set.
int set_to_save(PyObject* ctx, PyObject* saved) {
  PyObject* desc = g.to_save;
  const int rc = desc ? Py_TYPE(desc)->tp_descr_set(desc, ctx, saved) : PyObject_SetAttr(ctx, g.s_to_save, saved);
  Py_DECREF(saved);
  return rc;
}

// The C forward of the appliers: (ctx, *apply_args) -> the pending result, with ctx.to_save = the pending saved
// tuple; for the step applier also ctx.surrogate, ctx.alpha = apply_args[1:3]. The autograd.Functions' forward
// (a staticmethod) where saving is assigning ctx.to_save: no Python frame inside apply.
PyObject* record_forward(PyObject* const* args, Py_ssize_t nargs, bool step) {
  if (nargs != 4) {
    PyErr_Format(PyExc_TypeError, "linneuron fast path forward: expected 4 arguments, got %zd", nargs);
    return nullptr;
  }
  PyObject *saved = nullptr, *result = nullptr;
  if (!take_pending(&saved, &result)) return nullptr;
  if (set_to_save(args[0], saved) < 0 ||
      (step && (PyObject_SetAttr(args[0], g.s_surrogate, args[2]) < 0 ||
                PyObject_SetAttr(args[0], g.s_alpha, args[3]) < 0))) {
    Py_DECREF(result);
    return nullptr;
  }
  return result;
}

// fast_linear_forward(ctx, input, weight, bias) -> Tensor: functional._FastLinear.forward.
PyObject* fast_linear_forward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return record_forward(args, nargs, false);
}

// fast_step_forward(ctx, input, surrogate, alpha) -> Tensor: functional._FastStep.forward.
PyObject* fast_step_forward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return record_forward(args, nargs, true);
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
  // Modes and transforms first: their tensors are not to be read here at all (a read could raise or warn).
  const int grad_on = grad_mode();
  if (grad_on < 0 || !plain_eager()) return fallback();
  TensorView x, w, b;
  if (!read_tensor(args[0], &x, grad_on) || !read_tensor(args[1], &w, grad_on)) return fallback();
  const bool has_bias = bias_obj != Py_None;
  if (has_bias && !read_tensor(bias_obj, &b, grad_on)) return fallback();
  if (w.ndim != 2 || x.ndim < 1 || w.code != x.code || (has_bias && b.code != x.code)) return fallback();
  const int64_t n = w.shape[0], k = w.shape[1];
  if (x.shape[x.ndim - 1] != k || (has_bias && (b.ndim != 1 || b.shape[0] != n))) return fallback();
  int64_t m = 0, x_rs = 0;
  if (!collapse(x, x.ndim - 1, &m, &x_rs)) return fallback();
  // grad mode on and an operand requiring grad: autograd records the call
  const bool record = x.requires_grad || w.requires_grad || (has_bias && b.requires_grad);
  if (record && (step || g.linear_apply == Py_None)) return fallback();
  int64_t dims[kMaxDims];
  for (int i = 0; i < x.ndim - 1; ++i) dims[i] = x.shape[i];
  dims[x.ndim - 1] = n;
  std::uintptr_t c = 0;
  PyObject* out = new_output(dims, x.ndim, x.code, &c);
  if (!out) return fallback();
  // B(k, n) = W(n, k): b_rs = w_cs, b_cs = w_rs.
  if (!gemm_call(x.code, m, n, k, x.ptr, x_rs, x.stride[x.ndim - 1], w.ptr, w.stride[1], w.stride[0], c,
                 has_bias ? b.ptr : 0, has_bias ? b.stride[0] : 0, step)) {
    Py_DECREF(out);
    return nullptr;
  }
  if (!record) return out;
  // Saved for backward: X for dW, W for dX (what needs_input_grad will say inside apply).
  PyObject* saved = PyTuple_Pack(2, w.requires_grad ? args[0] : Py_None, x.requires_grad ? args[1] : Py_None);
  PyObject* call_args[3] = {args[0], args[1], bias_obj};
  return apply_recording(g.linear_apply, call_args, 3, saved, out);
}

// The whole of view as one strided run of numel elements (rows 1), or false when its dims do not collapse.
bool as_run(const TensorView& view, int64_t* stride) {
  int64_t count = 0;
  return collapse(view, view.ndim, &count, stride);
}

// out[count] = H(z[count * z_stride]) on the kernel code's element type.
void step_run(int code, int64_t count, std::uintptr_t z, int64_t z_stride, std::uintptr_t out) {
  if (code == kCodeFloat32)
    step_forward(1, count, reinterpret_cast<const float*>(z), 0, z_stride, reinterpret_cast<float*>(out), count, 1);
  else if (code == kCodeFloat64)
    step_forward(1, count, reinterpret_cast<const double*>(z), 0, z_stride, reinterpret_cast<double*>(out), count, 1);
  else
    step_forward_lowp(lowp_type(code), 1, count, reinterpret_cast<const uint16_t*>(z), 0, z_stride,
                      reinterpret_cast<uint16_t*>(out), count, 1);
}

// fast_step(input, surrogate, alpha) -> Tensor | None: H(input); with a gradient to record, via the step applier.
PyObject* fast_step(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!g.ready || nargs != 3) return fallback();
  const int grad_on = grad_mode();
  if (grad_on < 0 || !plain_eager()) return fallback();
  TensorView z;
  if (!read_tensor(args[0], &z, grad_on)) return fallback();
  int64_t z_stride = 0;
  if (!as_run(z, &z_stride)) return fallback();
  const bool record = z.requires_grad;
  if (record && g.step_apply == Py_None) return fallback();
  std::uintptr_t c = 0;
  PyObject* out = new_output(z.shape, z.ndim, z.code, &c);
  if (!out) return fallback();
  const int64_t count = z.numel;
  if (!run_kernel("linneuron fast path (step)", [&] { step_run(z.code, count, z.ptr, z_stride, c); })) {
    Py_DECREF(out);
    return nullptr;
  }
  if (!record) return out;
  return apply_recording(g.step_apply, args, 3, PyTuple_Pack(1, args[0]), out);
}

// Reads the optional tensor arg (None allowed when !needed); false means fall back.
bool read_optional(PyObject* obj, bool needed, TensorView* view) {
  if (!needed) return true;
  return obj != Py_None && read_tensor(obj, view, false);
}

// db(n) = column sums of dY on the kernel code's element type.
void bias_grad_run(int code, int64_t m, int64_t n, std::uintptr_t dy, int64_t dy_rs, int64_t dy_cs,
                   std::uintptr_t db) {
  if (code == kCodeFloat32)
    bias_grad(m, n, reinterpret_cast<const float*>(dy), dy_rs, dy_cs, reinterpret_cast<float*>(db), 1, false);
  else if (code == kCodeFloat64)
    bias_grad(m, n, reinterpret_cast<const double*>(dy), dy_rs, dy_cs, reinterpret_cast<double*>(db), 1, false);
  else
    bias_grad_lowp(lowp_type(code), m, n, reinterpret_cast<const uint16_t*>(dy), dy_rs, dy_cs,
                   reinterpret_cast<uint16_t*>(db), 1, false);
}

// fast_linear_backward(grad_output, input, weight, need_input, need_weight, need_bias) -> (dX, dW, db) | None.
// The products of Y = X Wᵀ + b's backward, straight on the kernels: dX = dY W, dW = dYᵀ X, db = column sums of dY.
// Only for a backward that records nothing (grad mode off); create_graph=True falls back to the formulas.
PyObject* fast_linear_backward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!g.ready || nargs != 6) return fallback();
  const bool need_x = args[3] == Py_True, need_w = args[4] == Py_True, need_b = args[5] == Py_True;
  if (grad_mode() != 0 || !plain_eager()) return fallback();
  TensorView dy, x, w;
  if (!read_tensor(args[0], &dy, false) || !read_optional(args[1], need_w, &x) ||
      !read_optional(args[2], need_x, &w))
    return fallback();
  if (dy.ndim < 1) return fallback();
  int64_t m = 0, dy_rs = 0;
  if (!collapse(dy, dy.ndim - 1, &m, &dy_rs)) return fallback();
  const int64_t n = dy.shape[dy.ndim - 1], dy_cs = dy.stride[dy.ndim - 1];
  int64_t x_rs = 0, k = 0;
  if (need_x && (w.ndim != 2 || w.code != dy.code || w.shape[0] != n)) return fallback();
  if (need_w) {
    int64_t x_rows = 0;
    if (x.ndim < 1 || x.code != dy.code || !collapse(x, x.ndim - 1, &x_rows, &x_rs) || x_rows != m)
      return fallback();
    k = x.shape[x.ndim - 1];
    if (need_x && w.shape[1] != k) return fallback();
  }
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
    PyObject* out = new_output(dims, ndim, dy.code, c);
    if (!out) return false;
    Py_DECREF(PyTuple_GET_ITEM(result, slot));
    PyTuple_SET_ITEM(result, slot, out);
    return true;
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
    if (!run_kernel("linneuron fast path (bias_grad)", [&] { bias_grad_run(dy.code, m, n, dy.ptr, dy_rs, dy_cs, c); }))
      return fail();
  }
  return result;
}

// grad_z[count] = grad_y * s'(z) on the kernel code's element type.
void step_backward_run(int code, int64_t count, std::uintptr_t z, int64_t z_stride, std::uintptr_t gy,
                       int64_t gy_stride, std::uintptr_t out, Surrogate kind, double alpha) {
  if (code == kCodeFloat32)
    step_backward(1, count, reinterpret_cast<const float*>(z), 0, z_stride, reinterpret_cast<const float*>(gy), 0,
                  gy_stride, reinterpret_cast<float*>(out), count, 1, kind, static_cast<float>(alpha));
  else if (code == kCodeFloat64)
    step_backward(1, count, reinterpret_cast<const double*>(z), 0, z_stride, reinterpret_cast<const double*>(gy), 0,
                  gy_stride, reinterpret_cast<double*>(out), count, 1, kind, alpha);
  else
    step_backward_lowp(lowp_type(code), 1, count, reinterpret_cast<const uint16_t*>(z), 0, z_stride,
                       reinterpret_cast<const uint16_t*>(gy), 0, gy_stride, reinterpret_cast<uint16_t*>(out), count, 1,
                       kind, static_cast<float>(alpha));
}

// fast_step_backward(grad_output, input, surrogate, alpha) -> Tensor | None: grad_output * s'(input), grad mode off.
PyObject* fast_step_backward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!g.ready || nargs != 4) return fallback();
  if (grad_mode() != 0 || !plain_eager()) return fallback();
  TensorView gy, z;
  if (!read_tensor(args[0], &gy, false) || !read_tensor(args[1], &z, false)) return fallback();
  if (gy.code != z.code || gy.ndim != z.ndim) return fallback();
  for (int i = 0; i < z.ndim; ++i)
    if (gy.shape[i] != z.shape[i]) return fallback();
  const long surrogate = PyLong_AsLong(args[2]);
  const double alpha = PyFloat_AsDouble(args[3]);
  if (PyErr_Occurred() || surrogate < 0 || surrogate > 3) return fallback();
  int64_t z_stride = 0, gy_stride = 0;
  if (!as_run(z, &z_stride) || !as_run(gy, &gy_stride)) return fallback();
  std::uintptr_t c = 0;
  PyObject* out = new_output(z.shape, z.ndim, z.code, &c);
  if (!out) return fallback();
  const int64_t count = z.numel;
  const auto kind = static_cast<Surrogate>(surrogate);
  if (!run_kernel("linneuron fast path (step_backward)",
                  [&] { step_backward_run(z.code, count, z.ptr, z_stride, gy.ptr, gy_stride, c, kind, alpha); })) {
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

// Takes descriptors[name] (the attribute as torch.Tensor resolves it, from inspect.getattr_static), checked to be a C
// property or method.
bool take_descriptor(PyObject* descriptors, int index, State* s) {
  PyObject* desc = PyDict_GetItemString(descriptors, kDescriptorNames[index]);  // borrowed
  const bool method = desc && Py_IS_TYPE(desc, &PyMethodDescr_Type);
  const bool property = desc && Py_IS_TYPE(desc, &PyGetSetDescr_Type);
  if (!method && !property) {
    PyErr_Format(PyExc_TypeError, "fastpath_init: descriptors[%s] is not a C property or method",
                 kDescriptorNames[index]);
    return false;
  }
  s->descriptors[index] = keep(desc);
  s->descriptor_is_method[index] = method;
  return true;
}

// fastpath_init(config: dict) -> None. Keys: tensor_type, parameter_type (or None: Parameters fall back; the
// parameter type must resolve every descriptor to the same object as tensor_type), descriptors (name -> the C
// property or method of tensor_type: is_cpu, dtype, requires_grad, shape, stride, data_ptr, is_neg), dtypes (a
// list of (dtype, kernel code, allocator) triples, the allocator called with the sizes), dlpack_api (torch's
// __dlpack_c_exchange_api__ capsule, or None: tensors are read by their attributes), grad_enabled,
// dispatch_stack_len, function_mode_on, functorch_peek (or None), forward_ad, compiler (or None), linear_apply,
// step_apply (either may be None: then grad mode falls back), autocast_enabled; optional: to_save (torch's
// _FunctionBase.to_save property, for the C forwards; None or absent: they set ctx.to_save by name).
PyObject* fastpath_init(PyObject*, PyObject* config) {
  if (!PyDict_Check(config)) {
    PyErr_SetString(PyExc_TypeError, "fastpath_init(): expected a dict");
    return nullptr;
  }
  State s;
  const char* keys[] = {"tensor_type",        "parameter_type",   "dtypes",         "grad_enabled",
                        "dispatch_stack_len", "function_mode_on", "functorch_peek", "forward_ad",
                        "compiler",           "linear_apply",     "step_apply",     "autocast_enabled",
                        "dlpack_api",         "descriptors"};
  constexpr int kKeys = sizeof(keys) / sizeof(keys[0]);
  PyObject* v[kKeys];
  for (int i = 0; i < kKeys; ++i)
    if (!(v[i] = get_item(config, keys[i]))) return nullptr;
  if (!PyType_Check(v[0]) || (v[1] != Py_None && !PyType_Check(v[1]))) {
    PyErr_SetString(PyExc_TypeError, "fastpath_init(): tensor_type and parameter_type must be types");
    return nullptr;
  }
  if (!PyDict_Check(v[13])) {
    PyErr_SetString(PyExc_TypeError, "fastpath_init(): descriptors must be a dict");
    return nullptr;
  }
  s.tensor_type = reinterpret_cast<PyTypeObject*>(keep(v[0]));
  s.parameter_type = reinterpret_cast<PyTypeObject*>(keep(v[1] == Py_None ? nullptr : v[1]));
  for (int i = 0; i < kDescriptors; ++i)
    if (!take_descriptor(v[13], i, &s)) return nullptr;
  PyObject* dtypes = PySequence_Fast(v[2], "fastpath_init(): dtypes must be a sequence");
  if (!dtypes) return nullptr;
  const Py_ssize_t count = PySequence_Fast_GET_SIZE(dtypes);
  if (count > kMaxDtypes) {
    Py_DECREF(dtypes);
    PyErr_SetString(PyExc_ValueError, "fastpath_init(): too many dtypes");
    return nullptr;
  }
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* triple = PySequence_Fast_GET_ITEM(dtypes, i);
    PyObject *dtype = nullptr, *code = nullptr, *allocate = nullptr;
    if (!PyArg_ParseTuple(triple, "OOO", &dtype, &code, &allocate)) {
      Py_DECREF(dtypes);
      return nullptr;
    }
    const long c = PyLong_AsLong(code);
    if (c == -1 && PyErr_Occurred()) {
      Py_DECREF(dtypes);
      return nullptr;
    }
    s.dtypes[i] = keep(dtype);
    s.codes[i] = static_cast<int>(c);
    if (c >= 0 && c < kCodes) s.allocators[c] = keep(allocate);  // codes without a kernel here fall back
  }
  Py_DECREF(dtypes);
  s.n_dtypes = static_cast<int>(count);
  if (v[12] != Py_None) {
    auto* api = static_cast<const dlpack::ExchangeApi*>(PyCapsule_GetPointer(v[12], "dlpack_exchange_api"));
    if (!api) return nullptr;
    // Another major version may lay the table out differently: then read by attributes.
    if (api->header.version.major == dlpack::kMajorVersion && api->dltensor_from_py_object_no_sync) s.dlpack = api;
  }
  s.grad_enabled = keep(v[3]);
  s.dispatch_stack_len = keep(v[4]);
  s.function_mode_on = keep(v[5]);
  s.functorch_peek = keep(v[6]);
  s.forward_ad = keep(v[7]);
  s.compiler = keep(v[8]);
  s.linear_apply = keep(v[9]);
  s.step_apply = keep(v[10]);
  s.autocast_enabled = keep(v[11]);
  // Optional: to_save, the C property the C forwards set (None or absent: they set ctx.to_save by name).
  PyObject* to_save = PyDict_GetItemString(config, "to_save");  // borrowed
  if (to_save && to_save != Py_None) {
    if (!Py_IS_TYPE(to_save, &PyGetSetDescr_Type) || !Py_TYPE(to_save)->tp_descr_set) {
      PyErr_SetString(PyExc_TypeError, "fastpath_init(): to_save must be a C property");
      return nullptr;
    }
    s.to_save = keep(to_save);
  }
  s.s_current_level = PyUnicode_InternFromString("_current_level");
  s.s_is_compiling_flag = PyUnicode_InternFromString("_is_compiling_flag");
  s.s_to_save = PyUnicode_InternFromString("to_save");
  s.s_surrogate = PyUnicode_InternFromString("surrogate");
  s.s_alpha = PyUnicode_InternFromString("alpha");
  if (PyErr_Occurred()) return nullptr;
  s.ready = true;
  g = s;  // the previous state's references (a re-init) are kept alive on purpose: other threads may read them
  Py_RETURN_NONE;
}

// fastpath_reader() -> "dlpack" | "attributes" | None: how tensors are read (None before fastpath_init).
PyObject* fastpath_reader(PyObject*, PyObject*) {
  if (!g.ready) Py_RETURN_NONE;
  return PyUnicode_FromString(g.dlpack ? "dlpack" : "attributes");
}

PyMethodDef kMethods[] = {
    {"fastpath_init", reinterpret_cast<PyCFunction>(fastpath_init), METH_O,
     "Hand the fast path torch's types, dtypes and probes (python/linneuron/_fastpath.py calls this once)."},
    {"fastpath_reader", fastpath_reader, METH_NOARGS,
     "How the fast path reads tensors: 'dlpack' (torch's C exchange table), 'attributes', or None before init."},
    {"fast_take", fast_take, METH_NOARGS,
     "fast_take() -> (saved, result): for the grad-mode appliers' forward (functional._FastLinear, _FastStep)."},
    {"fast_linear_forward", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_linear_forward)),
     METH_FASTCALL, "fast_linear_forward(ctx, input, weight, bias) -> Tensor: functional._FastLinear's forward."},
    {"fast_step_forward", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_step_forward)),
     METH_FASTCALL, "fast_step_forward(ctx, input, surrogate, alpha) -> Tensor: functional._FastStep's forward."},
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
