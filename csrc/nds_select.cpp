// NSGA-II selection: crowding distance, survival of n of N, binary tournament.
//
// Crowding distance follows pymoo's "cd" (pymoo.operators.survival.rank_and_crowding.metrics.
// calc_crowding_distance, no duplicate filtering), so that rankings agree with pymoo's NSGA-II:
//   * fronts of 1 or 2 points: +inf for every point;
//   * otherwise, per objective j, the front's points are sorted by f_j, ties by row index (a stable
//     sort of the rows in index order); with span = max f_j - min f_j,
//       span == 0          -> the objective adds 0 to every point (boundaries included),
//       first / last      -> +inf,
//       interior point i  -> (f_j[i] - f_j[prev]) / span + (f_j[next] - f_j[i]) / span;
//   * cd = (sum over objectives) / m.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "nds.hpp"

namespace fastscarlet::nds {
namespace {

// Crowding distance of the rows `rows` (ascending row indices, one front) into cd[0..s).
template <typename T>
void crowding_of_front(const MatrixView<T>& F, const std::int64_t* rows, std::size_t s, double* cd,
                       std::vector<std::pair<double, std::uint32_t>>& scratch) {
    constexpr double inf = std::numeric_limits<double>::infinity();
    if (s <= 2) {
        std::fill(cd, cd + s, inf);
        return;
    }
    std::fill(cd, cd + s, 0.0);
    scratch.resize(s);
    for (std::ptrdiff_t j = 0; j < F.m; ++j) {
        for (std::size_t t = 0; t < s; ++t) scratch[t] = {double(F(rows[t], j)), std::uint32_t(t)};
        // (value, position) pairs are distinct, so this is the stable order by value.
        std::sort(scratch.begin(), scratch.end());
        const double span = scratch[s - 1].first - scratch[0].first;
        if (span == 0.0) continue;
        cd[scratch[0].second] += inf;
        cd[scratch[s - 1].second] += inf;
        for (std::size_t t = 1; t + 1 < s; ++t) {
            const double v = scratch[t].first;
            cd[scratch[t].second] +=
                (v - scratch[t - 1].first) / span + (scratch[t + 1].first - v) / span;
        }
    }
    const double m = double(F.m);
    for (std::size_t t = 0; t < s; ++t) cd[t] /= m;
}

}  // namespace

template <typename T>
void crowding_distance(const MatrixView<T>& F, const std::int64_t* front, double* out) {
    const std::size_t n = std::size_t(F.n);
    if (n == 0) return;
    // Rows grouped by front label, ascending index within a group.
    std::vector<std::pair<std::int64_t, std::int64_t>> by_front(n);
    for (std::size_t i = 0; i < n; ++i) by_front[i] = {front[i], std::int64_t(i)};
    std::sort(by_front.begin(), by_front.end());
    std::vector<std::int64_t> rows;
    std::vector<double> cd;
    std::vector<std::pair<double, std::uint32_t>> scratch;
    std::size_t a = 0;
    while (a < n) {
        std::size_t b = a + 1;
        while (b < n && by_front[b].first == by_front[a].first) ++b;
        rows.resize(b - a);
        cd.resize(b - a);
        for (std::size_t t = a; t < b; ++t) rows[t - a] = by_front[t].second;
        crowding_of_front(F, rows.data(), b - a, cd.data(), scratch);
        for (std::size_t t = 0; t < b - a; ++t) out[rows[t]] = cd[t];
        a = b;
    }
}

template <typename T>
void nsga2_select(const MatrixView<T>& F, std::ptrdiff_t n_keep, std::int64_t* out) {
    const std::ptrdiff_t n = F.n;
    if (n_keep <= 0) return;
    std::vector<std::int64_t> rank(static_cast<std::size_t>(n));
    non_dominated_rank(F, rank.data());
    const std::int64_t n_fronts = *std::max_element(rank.begin(), rank.end()) + 1;
    // Counting sort of rows by front: whole fronts in index order.
    std::vector<std::ptrdiff_t> start(static_cast<std::size_t>(n_fronts) + 1, 0);
    for (const std::int64_t r : rank) ++start[std::size_t(r) + 1];
    for (std::size_t f = 0; f < std::size_t(n_fronts); ++f) start[f + 1] += start[f];
    std::vector<std::int64_t> rows(static_cast<std::size_t>(n));
    {
        std::vector<std::ptrdiff_t> next(start.begin(), start.end() - 1);
        for (std::ptrdiff_t i = 0; i < n; ++i)
            rows[std::size_t(next[std::size_t(rank[std::size_t(i)])]++)] = i;
    }
    // The front that does not fit whole.
    std::size_t cut = 0;
    while (start[cut + 1] < n_keep) ++cut;
    const std::ptrdiff_t whole = start[cut];
    std::copy(rows.begin(), rows.begin() + whole, out);
    const std::ptrdiff_t need = n_keep - whole;
    const std::size_t s = std::size_t(start[cut + 1] - start[cut]);
    const std::int64_t* members = rows.data() + whole;
    if (std::size_t(need) == s) {
        std::copy(members, members + s, out + whole);
        return;
    }
    std::vector<double> cd(s);
    std::vector<std::pair<double, std::uint32_t>> scratch;
    crowding_of_front(F, members, s, cd.data(), scratch);
    std::vector<std::uint32_t> order(s);
    for (std::size_t t = 0; t < s; ++t) order[t] = std::uint32_t(t);
    // Decreasing crowding distance, ties by lower row index (members ascend, so by position).
    std::partial_sort(order.begin(), order.begin() + need, order.end(),
                      [&cd](std::uint32_t a, std::uint32_t b) {
                          return cd[a] > cd[b] || (cd[a] == cd[b] && a < b);
                      });
    for (std::ptrdiff_t t = 0; t < need; ++t) out[whole + t] = members[order[std::size_t(t)]];
}

void binary_tournament(const std::int64_t* front, const double* crowding,
                       const std::int64_t* candidates, std::ptrdiff_t n_pairs,
                       std::int64_t* winners) {
    for (std::ptrdiff_t t = 0; t < n_pairs; ++t) {
        const std::int64_t a = candidates[2 * t], b = candidates[2 * t + 1];
        bool b_wins = front[b] < front[a] || (front[b] == front[a] && crowding[b] > crowding[a]);
        winners[t] = b_wins ? b : a;
    }
}

template void crowding_distance<float>(const MatrixView<float>&, const std::int64_t*, double*);
template void crowding_distance<double>(const MatrixView<double>&, const std::int64_t*, double*);
template void nsga2_select<float>(const MatrixView<float>&, std::ptrdiff_t, std::int64_t*);
template void nsga2_select<double>(const MatrixView<double>&, std::ptrdiff_t, std::int64_t*);

}  // namespace fastscarlet::nds
