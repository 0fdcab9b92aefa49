"""Which implementation runs one MBConv call: the reference, the whole-block Triton kernels or the
partial fusion; measured per block signature where the mode says so.

:func:`implementation` applies :func:`.dispatch.block_candidates` to a call: no candidate (the
default today, and always on CPU) returns None and the module runs its own PyTorch code; a forced
mode (``triton``, ``partial``) returns that candidate where it covers the call; a measured mode
(``measure``, and ``auto`` once candidates are verified) returns the choice of
:class:`.autotune.Autotuner` for the call's :class:`~.autotune.BlockSignature`, measured at the
first call of that signature on this device and library version and read from the on-disk cache
after that (``$FASTSCARLET_CACHE_DIR``).

A measurement runs on the call's own input, weights and autocast state:

1. **check**: each kernel candidate's output (and, where a backward follows, its input and
   weight gradients) is compared with the reference's; a candidate off by more than
   :data:`CHECK_RTOL` of the reference's largest magnitude, or that raises, is rejected and never
   timed (it would be wrong, not merely slow, on this device);
2. **time**: each remaining candidate, the reference included, once after warm-up, forward and
   (where a backward follows) the backward by ``torch.autograd.grad``, so no ``.grad`` is touched;
3. the BN running statistics (and ``num_batches_tracked``) are restored to what they were before
   the measurement, then the chosen candidate runs the call itself: the module's state changes
   exactly as one call would change it.

Only a signature's first call measures: later calls find the decision in the tuner's cache
before anything is allocated. Under ``torch.compile`` the measured modes run the reference (the
cache is a file, which dynamo cannot trace; ``triton``/``partial`` force a kernel into a compiled
graph); while a CUDA graph captures, a cached decision is used if there is one, else the
reference (timing needs host synchronisation).

Limits, by design: a measurement holds one more block's activations and gradients at the first
call of a signature (warm the cache with a smaller run, or ``benchmarks/bench_mbconv.py``, where
memory is tight); a kernel that faults on the device (an illegal address) is not "rejected", it
ends the CUDA context, which is why ``auto`` measures only GPU-verified candidates; under AMP the
kernels return the autocast dtype where the reference's residual add promotes to the input's
dtype; processes (DDP ranks) that measure the same signature at once may choose differently.

:func:`recent` lists the decisions this process measured; ``fastscarlet info --dispatch`` lists
every decision cached on this machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .autotune import REFERENCE, Autotuner, BlockSignature, Decision, cache_dir, device_name
from .dispatch import _triton_state, block_candidates, current_mode

# A candidate whose output or gradients differ from the reference's by more than this fraction of
# the reference's largest magnitude is rejected. A coarse gate against wrong results (a miscompiled
# kernel, a new Triton), not the error budget of the tests (kernels/testing.py): bf16 rounding
# of the block's output and gradients stays within ~1% of the largest value.
CHECK_RTOL = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}

BlockFn = Callable[[nn.Module, torch.Tensor, "nn.Module | None"], torch.Tensor]

# Registries (the only module-level state): one tuner per (device, cache file), and the decisions
# this process took, by signature key.
_TUNERS: dict[tuple[str, str], Autotuner] = {}
_RECENT: dict[str, tuple[BlockSignature, Decision]] = {}


def unsupported(name: str, block: nn.Module, se: nn.Module | None, x: torch.Tensor) -> str | None:
    """Why candidate ``name`` cannot run this call (None: it can)."""
    if name == "triton":
        from .mbconv import unsupported_reason

        return unsupported_reason(block, se, x)
    if name == "partial":
        from .mbconv_partial import partial_unsupported_reason

        return partial_unsupported_reason(block, se, x)
    raise ValueError(f"unknown MBConv candidate {name!r}")


def runner(name: str) -> BlockFn:
    """The entry point of candidate ``name``: ``fn(block, x, se) == block.forward_with_se(x, se)``."""
    if name == REFERENCE:
        return reference_forward
    if name == "triton":
        from .mbconv import mbconv_block_forward

        return mbconv_block_forward
    if name == "partial":
        from .mbconv_partial import mbconv_partial_forward

        return mbconv_partial_forward
    raise ValueError(f"unknown MBConv candidate {name!r}")


def reference_forward(block: nn.Module, x: torch.Tensor, se: nn.Module | None) -> torch.Tensor:
    """The module's own PyTorch code (``MBConv.reference_forward``)."""
    return block.reference_forward(x, se)


def signature(block: nn.Module, se: nn.Module | None, x: torch.Tensor) -> BlockSignature:
    """What the decision (and the check behind it) for this call depends on."""
    from .activations import module_act_name

    dt = x.dtype
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
    shapes = (
        tuple(x.shape),
        tuple(block.expand.weight.shape[:2]),
        tuple(block.dw.weight.shape[:1]) + tuple(block.dw.weight.shape[2:]),
        tuple(block.project.weight.shape[:2]),
        tuple(block.expand.stride),
    )
    act = str(block.act_name)
    if se is not None:
        shapes += (tuple(se.reduce.weight.shape[:2]),)
        act += f"+se-{module_act_name(se.act)}-{module_act_name(se.gate)}"
    return BlockSignature(
        shapes=shapes,
        dtype=str(dt).removeprefix("torch."),
        stride=int(block.dw.stride[0]),
        kernel=int(block.dw.kernel_size[0]),
        se=se is not None,
        residual=bool(block.residual),
        training=bool(block.training),
        device=device_name(x.device),
        grad=_needs_grad(block, se, x),
        act=act,
    )


def _needs_grad(block: nn.Module, se: nn.Module | None, x: torch.Tensor) -> bool:
    if not torch.is_grad_enabled():
        return False
    params = list(block.parameters()) + (list(se.parameters()) if se is not None else [])
    return x.requires_grad or any(p.requires_grad for p in params)


def tuner(device: torch.device) -> Autotuner:
    """The process's :class:`Autotuner` for ``device`` (one per device and cache folder)."""
    name = device_name(device)
    key = (name, str(cache_dir()))
    if key not in _TUNERS:
        _TUNERS[key] = Autotuner(name)
    return _TUNERS[key]


@contextlib.contextmanager
def _state_kept(modules: list[nn.Module]) -> Iterator[None]:
    """Restore every BN buffer of ``modules`` on exit (a measurement runs the block many times)."""
    saved = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _call(
    name: str, block: nn.Module, se: nn.Module | None, x: torch.Tensor, dy: torch.Tensor | None
) -> list[torch.Tensor]:
    """One call of candidate ``name``: ``[y]``, plus ``d(y . dy)`` w.r.t. the input (if it needs
    a gradient) and each parameter that needs one, when ``dy`` is given."""
    xi = x.detach().requires_grad_(x.requires_grad) if dy is not None else x.detach()
    y = runner(name)(block, xi, se)
    if dy is None:
        return [y]
    params = [p for m in (block, se) if m is not None for p in m.parameters() if p.requires_grad]
    inputs = ([xi] if xi.requires_grad else []) + params
    grads = torch.autograd.grad(y, inputs, dy.to(y.dtype), allow_unused=True)
    return [y] + [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, inputs)]


def _mismatch(got: list[torch.Tensor], ref: list[torch.Tensor], dtype: torch.dtype) -> str | None:
    rtol = CHECK_RTOL.get(dtype, CHECK_RTOL[torch.float32])
    names = ["output"] + [f"gradient {i}" for i in range(1, len(ref))]
    for what, a, b in zip(names, got, ref):
        a, b = a.detach().float(), b.detach().float()
        if a.shape != b.shape:
            return f"{what}: shape {tuple(a.shape)}, reference {tuple(b.shape)}"
        if not torch.isfinite(a).all():
            return f"{what}: not finite"
        scale = b.abs().max().item()
        err = (a - b).abs().max().item()
        if err > rtol * max(scale, 1e-6):
            return f"{what}: max error {err:.3g} > {rtol:g} x max|reference| {scale:.3g}"
    return None


def measure(
    block: nn.Module,
    se: nn.Module | None,
    x: torch.Tensor,
    names: tuple[str, ...],
    tune: Autotuner,
    sig: BlockSignature,
) -> Decision:
    """Check and time ``names`` against the reference on this call (steps 1-3 of the module
    doc); the tuner returns its cached decision instead where it has one."""
    dy = None
    if sig.grad:
        gen = torch.Generator(device=x.device).manual_seed(0)
        dy = torch.randn(_out_shape(block, x), generator=gen, device=x.device)
        dy = dy.contiguous(memory_format=torch.channels_last)
    dtype = getattr(torch, sig.dtype)

    def verify(kernels: list[str]) -> dict[str, str]:
        ref = _call(REFERENCE, block, se, x, dy)
        bad: dict[str, str] = {}
        for name in kernels:
            try:
                why = _mismatch(_call(name, block, se, x, dy), ref, dtype)
            except Exception as exc:  # a kernel that raises here is rejected, not fatal
                why = f"raised {type(exc).__name__}: {exc}"
            if why is not None:
                bad[name] = why
        return bad

    cands = {n: (lambda n=n: _call(n, block, se, x, dy)) for n in (REFERENCE, *names)}
    on_device = torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
    with _state_kept([m for m in (block, se) if m is not None]), on_device:
        return tune.decide(sig, cands, verify)


def _out_shape(block: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    from .depthwise import dw_out_size  # measured modes run only where Triton imports

    es, s = block.expand.stride[0], block.dw.stride[0]
    h, w = (dw_out_size(dw_out_size(n, es), s) for n in x.shape[2:])
    return (x.shape[0], block.project.out_channels, h, w)


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


_CPU_AUTO = Decision(REFERENCE, reason="auto: not on a CUDA device")


def choose(block: nn.Module, se: nn.Module | None, x: torch.Tensor) -> Decision:
    """The implementation that runs this call under the mode in force, and why."""
    mode = current_mode()
    if mode == "auto" and not x.is_cuda:  # the common CPU case, decided without a probe
        return _CPU_AUTO
    if mode == "reference":
        return Decision(REFERENCE, reason="FASTSCARLET_KERNELS=reference")
    usable, interpret, why_not = _triton_state()
    names, timed, why = block_candidates(mode, x.is_cuda, usable, interpret, why_not)
    gaps = {n: r for n in names if (r := unsupported(n, block, se, x)) is not None}
    names = tuple(n for n in names if n not in gaps)
    if not names:
        if gaps:
            why += "; not covered: " + "; ".join(f"{n}: {r}" for n, r in gaps.items())
        return Decision(REFERENCE, reason=why)
    if not timed:
        return Decision(names[0], reason=why)
    if torch.compiler.is_compiling():
        return Decision(REFERENCE, reason=f"{why}; not measured under torch.compile")
    tune = tuner(x.device)
    sig = signature(block, se, x)
    hit = tune.cached(sig)
    if hit is not None and (hit.choice == REFERENCE or hit.choice in names):
        return hit  # every call after a signature's first: no allocation, no timing
    if _capturing():
        return Decision(REFERENCE, reason=f"{why}; not measured while a CUDA graph captures")
    decision = measure(block, se, x, names, tune, sig)
    _RECENT[sig.key()] = (sig, decision)
    return decision


def implementation(block: nn.Module, se: nn.Module | None, x: torch.Tensor) -> BlockFn | None:
    """The kernel entry point that runs this call, or None where the reference runs."""
    choice = choose(block, se, x).choice
    return None if choice == REFERENCE else runner(choice)


def recent() -> list[tuple[BlockSignature, Decision]]:
    """The measured decisions this process took (one per block signature), in order."""
    return list(_RECENT.values())


__all__ = [
    "CHECK_RTOL",
    "choose",
    "implementation",
    "measure",
    "recent",
    "reference_forward",
    "runner",
    "signature",
    "tuner",
    "unsupported",
]
