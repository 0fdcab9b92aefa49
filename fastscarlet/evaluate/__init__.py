"""Stage 4b, evaluating architectures: BN recalibration and accuracy of networks and supernet paths.

- :mod:`~fastscarlet.evaluate.accuracy`: :func:`recalibrate_bn`, :func:`evaluate` and
  :func:`evaluate_paths` (one subnet at a time: the reference the population evaluator is checked
  against).
"""

from fastscarlet.evaluate.accuracy import Accuracy, evaluate, evaluate_paths, recalibrate_bn

__all__ = ["Accuracy", "evaluate", "evaluate_paths", "recalibrate_bn"]
