"""Training configuration: frozen dataclasses with defaults, YAML recipes, dotted overrides.

``load_config("configs/cifar10.yaml", overrides=["optim.lr=0.1", "train.epochs=3"])`` reads a recipe,
applies overrides (values parsed as YAML scalars) and validates every key: an unknown key is an
error naming it and the keys allowed there. Never ``exec``/``eval``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

import yaml


@dataclass(frozen=True)
class SpaceConfig:
    name: str = "scarlet"
    identity: str = "equal_shape"  # scarlet only: equal_shape | stride1 | all
    num_classes: int = 1000
    share_se: bool = False
    let_init: str = "conv"  # conv | identity
    zero_init_residual: bool = False  # residual MBConvs start as the identity (bn3 gamma = 0)
    stem_stride: int | None = None  # None: the space's (2); 1 for 32x32 inputs (CIFAR recipe)
    width: float = 1.0  # channel multiplier (space.scale_width); < 1 for small machines (demo)


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
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


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
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    return config_from_dict(data, overrides, values)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
