"""Supernet Shifting (arXiv 2403.11380): the supernet is fine-tuned on the paths the search evaluates.

::

    shift = ShiftingEvaluator(supernet, train_loader, calib, val, steps=20, lr=1e-4, source=ckpt)
    Search(space, combine(CostEvaluator(space), shift), objectives,
           SearchConfig(shift=True, shift_steps=20, shift_lr=1e-4)).run(out="runs/s")
    # out/supernet.pt: the shifted supernet, a training checkpoint

For each **new** genome of a generation, in the order the engine gives them: ``steps`` SGD updates
on that genome's path, each on its own training batch (augmented), then BN recalibration and
evaluation of the genome on the just-updated weights (:class:`AccuracyEvaluator`). Because
evolution keeps producing children of the best genomes, the supernet drifts toward the region the
search favours, which is what improves the *local* ranking among top architectures.

What the paper's code does and what we do (papers.md section 5.5):

* **Per-batch updates.** "The training loss is accumulated in searching" is, in the released code,
  20 SGD steps per candidate (batch 150, label smoothing 0.1, lr 1e-4, momentum 0.9, wd 4e-5 on
  conv/linear weights only); the defaults here are the same numbers, the batch is the caller's.
* **One optimizer for the whole search**, at a constant learning rate as in the paper's code: the
  number of updates is not known in advance (the archive skips genomes already evaluated and
  ``generations`` may grow on resume), so a decaying schedule would need a guessed length. A
  supernet checkpoint's momentum buffers are reused when it has them (a fresh optimizer, with a
  warning, when it has none); the hyper-parameters are the shift's.
* **A genome is trained and scored once.** The paper's code re-trains and re-scores a candidate
  every generation it reappears in the population; the engine never evaluates a genome twice (the
  archive is the cache), so a survivor keeps the score it got when it was new. The shift still
  concentrates on the region the search keeps sampling: the children of the survivors.
* **Transfer** (:func:`transfer_supernet`): the classifier is replaced by a fresh one for the new
  classes (seeded), trained by the shift together with the rest; the search then runs on the new
  dataset. Unlike the paper's bias-free ``classifier_newdataset``, the new classifier has a bias,
  so that the result is an ordinary supernet of the space that ``load_supernet`` opens.

**Parallel shifting** (``lanes = R``, ``SearchConfig.shift_parallel``): the new genomes are taken
in rounds of ``R`` consecutive genomes; in round ``i`` lane ``k`` trains genome ``i*R + k`` on its own
data shard (rank ``k`` of ``R``), and each update combines the lanes' gradients: every parameter
gets the mean of the gradients of the lanes whose path uses it (the trainer's ``shared_grad=mean``
rule; a lane with no genome left in the last round is not counted), every BN the mean of the running
statistics the lanes reached from the same start. Then each lane's genome is evaluated. Under
``torch.distributed`` with ``R`` ranks lane ``k`` runs on rank ``k`` and the step's gradients and
statistics are all-reduced once; one process with ``lanes=R`` computes the same (bit for bit with
two lanes, where the sum of two numbers does not depend on the order; up to summation order with
more). Every rank is given every genome (``Search`` does so when ``SearchConfig.shift`` is set),
knows the whole plan, and returns every result.

**Exact resume.** :meth:`ShiftingEvaluator.state_dict` holds the supernet's weights and BN
statistics, the optimizer state, the number of updates and each lane's data position; the random
numbers of a lane's forward (dropout) are drawn from a generator seeded by ``(seed, update,
lane)``, so no global RNG state is involved. The engine saves this state in its per-generation
checkpoint; a search killed at any moment and resumed ends with the same front, archive and
``supernet.pt``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from fastscarlet.search.evaluators import AccuracyEvaluator
from fastscarlet.space import Genome
from fastscarlet.train.checkpoint import CHECKPOINT_FORMAT
from fastscarlet.train.optim import build_sgd

_BN = nn.modules.batchnorm._BatchNorm
STATE_FORMAT = "fastscarlet.shift/1"


def transfer_supernet(supernet: nn.Module, num_classes: int, root: str, seed: int = 0) -> nn.Module:
    """A copy of ``supernet`` for a dataset of ``num_classes`` classes at ``root``: every weight
    kept but the classifier's, which is a fresh ``Linear`` (the space's init, seeded by ``seed``).

    ``supernet`` is a :class:`~fastscarlet.nn.supernet.SuperNet` with ``.config`` (as
    :func:`~fastscarlet.train.checkpoint.load_supernet` returns it); the copy's config names the
    new class count and data root.
    """
    from fastscarlet.nn.blocks import init_weights
    from fastscarlet.nn.supernet import SuperNet

    if num_classes < 2:
        raise ValueError(
            f"the transfer dataset {root} has {num_classes} class(es); a classifier needs at "
            "least 2 (one folder per class under train/)"
        )
    cfg = supernet.config
    new_cfg = dataclasses.replace(
        cfg,
        space=dataclasses.replace(cfg.space, num_classes=num_classes),
        data=dataclasses.replace(cfg.data, root=str(root)),
    )
    device = next(supernet.parameters()).device
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.default_generator.manual_seed(seed)  # (the modules are built on the CPU)
        net = SuperNet(supernet.space.with_classes(num_classes), share_se=supernet.share_se)
        init_weights(net.head.classifier)
    keep = {k: v for k, v in supernet.state_dict().items() if not k.startswith("head.classifier.")}
    missing, unexpected = net.load_state_dict(keep, strict=False)
    assert not unexpected and sorted(missing) == ["head.classifier.bias", "head.classifier.weight"]
    net.to(device)
    net.config = new_cfg
    # the optimizer state a shift reuses must not carry the old classifier's momentum
    net.fresh_parameters = ("head.classifier.weight", "head.classifier.bias")
    net.train(supernet.training)
    return net


@dataclasses.dataclass
class _Usage:
    """Which parameters and BNs the paths of one round use, and by how many lanes each."""

    params: list[nn.Parameter]
    param_counts: list[int]
    bns: list[_BN]
    bn_counts: list[int]
    lane_bns: dict[int, list[int]]  # lane -> indices into ``bns``


class ShiftingEvaluator:
    """``acc``, ``acc5``, ``loss`` of each new genome after ``steps`` updates on its path.

    Args:
        supernet: the :class:`SuperNet` to shift (updated in place), with ``.config``.
        train_loader: ``train_loader(lane, lanes)`` -> the training loader of that lane (rank
            ``lane`` of ``lanes``, augmented, shuffled; ``len``, ``set_epoch``,
            ``set_start_batch``). Called for the lanes this process runs.
        calib_loader, val_loader, calib_batches, val_batches: as :class:`AccuracyEvaluator`.
        steps: updates per genome (the paper: 20).
        lr, momentum, weight_decay, label_smoothing: the shift's SGD and loss (the paper's).
        lanes: genomes trained per update (see the module doc); under ``torch.distributed`` it
            must equal the world size.
        source: the training checkpoint ``supernet`` came from (``load_checkpoint``): its
            optimizer state is reused and its other entries (schedule, step, config) are carried
            into :meth:`training_checkpoint`. None: a fresh optimizer, config from ``supernet``.
        seed: seeds the lanes' dropout generators.
        progress: a progress bar over the genomes (rank 0).
    """

    def __init__(
        self,
        supernet: nn.Module,
        train_loader: Callable[[int, int], Any],
        calib_loader: Iterable,
        val_loader: Iterable,
        *,
        steps: int = 20,
        lr: float = 1e-4,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        label_smoothing: float = 0.1,
        lanes: int = 1,
        calib_batches: int | None = 20,
        val_batches: int | None = None,
        source: Mapping[str, Any] | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        import torch.distributed as dist

        if steps < 1:
            raise ValueError(f"shift steps must be at least 1, got {steps}")
        if lanes < 1:
            raise ValueError(f"shift lanes (shift_parallel) must be at least 1, got {lanes}")
        self.dist = dist if dist.is_available() and dist.is_initialized() else None
        world = self.dist.get_world_size() if self.dist is not None else 1
        self.rank = self.dist.get_rank() if self.dist is not None else 0
        if world == 1:
            self.dist = None
            self.local = list(range(lanes))
        elif lanes != world:
            raise ValueError(
                f"under torch.distributed with {world} ranks the shift trains one path per rank "
                f"per update: shift_parallel must be {world}, got {lanes}"
            )
        else:
            self.local = [self.rank]
        self.supernet, self.steps, self.lanes, self.seed = supernet, steps, lanes, seed
        self.lr = lr
        self.device = next(supernet.parameters()).device
        self.loaders = {k: train_loader(k, lanes) for k in self.local}
        self.batches_per_epoch = len(self.loaders[self.local[0]])
        if self.batches_per_epoch < 1:
            raise ValueError("the shift's training loader gives no batch: use a smaller batch")
        self.batch_size = getattr(self.loaders[self.local[0]], "batch_size", None)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.accuracy = AccuracyEvaluator(
            supernet, calib_loader, val_loader, calib_batches, val_batches
        )
        self.progress = progress and self.rank == 0
        source = source or {}
        # what training_checkpoint() carries over (the momentum buffers themselves are not kept)
        self.source = {k: v for k, v in source.items() if k not in ("model", "optimizer")}
        self._source_groups = (source.get("optimizer") or {}).get("param_groups")
        if "config" not in self.source and getattr(supernet, "config", None) is None:
            raise ValueError("shifting needs the supernet's config (load it with load_supernet)")
        self.optimizer = build_sgd(supernet, lr, momentum, False, weight_decay)
        self._hyper = [dict(g, params=None) for g in self.optimizer.param_groups]
        if source.get("optimizer") is not None:
            self._reuse_optimizer_state(source["optimizer"])
        elif source:
            warnings.warn(
                "the supernet checkpoint has no optimizer state: the shift starts a fresh SGD "
                "optimizer (momentum buffers at zero)",
                UserWarning,
                stacklevel=2,
            )
        self.updates = 0
        self.positions = [[0, 0] for _ in range(lanes)]  # per lane: (epoch, batch in epoch)
        self._iters: dict[int, Any] = {}

    # -- optimizer -------------------------------------------------------------------------------

    def _reuse_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """Momentum buffers of ``state`` (an optimizer of ``build_sgd`` over the same supernet) with
        the shift's own hyper-parameters; a transferred classifier's buffers are dropped."""
        try:
            self.optimizer.load_state_dict(state)
        except ValueError as exc:
            raise ValueError(
                f"the supernet checkpoint's optimizer state does not fit this supernet: {exc}"
            ) from None
        for group, hyper in zip(self.optimizer.param_groups, self._hyper):
            group.update({k: v for k, v in hyper.items() if k != "params"})
            group.pop("initial_lr", None)
        named = dict(self.supernet.named_parameters())
        for name in getattr(self.supernet, "fresh_parameters", ()):
            self.optimizer.state.pop(named[name], None)
        for name, p in named.items():
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None and buf.shape != p.shape:
                raise ValueError(
                    f"the supernet checkpoint's optimizer state does not fit this supernet: "
                    f"{name} has momentum of shape {tuple(buf.shape)}, not {tuple(p.shape)}"
                )

    # -- state -------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """What ``SearchConfig``'s shift fields must agree with."""
        return {
            "shift_steps": self.steps,
            "shift_lr": self.lr,
            "shift_batch": self.batch_size,
            "shift_parallel": self.lanes,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "model": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "positions": [list(p) for p in self.positions],
            "lanes": self.lanes,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError("the search checkpoint holds no Supernet Shifting state")
        if state["lanes"] != self.lanes:
            raise ValueError(
                f"the checkpoint shifted with {state['lanes']} lanes, not {self.lanes}"
            )
        self.supernet.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
        self.positions = [[int(e), int(b)] for e, b in state["positions"]]
        self._iters = {}

    def training_checkpoint(self) -> dict[str, Any]:
        """The shifted supernet as a training checkpoint (``fastscarlet train``'s format).

        The source checkpoint's entries (schedule, sampler, step, ...) are kept, so that
        ``fastscarlet train --resume`` continues the training run from the shifted weights with
        its own recipe; the optimizer keeps the source's hyper-parameters and takes the shift's
        momentum buffers. After a transfer the data position starts at the new dataset's first
        batch. ``eval``, ``search`` and ``export`` open it with ``load_supernet``.
        """
        out = dict(self.source)
        out["format"] = CHECKPOINT_FORMAT
        out["model"] = self.supernet.state_dict()
        config = getattr(self.supernet, "config", None)
        if config is not None:
            out["config"] = config.to_dict()
            if (self.source.get("config") or {}).get("data", {}).get("root") != config.data.root:
                # transferred: the run's position in its old dataset means nothing in the new one
                out.update({k: 0 for k in ("epoch", "batch_in_epoch") if k in out})
        mine = self.optimizer.state_dict()
        if self._source_groups is not None:
            mine = {"state": mine["state"], "param_groups": self._source_groups}
        out["optimizer"] = mine
        return out

    # -- the evaluation ------------------------------------------------------------------------

    def __call__(self, genomes: list[Genome]) -> list[dict[str, float]]:
        genomes = [tuple(int(c) for c in g) for g in genomes]
        R = self.lanes
        results: list[dict[str, float] | None] = [None] * len(genomes)
        bar = None
        if self.progress and genomes:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(genomes), desc="shift", unit="subnet", leave=False)
        try:
            for start in range(0, len(genomes), R):
                active = [(k, genomes[start + k]) for k in range(min(R, len(genomes) - start))]
                self._train_round(active)
                mine = [(k, g) for k, g in active if k in self.local]
                scores = self.accuracy([g for _, g in mine]) if mine else []
                for (k, _), score in zip(mine, scores):
                    results[start + k] = dict(score)
                if bar is not None:
                    bar.update(len(active))
        finally:
            self._iters = {}  # no loader workers held between generations
            if bar is not None:
                bar.close()
        if self.dist is not None:
            parts: list[Any] = [None] * self.lanes
            mine_idx = [(i, r) for i, r in enumerate(results) if r is not None]
            self.dist.all_gather_object(parts, mine_idx)
            for part in parts:
                for i, r in part:
                    results[i] = r
        return results  # type: ignore[return-value]

    # -- training ----------------------------------------------------------------------------------

    def _usage(self, active: Sequence[tuple[int, Genome]]) -> _Usage:
        net = self.supernet
        pindex: dict[int, int] = {}
        params: list[nn.Parameter] = []
        pcounts: list[int] = []
        bindex: dict[int, int] = {}
        bns: list[_BN] = []
        bcounts: list[int] = []
        lane_bns: dict[int, list[int]] = {}
        for lane, g in active:
            for p in {id(p): p for p in net.path_parameters(g)}.values():
                if id(p) not in pindex:
                    pindex[id(p)] = len(params)
                    params.append(p)
                    pcounts.append(0)
                pcounts[pindex[id(p)]] += 1
            modules = [net.stem, net.first_block, net.head]
            for layer, c in zip(net.layers, g):
                block, se = layer.block_of(c)
                modules += [block] + ([se] if se is not None else [])
            mine = {id(m): m for mod in modules for m in mod.modules() if isinstance(m, _BN)}
            for m in mine.values():
                if id(m) not in bindex:
                    bindex[id(m)] = len(bns)
                    bns.append(m)
                    bcounts.append(0)
                bcounts[bindex[id(m)]] += 1
            lane_bns[lane] = [bindex[i] for i in mine]
        return _Usage(params, pcounts, bns, bcounts, lane_bns)

    def _train_round(self, active: Sequence[tuple[int, Genome]]) -> None:
        usage = self._usage(active)
        losses = []
        for _ in range(self.steps):
            losses += self._update(active, usage)
        bad = bool(losses) and not bool(torch.isfinite(torch.stack(losses)).all())
        if self.dist is not None:
            flag = torch.tensor([float(bad)], device=self.device)
            self.dist.all_reduce(flag, op=self.dist.ReduceOp.MAX)
            bad = bool(flag.item() > 0)
        if bad:
            raise RuntimeError(
                f"non-finite shift loss while training {[list(g) for _, g in active]} (update "
                f"{self.updates}); the last generation's checkpoint is intact: lower the shift "
                "learning rate"
            )

    def _update(self, active: Sequence[tuple[int, Genome]], usage: _Usage) -> list[torch.Tensor]:
        """One SGD update from the active lanes' batches; returns the local lanes' losses."""
        net, opt = self.supernet, self.optimizer
        net.train()
        opt.zero_grad(set_to_none=True)
        # Several lanes, or lanes on other ranks (which must get this step's update even when
        # they have no genome of their own in this round): combine the lanes' gradients and
        # statistics. Every lane starts from the same BN statistics.
        combine = len(active) > 1 or self.dist is not None
        if combine:
            start = [(b.running_mean.clone(), b.running_var.clone()) for b in usage.bns]
            sums = [(torch.zeros_like(m), torch.zeros_like(v)) for m, v in start]
            tracked = [b.num_batches_tracked.clone() for b in usage.bns]
        losses = []
        for lane, g in active:
            if lane not in self.local:
                self._advance(lane)
                continue
            if combine:
                for b, (m, v) in zip(usage.bns, start):
                    b.running_mean.copy_(m)
                    b.running_var.copy_(v)
            x, y = self._next_batch(lane)
            with self._lane_rng(lane):
                loss = self.criterion(net(x, g).float(), y)
            loss.backward()
            losses.append(loss.detach())
            if combine:
                for i in usage.lane_bns[lane]:
                    sums[i][0].add_(usage.bns[i].running_mean)
                    sums[i][1].add_(usage.bns[i].running_var)
        if combine:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in usage.params]
            stats = [t for pair in sums for t in pair]
            if self.dist is not None:
                _all_reduce_sum(grads + stats, self.dist)
            for p, g, n in zip(usage.params, grads, usage.param_counts):
                p.grad = g.div_(n) if n > 1 else g
            for b, (m, v), n, t in zip(usage.bns, sums, usage.bn_counts, tracked):
                b.running_mean.copy_(m.div_(n))
                b.running_var.copy_(v.div_(n))
                b.num_batches_tracked.copy_(t + 1)
        opt.step()
        self.updates += 1
        return losses

    @contextmanager
    def _lane_rng(self, lane: int):
        """The forward's random numbers (dropout) from ``(seed, update, lane)`` only."""
        seed = int(np.random.SeedSequence([self.seed, self.updates, lane]).generate_state(1)[0])
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.default_generators[self.device.index or 0].manual_seed(seed)
            yield

    # -- data ----------------------------------------------------------------------------------

    def _advance(self, lane: int) -> None:
        pos = self.positions[lane]
        pos[1] += 1
        if pos[1] >= self.batches_per_epoch:
            pos[0], pos[1] = pos[0] + 1, 0
            self._iters.pop(lane, None)

    def _next_batch(self, lane: int) -> tuple[torch.Tensor, torch.Tensor]:
        it = self._iters.get(lane)
        if it is None:
            loader = self.loaders[lane]
            epoch, batch = self.positions[lane]
            loader.set_epoch(epoch)
            if batch:
                loader.set_start_batch(batch)
            it = self._iters[lane] = iter(loader)
        batch = next(it)
        self._advance(lane)
        return batch[0], batch[1]


def _all_reduce_sum(tensors: list[torch.Tensor], dist: Any) -> None:
    """Sum ``tensors`` (one dtype: a float32 supernet's gradients and BN statistics) over the
    ranks in place, in one all-reduce."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    flat = _flatten_dense_tensors(tensors)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for t, reduced in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        t.copy_(reduced)


def find_shifter(evaluate: Any) -> ShiftingEvaluator | None:
    """The :class:`ShiftingEvaluator` that is ``evaluate`` or one of ``combine()``'s members."""
    for ev in (evaluate, *getattr(evaluate, "evaluators", ())):
        if isinstance(ev, ShiftingEvaluator):
            return ev
    return None


__all__ = ["ShiftingEvaluator", "find_shifter", "transfer_supernet"]
