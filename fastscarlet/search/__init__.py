"""Stage 5, multi-objective architecture search over a trained supernet (issue 14 builds it).

The home of the search engine: an ask/tell NSGA-II on the C++ core of :mod:`fastscarlet.nds`,
its operators (sampling, crossover, mutation, MoreMNAS reinforced mutation), survival rules
(``nsga2``, MoGA's weighted fitness), the archive and its outputs, and Supernet Shifting. It reads
spaces (:mod:`fastscarlet.space`), costs (:mod:`fastscarlet.cost`) and evaluators
(:mod:`fastscarlet.evaluate`); only :mod:`fastscarlet.cli` imports it.
"""
