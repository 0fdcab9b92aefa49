// fastscarlet._C: the native core. Each subsystem registers its bindings from its own source file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_nds(py::module_& m);  // nds_bindings.cpp: NSGA-II core, as fastscarlet._C.nds

PYBIND11_MODULE(_C, m) {
    m.doc() = "fastscarlet native core (C++17, pybind11)";
    m.attr("__version__") = "0.1.0";
    bind_nds(m);
}
