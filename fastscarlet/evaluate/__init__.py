"""Stage 4b, evaluating architectures: BN recalibration and accuracy of networks and supernet paths.

- :mod:`~fastscarlet.evaluate.accuracy`: :func:`recalibrate_bn`, :func:`evaluate` and
  :func:`evaluate_paths` (one subnet at a time: the reference the population evaluator is checked
  against);
- :mod:`~fastscarlet.evaluate.population`: :class:`PopulationEvaluator` (a whole population at
  once: shared prefixes as a trie, batches read once, several subnets per pass on CUDA);
- :mod:`~fastscarlet.evaluate.batches`: :class:`CachedBatches` (a loader's batches read once);
- :mod:`~fastscarlet.evaluate.sharding`: prefix shards over torch.distributed ranks
  (:func:`evaluate_sharded`) or the devices of one node (:class:`MultiDeviceEvaluator`).
"""

from fastscarlet.evaluate.accuracy import Accuracy, evaluate, evaluate_paths, recalibrate_bn
from fastscarlet.evaluate.batches import CachedBatches
from fastscarlet.evaluate.population import PopulationEvaluator, build_trie, trie_size
from fastscarlet.evaluate.sharding import MultiDeviceEvaluator, evaluate_sharded, prefix_shards

__all__ = [
    "Accuracy",
    "CachedBatches",
    "MultiDeviceEvaluator",
    "PopulationEvaluator",
    "build_trie",
    "evaluate",
    "evaluate_paths",
    "evaluate_sharded",
    "prefix_shards",
    "recalibrate_bn",
    "trie_size",
]
