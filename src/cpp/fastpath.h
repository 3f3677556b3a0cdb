// The eager fast path of linneuron.functional (fastpath.cpp): CPython-level entries added to the _core module.
#pragma once

#include <Python.h>

namespace linneuron {

// Adds fastpath_init, fastpath_reader, fast_linear, fast_step, their backwards, fast_take and the appliers' C
// forwards (fast_linear_forward, fast_step_forward) to module; false with a Python error set on failure.
bool add_fastpath(PyObject* module);

}  // namespace linneuron
