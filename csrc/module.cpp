// fastscarlet._C: the native core. Each subsystem registers its bindings from its own source file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
    m.doc() = "fastscarlet native core (C++17, pybind11)";
    m.attr("__version__") = "0.1.0";
}
