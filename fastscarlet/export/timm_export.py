"""A subnet as a timm model: the arch-def strings timm's builders decode, and the weights.

timm (1.0.31) builds MBConv networks from block strings (``_efficientnet_builder.decode_arch_def``)
with one of two classes:

* ``EfficientNet`` (stem, blocks, 1x1 conv + BN + act, pool, Linear): SCARLET, FairNAS, FairNAS-SE.
  Its builder computes the SE width from the block **input** (``se_from_exp=False``), so the
  ratio we write is ``reduced / c_in``.
* ``MobileNetV3`` (stem, blocks, pool, 1x1 conv + act, Linear: the "efficient head"): MoGA, whose
  160->960 conv + BN + h-swish becomes a final ``cn`` block and whose post-pool 960->1280 conv (no
  bias, no BN) is ``conv_head`` with ``head_bias=False``. Its SE width is from the expanded width.

The classes are built with explicit arguments, not by model name: the SE module is timm's
``SqueezeExcite`` with our gate and squeeze activation and ``round`` (not timm's divisible-by-8
rounding, which MobileNetV3's defaults use), channels are kept as they are (``fix_stem``, an
identity ``round_chs_fn``), and the first block gets ``noskip`` (the released separable block has
no residual, timm's adds one where c_in == c_out, e.g. MoGA's 16->16).

**What timm cannot express** (each raises ``ValueError`` naming the layer and why):

* a LET stabilizer kept as a 1x1 conv (``identity="let"``, or ``"fold"`` before a residual
  block): timm has no block for a bare 1x1 conv between inverted residuals;
* an identity choice at a layer that changes the shape (stride 2 or c_in != c_out): there the
  identity is a strided or channel-changing LET, or it was folded into the next expand conv,
  which timm's ``InvertedResidual`` builds with stride 1 from the block's own input;
* an expanded width that is not timm's ``make_divisible(c_in * e)`` (timm rounds it to a multiple
  of 8), an SE width timm's ratio arithmetic does not reproduce, a stem with stride other than 2
  (or kernel other than 3 for MobileNetV3), a stem activation other than the head's (timm uses one
  model activation for both), a total stride above 32 (timm dilates instead).

Plain identity layers are simply absent from the arch-def (timm has no skip block); LETs folded
into the next block without a residual, or into the head, change weights, not structure, and
export exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastscarlet.export.optional import require
from fastscarlet.nn.network import Network
from fastscarlet.nn.stabilizer import LinearStabilizer
from fastscarlet.space import SearchSpace, validate_genome
from fastscarlet.space.serialize import load_json

TIMM_FORMAT = "fastscarlet.timm/1"
_TAG = {"relu": "re", "relu6": "r6", "hswish": "hs", "swish": "sw"}
_TIMM_ACT = {"relu": "relu", "relu6": "relu6", "hswish": "hard_swish", "swish": "swish"}
_TIMM_GATE = {"hsigmoid": "hard_sigmoid", "sigmoid": "sigmoid"}


def _num(x: float) -> str:
    """A number as timm's block strings carry it: ``3``, ``0.75`` (repr: exact round trip)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _cannot(space: SearchSpace, where: str, why: str) -> ValueError:
    return ValueError(f"timm cannot express {where} of this {space.name} network: {why}")


def _layer_where(space: SearchSpace, genome: Sequence[int], i: int) -> str:
    return f"layer {i + 1} ({space.choices[genome[i]].name})"


def _ir_block(space: SearchSpace, genome: Sequence[int], i: int, efficientnet: bool) -> str:
    from timm.layers import make_divisible

    layer, c = space.layers[i], space.choices[genome[i]]
    hidden = round(layer.in_channels * c.expansion)
    e = _num(hidden / layer.in_channels)
    timm_mid = make_divisible(layer.in_channels * float(e))
    if timm_mid != hidden:
        raise _cannot(
            space, _layer_where(space, genome, i),
            f"the expanded width is {hidden}, timm's InvertedResidual makes it "
            f"make_divisible({layer.in_channels} * {e}) = {timm_mid}",
        )  # fmt: skip
    se = ""
    if c.se:
        reduced = space.se.reduced_channels(layer.in_channels, hidden)
        # EfficientNet's builder divides the ratio by the expansion (SE width from the input).
        ratio = _num(reduced / layer.in_channels if efficientnet else reduced / hidden)
        timm_rd = round(hidden * (float(ratio) / float(e) if efficientnet else float(ratio)))
        if timm_rd != reduced:
            raise _cannot(
                space, _layer_where(space, genome, i),
                f"the SE width is {reduced}, timm's ratio {ratio} gives {timm_rd}",
            )  # fmt: skip
        se = f"_se{ratio}"
    return f"ir_r1_k{c.kernel}_s{layer.stride}_e{e}_c{layer.out_channels}{se}_n{_TAG[layer.activation]}"


def timm_spec(space: SearchSpace, genome: Sequence[int]) -> dict[str, Any]:
    """What timm needs to build ``genome`` with plain identity layers (JSON-serialisable):
    ``{"format", "model_class", "arch_def", "kwargs"}``; :func:`build_timm` builds it."""
    require("timm", "timm export")
    g = validate_genome(space, genome)
    head, stem, fb = space.head, space.stem, space.first_block
    efficientnet = head.hidden is None
    if stem.stride != 2:
        raise _cannot(space, "the stem", f"its stride is {stem.stride}; timm's stem has stride 2")
    if not efficientnet and stem.kernel != 3:
        raise _cannot(space, "the stem", f"kernel {stem.kernel}; MobileNetV3's stem is 3x3")
    if stem.activation != head.activation:
        raise _cannot(
            space, "the stem",
            f"its activation {stem.activation} differs from the head's {head.activation}; timm "
            "uses one model activation for both",
        )  # fmt: skip
    total_stride = stem.stride
    for layer in space.layers:
        total_stride *= layer.stride
    if total_stride > 32:
        raise _cannot(space, "the network", f"total stride {total_stride} > 32 (timm dilates)")
    noskip = "_noskip" if stem.out_channels == fb.out_channels else ""
    arch_def = [[f"ds_r1_k{fb.kernel}_s1_c{fb.out_channels}_n{_TAG[fb.activation]}{noskip}"]]
    for s in range(space.num_stages):
        blocks = []
        for i in space.stage_layers(s):
            layer = space.layers[i]
            if space.choices[g[i]].identity:
                if layer.stride != 1 or layer.in_channels != layer.out_channels:
                    raise _cannot(
                        space, _layer_where(space, g, i),
                        f"an identity at a layer with stride {layer.stride} and channels "
                        f"{layer.in_channels}->{layer.out_channels} is a strided or "
                        "channel-changing LET (or is folded into the next expand conv), and "
                        "timm has no block for it",
                    )  # fmt: skip
                continue
            blocks.append(_ir_block(space, g, i, efficientnet))
        if blocks:
            arch_def.append(blocks)
    kwargs: dict[str, Any] = {
        "num_classes": space.num_classes,
        "in_chans": space.in_channels,
        "stem_size": stem.out_channels,
        "fix_stem": True,
        "act_layer": _TIMM_ACT[head.activation],
        "drop_rate": head.dropout,
        "se_layer": {
            "gate_layer": _TIMM_GATE[space.se.gate],
            "force_act_layer": _TIMM_ACT[space.se.act] if space.se.act else None,
            "rd_round_fn": "round",
        },
        "round_chs_fn": "keep",
    }
    if efficientnet:
        kwargs.update(num_features=head.features, stem_kernel_size=stem.kernel)
    else:
        arch_def.append([f"cn_r1_k1_s1_c{head.features}_n{_TAG[head.activation]}"])
        kwargs.update(num_features=head.hidden, head_bias=False, se_from_exp=True)
    return {
        "format": TIMM_FORMAT,
        "model_class": "EfficientNet" if efficientnet else "MobileNetV3",
        "arch_def": arch_def,
        "kwargs": kwargs,
    }


def timm_arch_def(space: SearchSpace, genome: Sequence[int]) -> list[list[str]]:
    """The arch-def (list of stages of block strings) of ``genome`` for timm's builders."""
    return timm_spec(space, genome)["arch_def"]


def _keep_channels(channels: int, *args: object, **kwargs: object) -> int:
    return int(channels)


def build_timm(spec: dict[str, Any]) -> nn.Module:
    """A freshly initialised timm model (eval mode) from a :func:`timm_spec`."""
    require("timm", "building a timm model")
    from timm.layers import get_act_layer
    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3

    if not isinstance(spec, dict) or spec.get("format") != TIMM_FORMAT:
        raise ValueError(f"not a fastscarlet timm spec (expected format {TIMM_FORMAT!r})")
    kw = dict(spec["kwargs"])
    se = kw.pop("se_layer")
    force = se.get("force_act_layer")
    kw["se_layer"] = partial(
        SqueezeExcite,
        gate_layer=get_act_layer(se["gate_layer"]),
        force_act_layer=get_act_layer(force) if force else None,
        rd_round_fn=round,
    )
    kw.pop("round_chs_fn", None)
    kw["act_layer"] = get_act_layer(kw["act_layer"])
    cls = {"EfficientNet": EfficientNet, "MobileNetV3": MobileNetV3}[spec["model_class"]]
    model = cls(decode_arch_def(spec["arch_def"]), round_chs_fn=_keep_channels, **kw)
    return model.eval()


# --- weights -----------------------------------------------------------------------------------


def _pairs(
    network: Network, model: nn.Module, mobilenetv3: bool
) -> list[tuple[str, nn.Module, nn.Module]]:
    """(where, our module, timm's module) for every module with weights, in network order."""
    net = network
    fb, tfb = net.first_block, model.blocks[0][0]
    pairs = [
        ("stem conv", net.stem[0], model.conv_stem),
        ("stem BN", net.stem[1], model.bn1),
        ("first block dw", fb[0], tfb.conv_dw),
        ("first block BN 1", fb[1], tfb.bn1),
        ("first block pw", fb[3], tfb.conv_pw),
        ("first block BN 2", fb[4], tfb.bn2),
    ]
    stages = list(model.blocks)[1 : -1 if mobilenetv3 else None]
    timm_blocks = [b for stage in stages for b in stage]
    ours = [(i, b) for i, b in enumerate(net.blocks) if not isinstance(b, nn.Identity)]
    if len(ours) != len(timm_blocks):
        raise ValueError(f"{len(ours)} blocks here, {len(timm_blocks)} in the timm model")
    for (i, b), t in zip(ours, timm_blocks):
        where = f"layer {i + 1}"
        if b.residual != t.has_skip:
            raise ValueError(f"{where}: residual {b.residual} here, skip {t.has_skip} in timm")
        pairs += [
            (f"{where} expand", b.expand, t.conv_pw),
            (f"{where} BN 1", b.bn1, t.bn1),
            (f"{where} dw", b.dw, t.conv_dw),
            (f"{where} BN 2", b.bn2, t.bn2),
            (f"{where} project", b.project, t.conv_pwl),
            (f"{where} BN 3", b.bn3, t.bn3),
        ]
        if b.se is not None:
            pairs += [
                (f"{where} SE reduce", b.se.reduce, t.se.conv_reduce),
                (f"{where} SE expand", b.se.expand, t.se.conv_expand),
            ]
    h = net.head
    if mobilenetv3:
        cn = model.blocks[-1][0]
        pairs += [
            ("head conv", h.conv, cn.conv),
            ("head BN", h.bn, cn.bn1),
            ("head post-pool conv", h.hidden, model.conv_head),
        ]
    else:
        pairs += [("head conv", h.conv, model.conv_head), ("head BN", h.bn, model.bn2)]
    pairs.append(("classifier", h.classifier, model.classifier))
    return pairs


def _copy(where: str, ours: nn.Module, theirs: nn.Module) -> None:
    src, dst = ours.state_dict(), theirs.state_dict()
    if set(src) != set(dst) or any(src[k].shape != dst[k].shape for k in src):
        shapes = {k: tuple(v.shape) for k, v in src.items()}
        raise ValueError(
            f"{where}: weights {shapes} do not fit timm's {type(theirs).__name__} "
            f"{ {k: tuple(v.shape) for k, v in dst.items()} }"
        )
    theirs.load_state_dict(src)
    if isinstance(ours, nn.BatchNorm2d):
        theirs.eps, theirs.momentum = ours.eps, ours.momentum


def _check_modules(network: Network) -> None:
    space, g = network.space, network.genome
    for i, b in enumerate(network.blocks):
        if isinstance(b, LinearStabilizer):
            raise _cannot(
                space, _layer_where(space, g, i),
                "the LET stabilizer is kept as a 1x1 conv (identity 'let', or 'fold' before a "
                "residual block) and timm has no block for it; export with identity 'plain' "
                "(the identity the papers retrain)",
            )  # fmt: skip
    if network.head.conv.stride != (1, 1):
        raise _cannot(space, "the head", "a strided LET is folded into its 1x1 conv")


def to_timm(network: Network) -> nn.Module:
    """The timm model of ``network`` with its weights copied (same mode, train or eval): the
    same function, to float rounding. Raises ``ValueError`` naming the layer timm cannot express.
    """
    if not isinstance(network, Network):
        raise ValueError(f"to_timm() takes a fastscarlet Network, got {type(network).__name__}")
    _check_modules(network)
    spec = timm_spec(network.space, network.genome)
    p = next(network.parameters())
    model = build_timm(spec).to(device=p.device, dtype=p.dtype)
    mobilenetv3 = spec["model_class"] == "MobileNetV3"
    with torch.no_grad():
        for where, ours, theirs in _pairs(network, model, mobilenetv3):
            _copy(where, ours, theirs)
    model.fastscarlet_spec = spec
    return model.train(network.training)


def save_timm(network: Network, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the spec of ``network`` as JSON to ``path`` and the timm model's state dict next to
    it (``path`` with suffix ``.pth``); :func:`load_timm` reads them back."""
    model = to_timm(network)
    path = Path(path)
    weights = path.with_suffix(".pth") if path.suffix != ".pth" else path.with_suffix(".timm.pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
    spec = {**model.fastscarlet_spec, "weights": weights.name}
    path.write_text(json.dumps(spec, indent=1) + "\n")
    return path, weights


def load_timm(path: str | os.PathLike) -> nn.Module:
    """The timm model :func:`save_timm` wrote (eval mode), built by timm alone."""
    spec = load_json(path, "fastscarlet timm export")
    model = build_timm(spec)
    weights = Path(path).parent / spec["weights"]
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
