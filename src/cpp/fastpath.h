// The eager fast path of linneuron.functional (fastpath.cpp): CPython-level entries added to the _core module.
#pragma once

#include <Python.h>

namespace linneuron {

// Adds fastpath_init, fast_linear, fast_step, fast_linear_backward and fast_step_backward to module; false with
// a Python error set on failure.
bool add_fastpath(PyObject* module);

}  // namespace linneuron
