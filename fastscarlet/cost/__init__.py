"""Stage 3, what an architecture costs: analytic MAdds and parameters, and measured latency.

- :mod:`~fastscarlet.cost.analytic`: :class:`CostModel` (per-layer tables from the space alone,
  vectorised over genomes) and :func:`count_by_hooks` (hooks on a built model, the independent
  count it is tested against);
- :mod:`~fastscarlet.cost.latency`: latency lookup tables timed on a device
  (:func:`build_latency_table`, :func:`validate_latency_table`) and :class:`LatencyModel`, the
  prediction they give.
"""

from fastscarlet.cost.analytic import Cost, CostModel, conv_out, count_by_hooks, count_cost
from fastscarlet.cost.latency import (
    LatencyModel,
    build_latency_table,
    load_table,
    save_table,
    validate_latency_table,
)

__all__ = [
    "Cost",
    "CostModel",
    "LatencyModel",
    "build_latency_table",
    "conv_out",
    "count_by_hooks",
    "count_cost",
    "load_table",
    "save_table",
    "validate_latency_table",
]
