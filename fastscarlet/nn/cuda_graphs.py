"""CUDA graphs for the launch-bound late stages of a :class:`~fastscarlet.nn.network.Network`.

Issue 19 item 4. At 14x14 and 7x7 a Scarlet-A block is a dozen small kernels, each close to a
launch's cost at small batches, so the host's launches rather than the GPU set the pace; one graph
replay per run of blocks removes those launches. Whether that pays depends on the batch and the
machine, hence ``policy="auto"`` and ``benchmarks/bench_cuda_graphs.py``.

* :func:`plan_segments` says which blocks are *late*: those whose input is at most ``max_size``
  pixels on a side at a given input resolution (from the space's strides, no forward pass), grouped
  into one segment per input size (Scarlet-A at 224: blocks 8-15 at 14x14, 16-19 at 7x7), plus
  the head as a segment of its own.
* :func:`graph_late_stages` captures each segment for one input shape, dtype and autocast state:
  inference (``training=False``) with :class:`torch.cuda.CUDAGraph` and static input/output
  buffers (:class:`InferenceGraph`), training with :func:`torch.cuda.make_graphed_callables`
  (:class:`TrainingGraph`: the forward and the backward each one graph; BN running statistics are
  updated in place by the replay; parameter gradients reach ``.grad`` through autograd). With
  ``policy="auto"`` each segment is timed graphed and eager and kept only when the graph wins by
  :data:`~fastscarlet.kernels.autotune.MARGIN` (:func:`decide`); ``"on"`` keeps every capture,
  ``"off"`` none. The :class:`GraphReport` says per segment which blocks, input shape, both times,
  whether it was kept and why; ``report.restore()`` (or ``with graph_late_stages(...):``) puts the
  original modules back.
* The network keeps its modules and ``state_dict`` keys: ``net.blocks`` becomes a
  :class:`GraphedBlocks` (an ``nn.Sequential`` over the same blocks) and ``net.head`` a
  :class:`GraphedHead` (the same children), both routing their late segments through the graphs.
  ``load_state_dict`` and optimizer steps write the parameters in place, which the graphs read.

A graph replays only where it computes what eager would (:meth:`SegmentGraph.matches`): the
captured input shape, dtype and device; the captured train/eval mode of every module; grad mode
(inference graphs under ``torch.no_grad()``/``inference_mode()``, training graphs with grad
enabled and an input that requires grad); the captured autocast state; parameters at their
captured addresses (``net.to(...)`` or ``.half()`` after capture makes them stale). Anything else
runs the segment eagerly, so an unseen shape (a short last batch) is slower, never wrong.

Lifetimes, what a caller must know:

* Tensors passed *between* segments are the graphs' static buffers; what leaves ``net.blocks`` or
  ``net.head`` is a clone, so outputs kept across calls stay valid.
* Training: each forward of a graphed segment must be followed by its backward before the next
  forward (a second forward overwrites the activations the first saved for backward), which is
  what a training step does. ``make_graphed_callables`` hands autograd its static gradient buffers,
  which ``.grad`` may then alias (pytorch/pytorch#181723); :class:`TrainingGraph` clones such a
  ``.grad`` before the next replay overwrites it, so gradient accumulation and
  ``zero_grad(set_to_none=False)`` stay correct (with the default ``set_to_none=True`` there is
  nothing to clone).
* Capturing consumes random numbers and runs the segments a few times; BN running statistics and
  ``.grad`` are restored afterwards, so capture itself leaves the model's state as it found it.
  Copying a graphed network (``copy.deepcopy``) is not supported: restore first.

On CPU (or with ``policy="off"``) nothing changes and the report says why.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from fastscarlet.kernels.autotune import MARGIN, REFERENCE, choose, time_median

POLICIES = ("auto", "on", "off")
GRAPH = "graph"

Timer = Callable[[Callable[[], object]], float]


# -- which blocks are late ----------------------------------------------------------------------


def _out_size(size: int, stride: int) -> int:
    """Spatial size after a conv of odd kernel k, padding k // 2, stride s: ceil(size / s)."""
    return (size - 1) // stride + 1


def block_input_sizes(net: nn.Module, image_size: int | Sequence[int]) -> tuple[list[int], int]:
    """``(sizes, head_size)``: the input side (the larger of H and W) of every block of
    ``net.blocks`` and of the head, for ``image_size`` input (an int or ``(H, W)``), from the
    space's strides (the stem's; the first block has stride 1; one stride per layer)."""
    space = net.space
    hw = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
    hw = [_out_size(s, space.stem.stride) for s in hw]
    sizes = []
    for spec in space.layers:
        sizes.append(max(hw))
        hw = [_out_size(s, spec.stride) for s in hw]
    return sizes, max(hw)


@dataclass(frozen=True)
class SegmentPlan:
    """A run of consecutive late blocks (``indices`` into ``net.blocks``, 0-based) with the same
    input size, or the head (``head=True``, no indices). ``channels``: input channels."""

    name: str
    indices: tuple[int, ...]
    size: int
    channels: int
    head: bool = False


def plan_segments(
    net: nn.Module, image_size: int | Sequence[int], max_size: int = 14, head: bool = True
) -> list[SegmentPlan]:
    """The late blocks of ``net`` at ``image_size`` (input side <= ``max_size``), one segment per
    input size, in order; then the head when ``head`` and its input is late too.

    Scarlet-A at 224 with ``max_size=14``: ``blocks 14x14`` = indices 7..14 (the strided block
    14 -> 7 belongs to the run of its input size), ``blocks 7x7`` = 15..18, ``head``."""
    if max_size < 1:
        raise ValueError(f"max_size: at least 1, got {max_size}")
    sizes, head_size = block_input_sizes(net, image_size)
    layers = net.space.layers
    plans: list[SegmentPlan] = []
    run: list[int] = []

    def close() -> None:
        if run:
            s = sizes[run[0]]
            plans.append(SegmentPlan(f"blocks {s}x{s}", tuple(run), s, layers[run[0]].in_channels))
            run.clear()

    for i, s in enumerate(sizes):
        if s > max_size:
            continue
        if run and sizes[run[-1]] != s:
            close()
        run.append(i)
    close()
    if head and head_size <= max_size:
        plans.append(SegmentPlan("head", (), head_size, layers[-1].out_channels, head=True))
    return plans


def decide(
    policy: str, eager_s: float | None, graph_s: float | None, margin: float = MARGIN
) -> tuple[bool, str]:
    """``(keep_graph, why)`` for one captured segment: ``on`` keeps it, ``off`` does not, ``auto``
    keeps it only when ``eager_s >= (1 + margin) * graph_s``
    (:func:`~fastscarlet.kernels.autotune.choose`)."""
    if policy not in POLICIES:
        raise ValueError(f"policy: one of {POLICIES}, got {policy!r}")
    if policy == "on":
        return True, "policy on"
    if policy == "off":
        return False, "policy off"
    if eager_s is None or graph_s is None:
        raise ValueError("policy auto needs both the eager and the graph time")
    choice, why = choose({REFERENCE: eager_s, GRAPH: graph_s}, margin)
    return choice == GRAPH, why.replace(REFERENCE, "eager")


# -- the graphed segments ----------------------------------------------------------------------


def _autocast_state(device_type: str = "cuda") -> tuple[bool, torch.dtype | None]:
    if not torch.is_autocast_enabled(device_type):
        return False, None
    return True, torch.get_autocast_dtype(device_type)


def _autocast(dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    # make_graphed_callables refuses autocast's weight cache: a cast cached outside the graph
    # would be replayed stale after the optimizer step.
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype, cache_enabled=False)


def _run(modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for m in modules:
        x = m(x)
    return x


class SegmentGraph:
    """A run of modules with a graph captured for one input signature; ``__call__`` replays it
    where :meth:`matches` says the replay computes what eager would, else runs the modules.

    Subclasses capture (:class:`InferenceGraph`, :class:`TrainingGraph`) and define
    :meth:`replay`. ``replays`` and ``fallbacks`` count the calls of each kind."""

    training: bool

    def __init__(
        self, modules: Sequence[nn.Module], sample: torch.Tensor, autocast: torch.dtype | None
    ) -> None:
        self.modules = list(modules)
        self.shape = tuple(sample.shape)
        self.dtype = sample.dtype
        self.device = sample.device
        self.autocast = autocast
        self._autocast_state = (autocast is not None, autocast)
        self._submodules = [s for m in self.modules for s in m.modules()]
        self._params = [p for m in self.modules for p in m.parameters()]
        self._ptrs = [p.data_ptr() for p in self._params]
        self._frozen = [p.requires_grad for p in self._params]
        self.replays = 0
        self.fallbacks = 0
        self._stale_warned = False

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        return _run(self.modules, x)

    def mismatch(self, x: torch.Tensor) -> str | None:
        """Why a replay would not compute ``eager(x)`` (None: it would)."""
        if tuple(x.shape) != self.shape:
            return f"input shape {tuple(x.shape)}, captured {self.shape}"
        if x.dtype != self.dtype or x.device != self.device:
            return f"input {x.dtype} on {x.device}, captured {self.dtype} on {self.device}"
        if any(m.training != self.training for m in self._submodules):
            return f"a module is not in {'train' if self.training else 'eval'} mode"
        if torch.is_grad_enabled() != self.training:
            return f"grad mode {'on' if torch.is_grad_enabled() else 'off'}"
        if self.training and not x.requires_grad:
            return "the input does not require grad"
        if _autocast_state(self.device.type) != self._autocast_state:
            return f"autocast {_autocast_state(self.device.type)}, captured {self._autocast_state}"
        if [p.data_ptr() for p in self._params] != self._ptrs:
            if not self._stale_warned:
                warnings.warn(
                    "a graphed segment's parameters moved since capture (.to() or .half() on a "
                    "graphed network?): it runs eagerly; restore and graph again",
                    stacklevel=3,
                )
                self._stale_warned = True
            return "parameters moved since capture"
        if self.training and [p.requires_grad for p in self._params] != self._frozen:
            # the training graph computes gradients for the parameters that needed them at capture
            return "a parameter's requires_grad changed since capture"
        return None

    def matches(self, x: torch.Tensor) -> bool:
        return self.mismatch(x) is None

    def replay(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.matches(x):
            self.replays += 1
            return self.replay(x)
        self.fallbacks += 1
        return self.eager(x)


def _side_stream_warmup(fn: Callable[[], object], iters: int) -> None:
    """Run ``fn`` on a side stream (cuDNN algorithm choice, lazy allocations, Triton compiles stay
    out of the capture), as the CUDA-graphs notes of the PyTorch docs prescribe."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(iters):
            fn()
    torch.cuda.current_stream().wait_stream(stream)


class InferenceGraph(SegmentGraph):
    """Eval-mode forward captured with :class:`torch.cuda.CUDAGraph`: the input is copied into a
    static buffer, the graph replayed, the static output returned (overwritten by the next replay:
    a caller who keeps it clones it, as :class:`GraphedBlocks` does with its own output)."""

    training = False

    def __init__(
        self,
        modules: Sequence[nn.Module],
        sample: torch.Tensor,
        autocast: torch.dtype | None = None,
        warmup: int = 3,
    ) -> None:
        super().__init__(modules, sample, autocast)
        self.static_input = sample.detach().clone()
        with torch.cuda.device(sample.device), torch.no_grad(), _autocast(autocast):
            _side_stream_warmup(lambda: self.eager(self.static_input), warmup)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_output = self.eager(self.static_input)

    def replay(self, x: torch.Tensor) -> torch.Tensor:
        if x.data_ptr() != self.static_input.data_ptr():
            self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output


class TrainingGraph(SegmentGraph):
    """Train-mode forward and backward captured by :func:`torch.cuda.make_graphed_callables`
    (warm-up on its side stream; ``sample`` requires grad, as the segment's input does in a
    training step). The forward returns the static output inside one autograd node whose backward
    replays the backward graph and hands autograd the parameters' gradients."""

    training = True

    def __init__(
        self,
        modules: Sequence[nn.Module],
        sample: torch.Tensor,
        autocast: torch.dtype | None = None,
        warmup: int = 3,
    ) -> None:
        super().__init__(modules, sample, autocast)
        self.static_input = sample.detach().clone().requires_grad_(True)
        container = nn.Sequential(*self.modules)  # not registered anywhere: no hooks on it
        with torch.cuda.device(sample.device), _autocast(autocast):
            self._graphed = torch.cuda.make_graphed_callables(
                container, (self.static_input,), num_warmup_iters=warmup
            )
        self._static_grads: dict[int, int] = {}  # param index -> data_ptr of its static grad

    def learn_static_grads(self, x: torch.Tensor) -> None:
        """Find which parameters' ``.grad`` the backward graph's static buffers become (two
        backwards with ``.grad`` reset, the first's gradients kept alive: the same address twice is
        the static buffer). ``.grad`` is restored; BN statistics move (callers restore them)."""
        saved = [p.grad for p in self._params]
        seen: list[list[torch.Tensor | None]] = []
        for _ in range(2):
            for p in self._params:
                p.grad = None
            y = self._graphed(x)
            y.backward(torch.ones_like(y))
            seen.append([p.grad for p in self._params])
        self._static_grads = {
            i: a.data_ptr()
            for i, (a, b) in enumerate(zip(*seen))
            if a is not None and b is not None and a.data_ptr() == b.data_ptr()
        }
        for p, g in zip(self._params, saved):
            p.grad = g

    def replay(self, x: torch.Tensor) -> torch.Tensor:
        # A .grad aliasing a static buffer would be overwritten by this step's backward replay
        # before autograd adds to it (pytorch/pytorch#181723): give it its own memory first.
        for i, ptr in self._static_grads.items():
            g = self._params[i].grad
            if g is not None and g.data_ptr() == ptr:
                self._params[i].grad = g.clone()
        return self._graphed(x)


# -- the network's routing ---------------------------------------------------------------------


class GraphedBlocks(nn.Sequential):
    """``net.blocks`` with its late segments replayed as graphs: the same block modules under the
    same names (``state_dict`` keys unchanged); ``runners`` maps a segment's first index to its
    :class:`SegmentGraph`. What it returns is never a static buffer."""

    def __init__(self, original: nn.Sequential, runners: dict[int, SegmentGraph]) -> None:
        super().__init__(OrderedDict(original._modules))
        self.train(original.training)
        self.__dict__["original"] = original  # not a registered child: no duplicate keys
        self.runners = dict(runners)
        self._stops = {start: start + len(r.modules) for start, r in self.runners.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mods = list(self._modules.values())
        i, graphed_last = 0, False
        while i < len(mods):
            runner = self.runners.get(i)
            if runner is not None:
                x, i, graphed_last = runner(x), self._stops[i], True
            else:
                x, i, graphed_last = mods[i](x), i + 1, False
        return x.clone() if graphed_last else x

    def __getitem__(self, idx):
        if isinstance(idx, slice):  # a plain Sequential: a slice has no graphs
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def extra_repr(self) -> str:
        spans = ", ".join(f"{s}..{self._stops[s] - 1}" for s in sorted(self.runners))
        return f"cuda graphs over blocks {spans}"


class GraphedHead(nn.Module):
    """``net.head`` replayed as a graph: the head's children, parameters and buffers under the
    same names; the original head runs where the graph does not apply. Returns a clone."""

    def __init__(self, original: nn.Module, runner: SegmentGraph) -> None:
        super().__init__()
        self._modules.update(original._modules)
        self._parameters.update(original._parameters)
        self._buffers.update(original._buffers)
        self._non_persistent_buffers_set.update(original._non_persistent_buffers_set)
        self.train(original.training)
        self.__dict__["original"] = original
        self.runner = runner

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # plain attributes of the head (``hidden = None``, ...)
            return getattr(self.__dict__["original"], name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runner.matches(x):
            self.runner.replays += 1
            return self.runner.replay(x).clone()
        self.runner.fallbacks += 1
        return self.original(x)

    def extra_repr(self) -> str:
        return "cuda graph"


def restore(net: nn.Module) -> bool:
    """Put ``net``'s original ``blocks`` and ``head`` back (in its current train/eval mode); True
    if anything was graphed. The graphs and their memory are released with the wrappers."""
    changed = False
    for name in ("blocks", "head"):
        mod = getattr(net, name, None)
        if isinstance(mod, (GraphedBlocks, GraphedHead)):
            original = mod.original
            original.training = mod.training
            setattr(net, name, original)
            changed = True
    return changed


def install(
    net: nn.Module,
    block_runners: dict[int, SegmentGraph],
    head_runner: SegmentGraph | None,
) -> None:
    """Route ``net.blocks`` / ``net.head`` through ``block_runners`` (first block index ->
    runner) and ``head_runner`` (none: left as they are); :func:`graph_late_stages` calls it with
    the segments it keeps, tests with stand-in runners."""
    if block_runners:
        net.blocks = GraphedBlocks(net.blocks, block_runners)
    if head_runner is not None:
        net.head = GraphedHead(net.head, head_runner)


# -- the report and the entry point ------------------------------------------------------------


@dataclass
class SegmentReport:
    """One segment: its blocks (1-based layer numbers; ``[]`` for the head), input shape, eager and
    graph times in seconds (None: not timed), whether the graph is used, and why."""

    name: str
    layers: list[int]
    input_shape: list[int]
    eager_s: float | None = None
    graph_s: float | None = None
    chosen: bool = False
    reason: str = ""


@dataclass
class GraphReport:
    """What :func:`graph_late_stages` did. ``restore()`` (or leaving ``with report:``) puts the
    original modules back."""

    training: bool
    policy: str
    reason: str
    dtype: str
    autocast: str | None
    segments: list[SegmentReport] = field(default_factory=list)
    net: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def graphed(self) -> bool:
        return any(s.chosen for s in self.segments)

    def restore(self) -> bool:
        return restore(self.net) if self.net is not None else False

    def __enter__(self) -> GraphReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def to_dict(self) -> dict:
        """Plain data for JSON (without the network)."""
        return {
            "training": self.training, "policy": self.policy, "reason": self.reason,
            "dtype": self.dtype, "autocast": self.autocast,
            "segments": [asdict(s) for s in self.segments],
        }  # fmt: skip

    def summary(self) -> str:
        lines = [f"cuda graphs ({'training' if self.training else 'inference'}, "
                 f"policy {self.policy}): {self.reason}"]  # fmt: skip
        for s in self.segments:
            t = ""
            if s.eager_s is not None and s.graph_s is not None:
                t = f" eager {s.eager_s * 1e6:.1f} us, graph {s.graph_s * 1e6:.1f} us;"
            used = "graphed" if s.chosen else "eager"
            lines.append(f"  {s.name} {s.input_shape}:{t} {used} ({s.reason})")
        return "\n".join(lines)


def default_timer(fn: Callable[[], object]) -> float:
    """Seconds per call: :func:`~fastscarlet.kernels.autotune.time_median` (5 timed runs after 3
    warm-up runs) of 10 back-to-back calls (a late segment's call is short, of the order of the
    synchronisation's own cost, so single calls would mostly time the sync)."""

    def ten() -> None:
        for _ in range(10):
            fn()

    return time_median(ten, warmup=3, reps=5) / 10


@contextlib.contextmanager
def _preserved_state(net: nn.Module) -> Iterator[None]:
    """Capture and timing run the segments (BN running statistics move in train mode, ``.grad``
    accumulates): put both back in place afterwards (same tensors, which the graphs address)."""
    buffers = [(b, b.detach().clone()) for b in net.buffers()]
    grads = [(p, p.grad) for p in net.parameters()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, g in grads:
            p.grad = g


def _set_grads_none(params: Sequence[nn.Parameter]) -> None:
    for p in params:
        p.grad = None


def graph_late_stages(
    net: nn.Module,
    example_input: torch.Tensor,
    *,
    training: bool,
    max_size: int = 14,
    head: bool = True,
    policy: str = "auto",
    autocast: torch.dtype | None = None,
    timer: Timer | None = None,
    margin: float = MARGIN,
    warmup: int = 3,
) -> GraphReport:
    """Replace ``net``'s late segments (:func:`plan_segments`) by CUDA graphs for inputs shaped
    like ``example_input`` (``[N, 3, H, W]``, on the network's device) under ``autocast`` (the
    CUDA autocast dtype the caller will run under, e.g. ``torch.bfloat16`` for AMP; None: none).

    ``training``: graph the training forward and backward (the network is put in train mode), or
    the inference forward (eval mode, to be called under ``torch.no_grad()``). ``policy``:
    ``auto`` times each segment eager and graphed with ``timer`` (default :func:`default_timer`)
    and keeps the graph only if it wins by ``margin`` (the graphed time is the replay alone: the
    check before each replay, :meth:`SegmentGraph.mismatch`, adds microseconds of host time per
    call that it leaves out, which favours the graph near the margin); ``on`` keeps every segment that captures;
    ``off`` changes nothing. Returns the :class:`GraphReport`; on CPU nothing changes ("not on
    CUDA"). Raises ``ValueError`` if ``net`` is already graphed (restore it first).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy: one of {POLICIES}, got {policy!r}")
    for attr in ("space", "blocks", "head", "stem", "first_block"):
        if not hasattr(net, attr):
            raise ValueError(f"net: a fastscarlet Network (no {attr!r} attribute)")
    if isinstance(net.blocks, GraphedBlocks) or isinstance(net.head, GraphedHead):
        raise ValueError("net is already graphed: call restore(net) (or report.restore()) first")
    if example_input.dim() != 4:
        raise ValueError(f"example_input: [N, C, H, W], got shape {tuple(example_input.shape)}")
    n, _, h, w = example_input.shape
    plans = plan_segments(net, (h, w), max_size, head)
    report = GraphReport(
        training, policy, "", str(example_input.dtype).replace("torch.", ""),
        None if autocast is None else str(autocast).replace("torch.", ""),
        [SegmentReport(p.name, [i + 1 for i in p.indices], [n, p.channels, p.size, p.size])
         for p in plans],
        net,
    )  # fmt: skip

    def unchanged(why: str) -> GraphReport:
        report.reason = why
        for s in report.segments:
            s.reason = why
        return report

    if policy == "off":
        return unchanged("policy off")
    param = next(net.parameters(), None)
    if example_input.device.type != "cuda" or (param is not None and param.device.type != "cuda"):
        return unchanged("not on CUDA")
    if not plans:
        return unchanged(f"no block or head with input <= {max_size}x{max_size}")

    net.train(training)
    timer = timer or default_timer
    block_runners: dict[int, SegmentGraph] = {}
    head_runner: SegmentGraph | None = None
    cls = TrainingGraph if training else InferenceGraph
    first_late = plans[0].indices[0] if plans[0].indices else len(net.blocks)
    with _preserved_state(net), torch.cuda.device(example_input.device):
        # Each segment's sample input is the eager output of everything before it.
        with torch.no_grad(), _autocast(autocast):
            x = net.first_block(net.stem(example_input))
            x = _run(list(net.blocks)[:first_late], x)
        for plan, seg in zip(plans, report.segments):
            modules = [net.head] if plan.head else [net.blocks[i] for i in plan.indices]
            sample = x
            with torch.no_grad(), _autocast(autocast):
                x = _run(modules, sample)  # the next segment's input
            seg.input_shape = list(sample.shape)
            if not any(True for m in modules for _ in m.parameters()):
                seg.reason = "nothing to launch (identity blocks only)"
                continue
            try:
                runner = cls(modules, sample, autocast, warmup)
            except Exception as exc:  # a capture the driver refuses stays eager
                seg.reason = f"capture failed: {type(exc).__name__}: {exc}"
                continue
            if training:
                call_input = sample.detach().clone().requires_grad_(True)
                runner.learn_static_grads(call_input)
                dy = torch.randn_like(x)
                params = runner._params

                def step(fn: Callable, call_input=call_input, dy=dy, params=params) -> Callable:
                    def call() -> None:
                        _set_grads_none(params)
                        with _autocast(autocast):
                            y = fn(call_input)
                        y.backward(dy)

                    return call

                candidates = {"eager": step(runner.eager), GRAPH: step(runner.replay)}
            else:
                call_input = sample.clone()

                def infer(fn: Callable, call_input=call_input) -> Callable:
                    def call() -> None:
                        with torch.no_grad(), _autocast(autocast):
                            fn(call_input)

                    return call

                candidates = {"eager": infer(runner.eager), GRAPH: infer(runner.replay)}
            if policy == "auto":
                seg.eager_s = float(timer(candidates["eager"]))
                seg.graph_s = float(timer(candidates[GRAPH]))
            seg.chosen, seg.reason = decide(policy, seg.eager_s, seg.graph_s, margin)
            if seg.chosen:
                if plan.head:
                    head_runner = runner
                else:
                    block_runners[plan.indices[0]] = runner
        torch.cuda.synchronize()
    install(net, block_runners, head_runner)
    kept = sum(s.chosen for s in report.segments)
    report.reason = f"{kept} of {len(report.segments)} segments graphed"
    return report


__all__ = [
    "GRAPH",
    "POLICIES",
    "GraphReport",
    "GraphedBlocks",
    "GraphedHead",
    "InferenceGraph",
    "SegmentGraph",
    "SegmentPlan",
    "SegmentReport",
    "TrainingGraph",
    "block_input_sizes",
    "decide",
    "default_timer",
    "graph_late_stages",
    "install",
    "plan_segments",
    "restore",
]
