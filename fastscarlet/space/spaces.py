"""Search spaces as data: the macro skeleton, the per-layer choices and the registry.

A :class:`SearchSpace` is a frozen description of a network family::

    stem (3x3 s2 conv, BN, act) -> first block (dw3x3, BN, act, 1x1, BN; fixed)
        -> L searchable MBConv layers, each picking one of the space's choices
        -> head (1x1 conv, BN, act [, pool, 1x1 conv, act], pool, classifier)

Every layer has an allowed subset of the space's choice list; a layer with one allowed choice is
fixed. A genome is one choice index per layer (see :mod:`fastscarlet.space.genome`). Built-in spaces
(``papers.md`` section 1):

* ``scarlet``: 19 layers, 13 choices (expansion 3/6 x kernel 3/5/7 x SE off/on, plus identity). The
  identity choice is allowed where stride is 1 and c_in = c_out (every released model respects this);
  ``identity="all"`` allows it at every layer, where its LET stabilizer is a strided or
  channel-changing 1x1 conv.
* ``fairnas``: the same skeleton, 6 choices (no SE, no identity), ReLU6, layer 19 fixed to E6K5.
* ``fairnas_se``: the FairNAS-SE retraining space (timm 0.1.18 style: Swish blocks, SE on every block
  with its width = block-input channels x ratio and a sigmoid gate, ReLU stem and head).
* ``moga``: MobileNetV3-Large skeleton, 14 layers, 12 choices, activation fixed per position.

Users define new spaces with :func:`make_space` and may :func:`register_space` them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

ACTIVATIONS = ("relu", "relu6", "hswish", "swish")
SE_GATES = ("hsigmoid", "sigmoid")
KERNELS = (3, 5, 7)


@dataclass(frozen=True)
class Choice:
    """One candidate operation of a searchable layer: an MBConv variant or identity."""

    expansion: int = 0
    kernel: int = 0
    se: bool = False
    identity: bool = False

    def __post_init__(self) -> None:
        if self.identity:
            if self.expansion or self.kernel or self.se:
                raise ValueError("an identity choice has no expansion, kernel or SE")
            return
        if not isinstance(self.expansion, int) or self.expansion < 1:
            raise ValueError(f"expansion must be a positive integer, got {self.expansion!r}")
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd integer, got {self.kernel!r}")

    @property
    def name(self) -> str:
        """Readable form: ``E6K5``, ``E3K7SE`` or ``ID``."""
        if self.identity:
            return "ID"
        return f"E{self.expansion}K{self.kernel}" + ("SE" if self.se else "")

    @classmethod
    def parse(cls, text: str) -> Choice:
        """Inverse of :attr:`name` (case-insensitive; ``SKIP`` is accepted for ``ID``)."""
        t = str(text).strip().upper()
        if t in ("ID", "SKIP", "IDENTITY"):
            return cls(identity=True)
        se = t.endswith("SE")
        body = t[:-2] if se else t
        if body.startswith("E") and "K" in body:
            e, _, k = body[1:].partition("K")
            if e.isdigit() and k.isdigit():
                return cls(expansion=int(e), kernel=int(k), se=se)
        raise ValueError(f"cannot parse choice {text!r}; expected like 'E6K5', 'E3K7SE' or 'ID'")

    def __str__(self) -> str:
        return self.name


def mbconv_choices(
    expansions: Sequence[int] = (3, 6),
    kernels: Sequence[int] = KERNELS,
    se: Sequence[bool] = (False, True),
    identity: bool = False,
) -> tuple[Choice, ...]:
    """The choice list in the order of papers.md section 1.2.

    ``idx = len(kernels) * expansion_index + kernel_index + len(kernels) * len(expansions) * se``,
    identity last. For the SCARLET defaults this is ``3*[t == 6] + {3: 0, 5: 1, 7: 2}[k] + 6*SE``,
    with 12 = identity.
    """
    out = [Choice(e, k, s) for s in se for e in expansions for k in kernels]
    if identity:
        out.append(Choice(identity=True))
    return tuple(out)


@dataclass(frozen=True)
class SEConfig:
    """Squeeze-and-excitation inside an MBConv choice (applied after the depthwise conv).

    ``reduced = int(base * ratio)`` where ``base`` is the expanded (``"hidden"``) or the block-input
    (``"input"``) channel count; ``act`` is the squeeze activation (``None``: the block's own);
    ``gate`` is the excitation nonlinearity.
    """

    base: str = "hidden"
    ratio: float = 0.25
    act: str | None = "relu"
    gate: str = "hsigmoid"

    def __post_init__(self) -> None:
        if self.base not in ("hidden", "input"):
            raise ValueError(f"SEConfig.base must be 'hidden' or 'input', got {self.base!r}")
        if not (self.ratio > 0):
            raise ValueError(f"SEConfig.ratio must be > 0, got {self.ratio!r}")
        if self.act is not None and self.act not in ACTIVATIONS:
            raise ValueError(f"SEConfig.act must be one of {ACTIVATIONS} or None, got {self.act!r}")
        if self.gate not in SE_GATES:
            raise ValueError(f"SEConfig.gate must be one of {SE_GATES}, got {self.gate!r}")

    def reduced_channels(self, in_channels: int, hidden: int) -> int:
        base = hidden if self.base == "hidden" else in_channels
        return max(1, int(base * self.ratio))


@dataclass(frozen=True)
class Stem:
    """3x3 stride-2 conv, BN, activation."""

    out_channels: int
    activation: str
    kernel: int = 3
    stride: int = 2


@dataclass(frozen=True)
class FirstBlock:
    """The fixed separable block: dw3x3, BN, act, 1x1 conv, BN; no residual (as released)."""

    out_channels: int
    activation: str
    kernel: int = 3


@dataclass(frozen=True)
class Head:
    """1x1 conv to ``features``, BN, act, global average pool [, 1x1 conv to ``hidden`` (no bias,
    no BN), act], dropout, Linear to the classes. ``hidden`` is MoGA's post-pool conv (960->1280)."""

    features: int
    activation: str
    hidden: int | None = None
    dropout: float = 0.0


@dataclass(frozen=True)
class Stage:
    """``depth`` layers with ``out_channels``; the first has ``stride``. ``activation`` is one name
    or one per layer."""

    out_channels: int
    depth: int
    stride: int
    activation: str | tuple[str, ...]


@dataclass(frozen=True)
class Layer:
    """One searchable position, with its shapes and the indices of its allowed choices."""

    index: int
    stage: int
    in_channels: int
    out_channels: int
    stride: int
    activation: str
    allowed: tuple[int, ...]

    @property
    def residual(self) -> bool:
        """A non-identity block at this position adds its input (stride 1, c_in == c_out)."""
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def fixed(self) -> bool:
        return len(self.allowed) == 1


@dataclass(frozen=True)
class SearchSpace:
    """A network family: skeleton, choice list and per-layer allowed choices. See module doc."""

    name: str
    choices: tuple[Choice, ...]
    layers: tuple[Layer, ...]
    stem: Stem
    first_block: FirstBlock
    head: Head
    se: SEConfig = field(default_factory=SEConfig)
    num_classes: int = 1000
    in_channels: int = 3

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError(f"space {self.name!r}: empty choice list")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"space {self.name!r}: duplicate choices in {self.choice_names}")
        if not self.layers:
            raise ValueError(f"space {self.name!r}: no searchable layers")
        for act in (self.stem.activation, self.first_block.activation, self.head.activation):
            _check_activation(act, self.name)
        prev = self.first_block.out_channels
        for i, layer in enumerate(self.layers):
            where = f"space {self.name!r}, layer {i + 1}"
            if layer.index != i:
                raise ValueError(f"{where}: index {layer.index} out of order")
            if layer.in_channels != prev:
                raise ValueError(f"{where}: in_channels {layer.in_channels} != previous {prev}")
            if layer.stride not in (1, 2):
                raise ValueError(f"{where}: stride must be 1 or 2, got {layer.stride}")
            _check_activation(layer.activation, where)
            if not layer.allowed:
                raise ValueError(f"{where}: no allowed choice")
            for c in layer.allowed:
                if not 0 <= c < len(self.choices):
                    raise ValueError(
                        f"{where}: allowed choice {c} outside 0..{len(self.choices) - 1}"
                    )
            prev = layer.out_channels
        if self.num_classes < 1:
            raise ValueError(f"space {self.name!r}: num_classes must be >= 1")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_choices(self) -> int:
        return len(self.choices)

    @property
    def choice_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.choices)

    @property
    def identity_index(self) -> int | None:
        for i, c in enumerate(self.choices):
            if c.identity:
                return i
        return None

    @property
    def searchable_layers(self) -> tuple[int, ...]:
        """Indices of the layers with more than one allowed choice."""
        return tuple(layer.index for layer in self.layers if not layer.fixed)

    @property
    def num_stages(self) -> int:
        return self.layers[-1].stage + 1

    def stage_layers(self, stage: int) -> tuple[int, ...]:
        return tuple(layer.index for layer in self.layers if layer.stage == stage)

    def size(self) -> int:
        """Number of distinct genomes (the product of the allowed-choice counts)."""
        return math.prod(len(layer.allowed) for layer in self.layers)

    def allowed_names(self, layer: int) -> tuple[str, ...]:
        return tuple(self.choices[c].name for c in self.layers[layer].allowed)

    def with_classes(self, num_classes: int) -> SearchSpace:
        """The same space with another classifier width (for transfer to a new dataset)."""
        return replace(self, num_classes=num_classes)


def _check_activation(act: str, where: str) -> None:
    if act not in ACTIVATIONS:
        raise ValueError(f"{where}: activation must be one of {ACTIVATIONS}, got {act!r}")


def make_space(
    name: str,
    *,
    choices: Sequence[Choice],
    stem: Stem,
    first_block: FirstBlock,
    stages: Sequence[Stage],
    head: Head,
    se: SEConfig | None = None,
    identity: str = "equal_shape",
    fixed: dict[int, str | int] | None = None,
    num_classes: int = 1000,
    in_channels: int = 3,
) -> SearchSpace:
    """Build a :class:`SearchSpace` from stages.

    Args:
        identity: where an identity choice (if the list has one) is allowed: ``"equal_shape"``
            (stride 1 and c_in == c_out), ``"stride1"`` (stride 1, channels may change) or ``"all"``.
        fixed: ``{layer_index: choice}`` pins a layer to one choice (name or index), e.g. FairNAS's
            last layer.
    """
    if identity not in ("equal_shape", "stride1", "all"):
        raise ValueError(f"identity must be 'equal_shape', 'stride1' or 'all', got {identity!r}")
    choices = tuple(choices)
    names = [c.name for c in choices]
    layers: list[Layer] = []
    c_in = first_block.out_channels
    for s, stage in enumerate(stages):
        if stage.depth < 1:
            raise ValueError(f"space {name!r}, stage {s + 1}: depth must be >= 1")
        acts = stage.activation
        if isinstance(acts, str):
            acts = (acts,) * stage.depth
        if len(acts) != stage.depth:
            raise ValueError(
                f"space {name!r}, stage {s + 1}: {len(acts)} activations for {stage.depth} layers"
            )
        for d in range(stage.depth):
            stride = stage.stride if d == 0 else 1
            equal = stride == 1 and c_in == stage.out_channels
            id_ok = {
                "equal_shape": equal,
                "stride1": stride == 1,
                "all": True,
            }[identity]
            allowed = tuple(i for i, c in enumerate(choices) if not c.identity or id_ok)
            layers.append(Layer(len(layers), s, c_in, stage.out_channels, stride, acts[d], allowed))
            c_in = stage.out_channels
    for idx, choice in (fixed or {}).items():
        if not 0 <= idx < len(layers):
            raise ValueError(
                f"space {name!r}: fixed layer index {idx} outside 0..{len(layers) - 1}"
            )
        if isinstance(choice, str):
            cname = Choice.parse(choice).name
            c = names.index(cname) if cname in names else -1
        else:
            c = int(choice)
        if not 0 <= c < len(choices):
            raise ValueError(f"space {name!r}: fixed choice {choice!r} not in {names}")
        old = layers[idx]
        layers[idx] = Layer(
            old.index,
            old.stage,
            old.in_channels,
            old.out_channels,
            old.stride,
            old.activation,
            (c,),
        )
    return SearchSpace(
        name=name,
        choices=choices,
        layers=tuple(layers),
        stem=stem,
        first_block=first_block,
        head=head,
        se=se or SEConfig(),
        num_classes=num_classes,
        in_channels=in_channels,
    )


# The 19-position skeleton shared by SCARLET and FairNAS (papers.md section 1.2).
_SCARLET_STAGES = ((32, 2, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))


def scarlet_space(identity: str = "equal_shape", num_classes: int = 1000) -> SearchSpace:
    """ScarletNAS: 19 layers x 13 choices, h-swish blocks, SE with ReLU squeeze and h-sigmoid gate."""
    return make_space(
        "scarlet",
        choices=mbconv_choices(identity=True),
        stem=Stem(32, "relu6"),
        first_block=FirstBlock(16, "relu6"),
        stages=[Stage(c, d, s, "hswish") for c, d, s in _SCARLET_STAGES],
        head=Head(1280, "relu6"),
        se=SEConfig(base="hidden", ratio=0.25, act="relu", gate="hsigmoid"),
        identity=identity,
        num_classes=num_classes,
    )


def fairnas_space(num_classes: int = 1000) -> SearchSpace:
    """FairNAS: 19 positions x 6 choices (E3/E6 x K3/5/7), ReLU6, the last layer fixed to E6K5."""
    return make_space(
        "fairnas",
        choices=mbconv_choices(se=(False,)),
        stem=Stem(32, "relu6"),
        first_block=FirstBlock(16, "relu6"),
        stages=[Stage(c, d, s, "relu6") for c, d, s in _SCARLET_STAGES],
        head=Head(1280, "relu6", dropout=0.2),
        fixed={18: "E6K5"},
        num_classes=num_classes,
    )


def fairnas_se_space(se_ratio: float = 1.0, num_classes: int = 1000) -> SearchSpace:
    """FairNAS-SE (the dagger models): FairNAS genotypes retrained with Swish and SE on every block.

    timm 0.1.18 semantics (``ir_..._se1.0_nsw``): SE width = int(block-input channels x
    ``se_ratio``), Swish squeeze, sigmoid gate; ReLU stem, separable block and head.
    """
    return make_space(
        "fairnas_se",
        choices=mbconv_choices(se=(True,)),
        stem=Stem(32, "relu"),
        first_block=FirstBlock(16, "relu"),
        stages=[Stage(c, d, s, "swish") for c, d, s in _SCARLET_STAGES],
        head=Head(1280, "relu"),
        se=SEConfig(base="input", ratio=se_ratio, act=None, gate="sigmoid"),
        fixed={18: "E6K5SE"},
        num_classes=num_classes,
    )


def moga_space(num_classes: int = 1000) -> SearchSpace:
    """MoGA: MobileNetV3-Large skeleton, 14 layers x 12 choices; ReLU at 1-5, h-swish at 6-14."""
    relu, hs = "relu", "hswish"
    return make_space(
        "moga",
        choices=mbconv_choices(),
        stem=Stem(16, "hswish"),
        first_block=FirstBlock(16, "relu"),
        stages=[
            Stage(24, 2, 2, relu),
            Stage(40, 3, 2, relu),
            Stage(80, 4, 2, hs),
            Stage(112, 2, 1, hs),
            Stage(160, 3, 2, hs),
        ],
        head=Head(960, "hswish", hidden=1280, dropout=0.2),
        se=SEConfig(base="hidden", ratio=0.25, act=None, gate="hsigmoid"),
        num_classes=num_classes,
    )


_REGISTRY: dict[str, Callable[..., SearchSpace]] = {
    "scarlet": scarlet_space,
    "fairnas": fairnas_space,
    "fairnas_se": fairnas_se_space,
    "moga": moga_space,
}


def register_space(name: str, factory: Callable[..., SearchSpace]) -> None:
    """Make ``get_space(name)`` build spaces with ``factory(**kwargs)``."""
    if name in _REGISTRY:
        raise ValueError(f"a space named {name!r} is already registered")
    _REGISTRY[name] = factory


def list_spaces() -> list[str]:
    return sorted(_REGISTRY)


def get_space(name: str | SearchSpace, **kwargs) -> SearchSpace:
    """Look up a registered space by name (a :class:`SearchSpace` passes through)."""
    if isinstance(name, SearchSpace):
        return name
    try:
        factory = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown search space {name!r}; known: {list_spaces()}") from None
    return factory(**kwargs)


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to a multiple of ``divisor``, never below 90% of it (MobileNet's rule,
    timm's ``make_divisible``)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def scale_width(space: SearchSpace, width: float, divisor: int = 8) -> SearchSpace:
    """The same space with every channel count (stem, first block, layers, head) multiplied by
    ``width`` and rounded by :func:`make_divisible`: a slimmer family for small machines.

    Choices, allowed sets and strides are kept. A layer whose channels become equal at the new
    width (e.g. 80 -> 96 at width 0.25: both 24) gets the residual add of an equal-shape MBConv,
    but identity stays where the full-width space allowed it.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    if width == 1.0:
        return space

    def c(n: int) -> int:
        return make_divisible(n * width, divisor)

    head = space.head
    return replace(
        space,
        name=space.name,
        stem=replace(space.stem, out_channels=c(space.stem.out_channels)),
        first_block=replace(space.first_block, out_channels=c(space.first_block.out_channels)),
        layers=tuple(
            replace(layer, in_channels=c(layer.in_channels), out_channels=c(layer.out_channels))
            for layer in space.layers
        ),
        head=replace(
            head,
            features=c(head.features),
            hidden=None if head.hidden is None else c(head.hidden),
        ),
    )


def build_space(cfg: object) -> SearchSpace:
    """The space a run's ``space:`` config section describes.

    ``cfg`` is a :class:`fastscarlet.config.SpaceConfig` (or any object with its attributes
    ``name``, ``identity``, ``num_classes``, ``stem_stride`` and optionally ``width``): a
    registered space with that classifier width, the scarlet space's identity rule, an optional
    stem stride (1 keeps small images such as CIFAR's 32x32 at twice the resolution) and an
    optional width multiplier (:func:`scale_width`).
    """
    name = cfg.name  # type: ignore[attr-defined]
    identity = cfg.identity  # type: ignore[attr-defined]
    stem_stride = cfg.stem_stride  # type: ignore[attr-defined]
    kwargs: dict[str, object] = {"num_classes": cfg.num_classes}  # type: ignore[attr-defined]
    if name == "scarlet":
        kwargs["identity"] = identity
    elif identity != "equal_shape":
        raise ValueError(f"space.identity applies to the scarlet space only, not {name!r}")
    space = get_space(name, **kwargs)
    if stem_stride is not None:
        if stem_stride not in (1, 2):
            raise ValueError(f"space.stem_stride must be 1 or 2, got {stem_stride}")
        space = replace(space, stem=replace(space.stem, stride=stem_stride))
    return scale_width(space, float(getattr(cfg, "width", 1.0)))
