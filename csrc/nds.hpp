// The NSGA-II core: non-dominated sorting, crowding distance, survival, binary tournament and
// hypervolume. Minimization throughout; callers flip the sign of maximized objectives.
//
// These functions take no Python objects and never touch the interpreter, so the bindings
// (nds_bindings.cpp) run them with the GIL released. Inputs are validated there, at the boundary:
// everything here assumes finite values and in-range indices.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastscarlet::nds {

// A read-only view of an n x m matrix with arbitrary byte strides: a numpy array as it comes,
// so float32 and float64 inputs, C or Fortran order or sliced, are read in place without a copy.
template <typename T>
struct MatrixView {
    const char* data;
    std::ptrdiff_t n;           // rows (points)
    std::ptrdiff_t m;           // columns (objectives)
    std::ptrdiff_t row_stride;  // bytes
    std::ptrdiff_t col_stride;  // bytes

    T operator()(std::ptrdiff_t i, std::ptrdiff_t j) const {
        return *reinterpret_cast<const T*>(data + i * row_stride + j * col_stride);
    }
};

// Front index of every row of F (0 = not dominated by any row). a dominates b iff a <= b in every
// objective and a < b in at least one; equal rows share a front.
//   m == 2: lexicographic sort + Jensen's sweep, O(n log n).
//   m == 3: one pass with a staircase per front (typical inputs), else
//   m >= 3: Jensen-Fortin-Buzdalov divide and conquer, O(n log^(m-1) n).
// front_staircases = false skips the m == 3 pass, so tests can reach the divide and conquer.
template <typename T>
void non_dominated_rank(const MatrixView<T>& F, std::int64_t* rank, bool front_staircases = true);

// NSGA-II crowding distance of every row within its front (pymoo's "cd" convention, see
// nds_select.cpp). front[i] >= 0 is row i's front label; out has n entries.
template <typename T>
void crowding_distance(const MatrixView<T>& F, const std::int64_t* front, double* out);

// NSGA-II survival: the n_keep rows kept, whole fronts first, the front that does not fit whole
// cut by decreasing crowding distance (ties: lower row index). Writes n_keep row indices, ordered
// by front, within a whole front by index, within the cut front by decreasing crowding distance.
template <typename T>
void nsga2_select(const MatrixView<T>& F, std::ptrdiff_t n_keep, std::int64_t* out);

// Binary tournament on (front, crowding): for each pair (a, b) = candidates[2t], candidates[2t+1]
// the winner has the lower front, then the larger crowding distance, then it is a.
void binary_tournament(const std::int64_t* front, const double* crowding,
                       const std::int64_t* candidates, std::ptrdiff_t n_pairs,
                       std::int64_t* winners);

// Volume of the region dominated by the rows of F and bounded by ref (m in {1, 2, 3}). Rows that
// do not strictly dominate ref in every objective add nothing. 2-D: sort + sweep; 3-D: sweep in
// the last objective over a balanced-tree staircase of the first two, both O(n log n).
template <typename T>
double hypervolume(const MatrixView<T>& F, const double* ref);

}  // namespace fastscarlet::nds
