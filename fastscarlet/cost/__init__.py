"""Stage 3, what an architecture costs: analytic MAdds and parameters (latency tables next).

- :mod:`~fastscarlet.cost.analytic`: :class:`CostModel` (per-layer tables from the space alone,
  vectorised over genomes) and :func:`count_by_hooks` (hooks on a built model, the independent
  count it is tested against).
"""

from fastscarlet.cost.analytic import Cost, CostModel, conv_out, count_by_hooks, count_cost

__all__ = ["Cost", "CostModel", "conv_out", "count_by_hooks", "count_cost"]
