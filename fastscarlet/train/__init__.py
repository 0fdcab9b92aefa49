"""Stage 4a, supernet training: which paths a step trains, how it updates, how a run survives.

- :mod:`~fastscarlet.train.samplers`: ``uniform`` (SPOS), ``strict_fair`` (FairNAS),
  ``size_proportional`` (NAO-V2) and the user registry;
- :mod:`~fastscarlet.train.trainer`: :class:`SupernetTrainer` (m paths per step, one update; AMP,
  channels_last, exact resume, bad-input handling);
- :mod:`~fastscarlet.train.optim`: SGD parameter groups and the warm-up + cosine schedule;
- :mod:`~fastscarlet.train.checkpoint`: atomic writes, ``weights_only`` loading, RNG states and
  :func:`load_supernet`;
- :mod:`~fastscarlet.train.distributed`: torchrun process groups, one all-reduce per step;
- :mod:`~fastscarlet.train.monitor`: progress bar, TensorBoard scalars, ``log.jsonl``.

Import the submodules directly; this package imports nothing heavy itself.
"""
