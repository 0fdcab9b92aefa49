// Hypervolume of a point set with respect to a reference point, m in {1, 2, 3}, minimization.
//
// Only points that strictly dominate ref contribute (moocore's convention); the others are
// dropped first. All arithmetic is in double, whatever the input dtype.
//   2-D: sort by f0 and sweep, keeping the lowest f1 so far: O(n log n).
//   3-D: sweep by ascending f2; the region dominated so far, projected on (f0, f1), is a staircase
//        kept in a balanced tree (std::set) together with its area, so each point costs one
//        search plus the removal of the staircase points it dominates: O(n log n).
//        volume = sum_i area_after_point_i * (f2[i+1] - f2[i]), with f2[n] = ref[2].
#include <algorithm>
#include <cstdint>
#include <memory_resource>
#include <set>
#include <vector>

#include "nds.hpp"

namespace fastscarlet::nds {
namespace {

struct Point2 {
    double x, y;
};
struct Point3 {
    double x, y, z;
};

double hv2d(std::vector<Point2>& pts, double rx, double ry) {
    std::sort(pts.begin(), pts.end(), [](const Point2& a, const Point2& b) {
        return a.x < b.x || (a.x == b.x && a.y < b.y);
    });
    double area = 0.0, y_min = ry;
    for (const Point2& p : pts) {
        if (p.y < y_min) {
            area += (rx - p.x) * (y_min - p.y);
            y_min = p.y;
        }
    }
    return area;
}

// The 2-D staircase of a growing point set: points in ascending x (hence descending y), none
// dominated by another, and the area they dominate inside the reference box.
class Staircase {
  public:
    Staircase(double rx, double ry, std::pmr::memory_resource* mem) : rx_(rx), ry_(ry), pts_(mem) {}

    double area() const { return area_; }

    void insert(double px, double py) {
        auto it = pts_.upper_bound(Point2{px, 0.0});  // first x > px
        if (it != pts_.begin() && std::prev(it)->y <= py) return;  // dominated: nothing changes
        it = pts_.lower_bound(Point2{px, 0.0});                     // first x >= px
        // Left of px everything keeps its cover; from px rightwards the cover height is that of
        // the left neighbour (ry without one) until the next staircase point.
        double cap = (it == pts_.begin()) ? ry_ : std::prev(it)->y;
        double x = px, added = 0.0;
        while (it != pts_.end() && it->y >= py) {  // dominated by p: remove, collecting strips
            added += (it->x - x) * (cap - py);
            x = it->x;
            cap = it->y;
            it = pts_.erase(it);
        }
        const double x_end = (it == pts_.end()) ? rx_ : it->x;
        added += (x_end - x) * (cap - py);
        area_ += added;
        pts_.insert(it, Point2{px, py});
    }

  private:
    struct ByX {
        bool operator()(const Point2& a, const Point2& b) const { return a.x < b.x; }
    };
    double rx_, ry_;
    double area_ = 0.0;
    std::pmr::set<Point2, ByX> pts_;
};

double hv3d(std::vector<Point3>& pts, const double* ref) {
    std::sort(pts.begin(), pts.end(), [](const Point3& a, const Point3& b) { return a.z < b.z; });
    // Tree nodes come from one arena, released at once: no malloc/free per node.
    std::pmr::monotonic_buffer_resource arena;
    Staircase stair(ref[0], ref[1], &arena);
    double volume = 0.0;
    const std::size_t n = pts.size();
    for (std::size_t i = 0; i < n; ++i) {
        stair.insert(pts[i].x, pts[i].y);
        const double z_next = (i + 1 < n) ? pts[i + 1].z : ref[2];
        volume += stair.area() * (z_next - pts[i].z);
    }
    return volume;
}

}  // namespace

template <typename T>
double hypervolume(const MatrixView<T>& F, const double* ref) {
    const std::ptrdiff_t n = F.n, m = F.m;
    if (m == 1) {
        double best = ref[0];
        for (std::ptrdiff_t i = 0; i < n; ++i) best = std::min(best, double(F(i, 0)));
        return ref[0] - best;
    }
    if (m == 2) {
        std::vector<Point2> pts;
        pts.reserve(std::size_t(n));
        for (std::ptrdiff_t i = 0; i < n; ++i) {
            const double x = F(i, 0), y = F(i, 1);
            if (x < ref[0] && y < ref[1]) pts.push_back({x, y});
        }
        return hv2d(pts, ref[0], ref[1]);
    }
    std::vector<Point3> pts;
    pts.reserve(std::size_t(n));
    for (std::ptrdiff_t i = 0; i < n; ++i) {
        const double x = F(i, 0), y = F(i, 1), z = F(i, 2);
        if (x < ref[0] && y < ref[1] && z < ref[2]) pts.push_back({x, y, z});
    }
    return hv3d(pts, ref);
}

template double hypervolume<float>(const MatrixView<float>&, const double*);
template double hypervolume<double>(const MatrixView<double>&, const double*);

}  // namespace fastscarlet::nds
