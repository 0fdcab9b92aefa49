// Python bindings of the NSGA-II core as fastscarlet._C.nds.
//
// The boundary: objective matrices are taken as numpy float32 or float64 arrays of any strides
// and read in place (no copy); they must be 2-D and finite, and a violation raises ValueError
// naming the argument. Everything after validation runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "nds.hpp"

namespace py = pybind11;

namespace fastscarlet::nds {
namespace {

// Rows are addressed with 32-bit positions inside the sort.
constexpr std::ptrdiff_t kMaxRows = std::numeric_limits<std::int32_t>::max();

enum class Dtype { f32, f64 };

Dtype check_matrix(const py::array& F, const char* name) {
    if (F.ndim() != 2)
        throw py::value_error(std::string(name) +
                              " must be a 2-D array (N points x M objectives), got " +
                              std::to_string(F.ndim()) + "-D");
    if (F.shape(0) > kMaxRows)
        throw py::value_error(std::string(name) + " has " + std::to_string(F.shape(0)) +
                              " rows; at most 2**31 - 1 are supported");
    if (F.dtype().is(py::dtype::of<double>())) return Dtype::f64;
    if (F.dtype().is(py::dtype::of<float>())) return Dtype::f32;
    throw py::type_error(std::string(name) + " must be a float64 or float32 array, got dtype " +
                         std::string(py::str(F.dtype())) + "; convert it with np.asarray(" + name +
                         ", dtype=np.float64)");
}

template <typename T>
MatrixView<T> view(const py::array& F) {
    return {static_cast<const char*>(F.data()), F.shape(0), F.shape(1), F.strides(0), F.strides(1)};
}

// Position of the first non-finite entry, or {-1, -1}.
template <typename T>
std::pair<std::ptrdiff_t, std::ptrdiff_t> first_non_finite(const MatrixView<T>& F) {
    for (std::ptrdiff_t i = 0; i < F.n; ++i)
        for (std::ptrdiff_t j = 0; j < F.m; ++j)
            if (!std::isfinite(F(i, j))) return {i, j};
    return {-1, -1};
}

[[noreturn]] void throw_non_finite(const char* name, std::pair<std::ptrdiff_t, std::ptrdiff_t> at,
                                   double value) {
    throw py::value_error(std::string(name) + " must be finite, but " + name + "[" +
                          std::to_string(at.first) + ", " + std::to_string(at.second) + "] is " +
                          std::string(py::str(py::float_(value))));
}

// Runs body(view) with the GIL released after the finite check; throws if F is not finite.
template <typename T, typename Body>
void with_finite(const py::array& F, const char* name, Body&& body) {
    const MatrixView<T> v = view<T>(F);
    std::pair<std::ptrdiff_t, std::ptrdiff_t> bad;
    {
        py::gil_scoped_release release;
        bad = first_non_finite(v);
        if (bad.first < 0) body(v);
    }
    if (bad.first >= 0) throw_non_finite(name, bad, double(v(bad.first, bad.second)));
}

template <typename Body>
void dispatch(const py::array& F, const char* name, Body&& body) {
    if (check_matrix(F, name) == Dtype::f64)
        with_finite<double>(F, name, body);
    else
        with_finite<float>(F, name, body);
}

using IndexArray = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

void check_labels(const IndexArray& fronts, std::ptrdiff_t n, const char* name) {
    if (fronts.ndim() != 1 || fronts.shape(0) != n)
        throw py::value_error(std::string(name) +
                              " must be a 1-D array with one entry per row of F (" +
                              std::to_string(n) + ")");
    const std::int64_t* f = fronts.data();
    for (std::ptrdiff_t i = 0; i < n; ++i)
        if (f[i] < 0)
            throw py::value_error(std::string(name) + " must be >= 0, but " + name + "[" +
                                  std::to_string(i) + "] is " + std::to_string(f[i]));
}

py::array_t<std::int64_t> sort_ranks(const py::array& F, bool front_staircases) {
    check_matrix(F, "F");
    py::array_t<std::int64_t> rank(F.shape(0));
    std::int64_t* out = rank.mutable_data();
    dispatch(F, "F", [out, front_staircases](const auto& v) {
        non_dominated_rank(v, out, front_staircases);
    });
    return rank;
}

py::array_t<std::int64_t> py_non_dominated_sort(const py::array& F) { return sort_ranks(F, true); }

py::array_t<std::int64_t> py_non_dominated_sort_dc(const py::array& F) {
    return sort_ranks(F, false);
}

py::array_t<double> py_crowding_distance(const py::array& F, const IndexArray& fronts) {
    check_matrix(F, "F");
    check_labels(fronts, F.shape(0), "fronts");
    py::array_t<double> cd(F.shape(0));
    double* out = cd.mutable_data();
    const std::int64_t* f = fronts.data();
    dispatch(F, "F", [out, f](const auto& v) { crowding_distance(v, f, out); });
    return cd;
}

py::array_t<std::int64_t> py_select(const py::array& F, std::ptrdiff_t n) {
    check_matrix(F, "F");
    if (n < 0 || n > F.shape(0))
        throw py::value_error("n must be in [0, " + std::to_string(F.shape(0)) +
                              "] (the rows of F), got " + std::to_string(n));
    py::array_t<std::int64_t> kept(n);
    std::int64_t* out = kept.mutable_data();
    dispatch(F, "F", [out, n](const auto& v) { nsga2_select(v, n, out); });
    return kept;
}

py::array_t<std::int64_t> py_binary_tournament(const IndexArray& fronts,
                                               const DoubleArray& crowding,
                                               const IndexArray& candidates) {
    if (fronts.ndim() != 1) throw py::value_error("fronts must be a 1-D array");
    const std::ptrdiff_t n = fronts.shape(0);
    check_labels(fronts, n, "fronts");
    if (crowding.ndim() != 1 || crowding.shape(0) != n)
        throw py::value_error("crowding must be a 1-D array with one entry per entry of fronts (" +
                              std::to_string(n) + ")");
    for (std::ptrdiff_t i = 0; i < n; ++i)
        if (std::isnan(crowding.data()[i]))
            throw py::value_error("crowding must not be NaN, but crowding[" + std::to_string(i) +
                                  "] is");
    if (candidates.ndim() != 2 || candidates.shape(1) != 2)
        throw py::value_error("candidates must be a (K, 2) array of row pairs");
    const std::ptrdiff_t k = candidates.shape(0);
    const std::int64_t* c = candidates.data();
    for (std::ptrdiff_t t = 0; t < 2 * k; ++t)
        if (c[t] < 0 || c[t] >= n)
            throw py::value_error("candidates must index rows in [0, " + std::to_string(n) +
                                  "), but candidates[" + std::to_string(t / 2) + ", " +
                                  std::to_string(t % 2) + "] is " + std::to_string(c[t]));
    py::array_t<std::int64_t> winners(k);
    std::int64_t* out = winners.mutable_data();
    const std::int64_t* f = fronts.data();
    const double* cd = crowding.data();
    {
        py::gil_scoped_release release;
        binary_tournament(f, cd, c, k, out);
    }
    return winners;
}

double py_hypervolume(const py::array& F, const DoubleArray& ref) {
    check_matrix(F, "F");
    const std::ptrdiff_t m = F.shape(1);
    if (m < 1 || m > 3)
        throw py::value_error("F must have 1, 2 or 3 objectives for hypervolume, got " +
                              std::to_string(m));
    if (ref.ndim() != 1 || ref.shape(0) != m)
        throw py::value_error("ref must be a 1-D array with one entry per objective (" +
                              std::to_string(m) + ")");
    for (std::ptrdiff_t j = 0; j < m; ++j)
        if (!std::isfinite(ref.data()[j]))
            throw py::value_error("ref must be finite, but ref[" + std::to_string(j) + "] is " +
                                  std::string(py::str(py::float_(ref.data()[j]))));
    double volume = 0.0;
    const double* r = ref.data();
    dispatch(F, "F", [&volume, r](const auto& v) { volume = hypervolume(v, r); });
    return volume;
}

}  // namespace
}  // namespace fastscarlet::nds

void bind_nds(py::module_& m) {
    using namespace fastscarlet::nds;
    py::module_ nds = m.def_submodule(
        "nds", "NSGA-II core: non-dominated sorting, crowding, survival, hypervolume");
    nds.def("non_dominated_sort", &py_non_dominated_sort, py::arg("F"),
            "Front index of every row of F (N, M) -> int64 (N,); 0 = first front. Minimization.");
    nds.def("_non_dominated_sort_divide_and_conquer", &py_non_dominated_sort_dc, py::arg("F"),
            "non_dominated_sort without the M = 3 front-staircase pass (for tests).");
    nds.def("crowding_distance", &py_crowding_distance, py::arg("F"), py::arg("fronts"),
            "Crowding distance of every row of F within its front (pymoo 'cd') -> float64 (N,).");
    nds.def("select", &py_select, py::arg("F"), py::arg("n"),
            "NSGA-II survival: indices of the n rows kept (by front, then crowding) -> int64 "
            "(n,).");
    nds.def("binary_tournament", &py_binary_tournament, py::arg("fronts"), py::arg("crowding"),
            py::arg("candidates"),
            "Winner of each pair of candidates (K, 2): lower front, then larger crowding, then the "
            "first -> int64 (K,).");
    nds.def("hypervolume", &py_hypervolume, py::arg("F"), py::arg("ref"),
            "Volume dominated by the rows of F (N, M), M in {1, 2, 3}, bounded by ref (M,).");
}
