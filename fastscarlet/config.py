"""Training configuration: frozen dataclasses with defaults, YAML recipes, dotted overrides.

``load_config("configs/cifar10.yaml", overrides=["optim.lr=0.1", "train.epochs=3"])`` reads a recipe,
applies overrides (values parsed as YAML scalars) and validates every key: an unknown key is an
error naming it and the keys allowed there, and a number out of its range (``optim.lr=-1``,
``optim.momentum=1``, ``.nan``, ``.inf``) an error naming the key and the range. Never
``exec``/``eval``.

Numbers are read as YAML 1.2 reads them: ``1e-3`` is the float 0.001 (PyYAML follows YAML 1.1, where
a float needs a dot, and would read it as the string ``"1e-3"``).

Paths: a relative ``data.root`` written in a recipe file is looked up from the recipe's folder first,
then from the current folder; one given by ``--data`` or an override is taken from the current
folder, as a shell would.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3``/``5E+4``/``.5e2`` (an exponent without a dot) as
    floats, as YAML 1.2 and every other YAML library do."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def _yaml_load(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no code runs
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where} is not valid YAML: {problem}{at}") from None


@dataclass(frozen=True)
class SpaceConfig:
    name: str = "scarlet"
    identity: str = "equal_shape"  # scarlet only: equal_shape | stride1 | all
    num_classes: int = 1000
    share_se: bool = False
    let_init: str = "conv"  # conv | identity
    zero_init_residual: bool = False  # residual MBConvs start as the identity (bn3 gamma = 0)
    stem_stride: int | None = None  # None: the space's (2); 1 for 32x32 inputs (CIFAR recipe)
    aligned_init: bool = False  # every choice of a layer starts as the same function (SuperNet)
    width: float = 1.0  # channel multiplier (space.scale_width); < 1 for small machines (demo)
    stabilizer: bool = True  # identity choices carry the LET; false: a plain identity (SuperNet)


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "strict_fair"  # uniform | strict_fair | size_proportional | a registered name


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None
    backend: str = "torch"  # torch | dali | synthetic
    recipe: str = "imagenet"  # imagenet | cifar
    image_size: int = 224
    crop_scale_min: float = 0.08  # smallest area fraction of the train random-resized crop
    # false: training images get the eval transform (no random crop or flip). For runs shorter
    # than an epoch or two, where augmentation only slows learning (configs/demo_cpu.yaml).
    augment: bool = True
    batch_size: int = 128  # per path, per rank
    eval_batch_size: int = 256
    num_workers: int = 4
    verify: str = "header"  # none | header | decode: the scan that finds unreadable files
    on_corrupt: str = "skip"  # skip | error: what a corrupt image does
    channels_last: bool = False


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.05  # for a batch of 128 per path (scaled linearly with the global batch)
    scale_lr: bool = True
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5
    warmup_epochs: float = 5.0
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    grad_clip: float = 0.0  # max global grad norm; 0 disables (see configs/cifar10.yaml for why)
    shared_grad: str = "mean"  # mean | sum: how a step combines the m path gradients


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 150.0
    max_steps: int | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "bf16"  # none | bf16 | fp16 (CUDA only; CPU always runs fp32)
    deterministic: bool = False
    log_every: int = 20
    checkpoint_every: int = 500  # steps
    keep_step_checkpoints: bool = False
    out: str = "runs/supernet"
    tensorboard: bool = True
    progress: bool = True


@dataclass(frozen=True)
class Config:
    space: SpaceConfig = field(default_factory=SpaceConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {
    ("data", "backend"): ("torch", "dali", "synthetic"),
    ("data", "recipe"): ("imagenet", "cifar"),
    ("data", "verify"): ("none", "header", "decode"),
    ("data", "on_corrupt"): ("skip", "error"),
    ("optim", "shared_grad"): ("mean", "sum"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("train", "amp"): ("none", "bf16", "fp16"),
    ("space", "identity"): ("equal_shape", "stride1", "all"),
    ("space", "let_init"): ("conv", "identity"),
}


@dataclass(frozen=True)
class _Range:
    """The allowed values of a numeric key: ``low``..``high``, each end open or closed."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True

    def __contains__(self, v: float) -> bool:
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


_POSITIVE = _Range(0, low_open=True)
_NON_NEGATIVE = _Range(0)
_AT_LEAST_1 = _Range(1)
_FRACTION = _Range(0, 1, high_open=True)  # [0, 1)

# Every numeric key has a range; float keys must also be finite (.nan and .inf never make sense).
_RANGES = {
    ("space", "num_classes"): _AT_LEAST_1,
    ("space", "stem_stride"): _AT_LEAST_1,
    ("space", "width"): _POSITIVE,
    ("data", "image_size"): _AT_LEAST_1,
    ("data", "crop_scale_min"): _Range(0, 1, low_open=True, high_open=False),  # (0, 1]
    ("data", "batch_size"): _AT_LEAST_1,
    ("data", "eval_batch_size"): _AT_LEAST_1,
    ("data", "num_workers"): _NON_NEGATIVE,
    ("optim", "lr"): _POSITIVE,
    ("optim", "momentum"): _FRACTION,
    ("optim", "weight_decay"): _NON_NEGATIVE,
    ("optim", "warmup_epochs"): _NON_NEGATIVE,
    ("optim", "min_lr"): _NON_NEGATIVE,
    ("optim", "label_smoothing"): _FRACTION,
    ("optim", "grad_clip"): _NON_NEGATIVE,  # 0 disables
    ("train", "epochs"): _NON_NEGATIVE,
    ("train", "max_steps"): _AT_LEAST_1,  # null: train.epochs decides
    ("train", "seed"): _NON_NEGATIVE,  # numpy's generators refuse negative seeds
    ("train", "log_every"): _AT_LEAST_1,
    ("train", "checkpoint_every"): _NON_NEGATIVE,  # 0: only at the end
}


def _check_range(value: Any, key: tuple[str, str], where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config key {where}: must be a finite number, got {value!r}")
    allowed = _RANGES.get(key)
    if allowed is not None and value is not None and value not in allowed:
        hint = {
            ("train", "max_steps"): " (null lets train.epochs decide)",
            ("train", "checkpoint_every"): " (0 checkpoints only at the end)",
        }.get(key, "")
        raise ValueError(f"config key {where}: must be {allowed}{hint}, got {value!r}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the dataclass field type ``tp``."""
    origin = get_origin(tp)
    if origin is not None and type(None) in get_args(tp):  # Optional[X]
        if value is None:
            return None
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(value, inner, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - no other field types
        return value
    raise ValueError(f"config key {where}: expected {tp.__name__}, got {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix or '<root>'} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ValueError(
            f"unknown config key {where}{unknown[0]}; allowed in {prefix or 'the root'}: "
            f"{sorted(names)}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, key)
        else:
            value = _coerce(value, tp, key)
            _check_range(value, (prefix, name), key)
            allowed = _CHOICES.get((prefix, name))
            if allowed and value not in allowed:
                raise ValueError(f"config key {key}: must be one of {allowed}, got {value!r}")
            kwargs[name] = value
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"config override {dotted}: {p} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.1"`` -> ``("optim.lr", 0.1)``; the value is a YAML scalar."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"config override {text!r} must look like section.key=value")
    value = _yaml_load(raw, f"the value of config override {text!r}") if raw.strip() else None
    return key.strip(), value


def config_from_dict(
    data: dict[str, Any],
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> Config:
    """Build a :class:`Config` from a nested dict, then ``overrides`` (``"a.b=yaml"`` strings),
    then ``values`` (``{"a.b": python_value}``, e.g. from CLI flags)."""
    import copy

    tree = copy.deepcopy(data or {})
    for ov in overrides or []:
        key, value = parse_override(ov)
        _set_dotted(tree, key, value)
    for key, value in (values or {}).items():
        _set_dotted(tree, key, value)
    return _build(Config, tree, "")


def load_config(
    path: str | os.PathLike | None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> Config:
    """Read a YAML recipe (or start from the defaults with ``path=None``) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {describe_path(path)}")
        with open(path) as f:
            data = _yaml_load(f.read(), f"config file {path}") or {}
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            root = data["data"].get("root")
            if isinstance(root, str):
                data["data"]["root"] = resolve_recipe_path(root, Path(path).parent)
    return config_from_dict(data, overrides, values)


def describe_path(path: str | os.PathLike) -> str:
    """``path`` for an error message: a relative one with the absolute path it was resolved to."""
    text = os.fspath(path)
    if os.path.isabs(os.path.expanduser(text)):
        return text
    return f"{text} (relative paths are taken from the current folder: {os.path.abspath(text)})"


def resolve_recipe_path(path: str, recipe_folder: Path) -> str:
    """A path written in a recipe: taken from the recipe's folder when it exists there (so a recipe
    works from any current folder), else left as written (from the current folder)."""
    expanded = os.path.expanduser(path)
    if os.path.isabs(expanded):
        return path
    beside = recipe_folder / expanded
    return str(beside.resolve()) if beside.exists() else path


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
