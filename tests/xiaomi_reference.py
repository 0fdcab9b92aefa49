"""An independent transcription of the authors' released evaluation models, for tests.

Written from papers.md section 1.1 (the ``InvertedResidual``/SE/stem/separable/head of
xiaomi-automl/SCARLET-NAS ``models/basic_ops.py``, FairNAS ``models/FairNAS_A.py``, FairNAS-SE
``models/timm_models.py`` = timm 0.1.18 ``EfficientNet`` blocks, MoGA ``models/MoGA_A.py``) and the
layer tables of section 3, typed in here. Nothing here imports fastscarlet: the tests copy
fastscarlet's weights into these modules by parameter *role* and compare what both compute, and
count these modules' MAdds and parameters to get the published models' exact figures.

Every module here has ``roles()``: role name -> the ``nn.Module`` holding that role's parameters and
BN buffers (``stem.conv``, ``stem.bn``, ``sep.dw`` ..., ``blocks.<i>.expand``, ``blocks.<i>.bn1``,
``blocks.<i>.dw``, ``blocks.<i>.bn2``, ``blocks.<i>.se.reduce``, ``blocks.<i>.se.expand``,
``blocks.<i>.project``, ``blocks.<i>.bn3``, ``head.conv``, ``head.bn``, ``head.hidden``,
``classifier``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

# -- activations, as the released code writes them ---------------------------------------------


def relu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x)


def relu6(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x)


def hswish(x: torch.Tensor) -> torch.Tensor:
    """SCARLET ``HSwish`` / MoGA ``Hswish``: ``x * relu6(x + 3) / 6``."""
    return x * F.relu6(x + 3.0) / 6.0


def hsigmoid(x: torch.Tensor) -> torch.Tensor:
    """SCARLET ``HSigmoid`` / MoGA ``Hsigmoid``: ``relu6(x + 3) / 6``."""
    return F.relu6(x + 3.0) / 6.0


def swish(x: torch.Tensor) -> torch.Tensor:
    """timm's ``swish`` (the ``_nsw`` blocks of FairNAS-SE)."""
    return x * torch.sigmoid(x)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """timm's SE gate."""
    return torch.sigmoid(x)


class Act(nn.Module):
    """A parameter-free activation module (``fn`` is one of the functions above)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.fn.__name__


# -- squeeze-and-excitation and the inverted residual ------------------------------------------


class SqueezeExcite(nn.Module):
    """global average pool, 1x1 conv ``channels -> reduced`` (bias), squeeze act, 1x1 conv
    ``reduced -> channels`` (bias), gate; the input times the gate."""

    def __init__(self, channels: int, reduced: int, squeeze_act, gate) -> None:
        super().__init__()
        self.squeeze_conv = nn.Conv2d(channels, reduced, 1, bias=True)
        self.squeeze_act = squeeze_act
        self.excite_conv = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.excite_conv(self.squeeze_act(self.squeeze_conv(s))))


def timm_make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """timm 0.1.18 ``make_divisible`` (SE width with divisor 1: ``int(v + 0.5)``)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# SE builders: (block input channels, hidden channels, block activation) -> SqueezeExcite
def scarlet_se(inp: int, hidden: int, act) -> SqueezeExcite:
    """SCARLET ``SqueezeExcite(hidden_dim)``: reduction 4 on the hidden width, ReLU, h-sigmoid."""
    return SqueezeExcite(hidden, hidden // 4, Act(relu), Act(hsigmoid))


def moga_se(inp: int, hidden: int, act) -> SqueezeExcite:
    """MoGA ``SEModule(hidden_dim, act)``: reduction 4, the block's own act, h-sigmoid."""
    return SqueezeExcite(hidden, hidden // 4, act, Act(hsigmoid))


def timm_se(se_ratio: float):
    """timm 0.1.18 ``SqueezeExcite``: ``reduced_base_chs`` = the block's *input* channels
    (``reduce_mid=False``), width ``make_divisible(in_chs * se_ratio, 1)``, the block's act
    (Swish here), sigmoid gate."""

    def build(inp: int, hidden: int, act) -> SqueezeExcite:
        return SqueezeExcite(hidden, timm_make_divisible(inp * se_ratio, 1), act, Act(sigmoid))

    return build


class InvertedResidual(nn.Module):
    """conv1 1x1 (no bias), bn1, act; conv2 kxk depthwise stride s padding k//2 (no bias), bn2,
    act; [mid_se]; conv3 1x1 (no bias), bn3; ``inputs + x`` iff stride 1 and inp == oup."""

    def __init__(self, inp, oup, kernel_size, stride, expand_ratio, act, se_builder=None):
        super().__init__()
        hidden_dim = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        self.conv1 = nn.Conv2d(inp, hidden_dim, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden_dim)
        self.conv2 = nn.Conv2d(
            hidden_dim, hidden_dim, kernel_size, stride, kernel_size // 2, groups=hidden_dim,
            bias=False,
        )  # fmt: skip
        self.bn2 = nn.BatchNorm2d(hidden_dim)
        self.act = act
        self.mid_se = se_builder(inp, hidden_dim, act) if se_builder else None
        self.conv3 = nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(oup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = x
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        if self.mid_se is not None:
            x = self.mid_se(x)
        x = self.bn3(self.conv3(x))
        return inputs + x if self.use_res_connect else x

    def roles(self) -> dict[str, nn.Module]:
        r = {"expand": self.conv1, "bn1": self.bn1, "dw": self.conv2, "bn2": self.bn2}
        if self.mid_se is not None:
            r["se.reduce"] = self.mid_se.squeeze_conv
            r["se.expand"] = self.mid_se.excite_conv
        r.update(project=self.conv3, bn3=self.bn3)
        return r


# -- families: skeleton, activations, SE, head -------------------------------------------------

# (out channels, stride) of the searchable positions, papers.md 1.2 and 1.4
SCARLET_SKELETON = [(32, 2), (32, 1), (40, 2), (40, 1), (40, 1), (40, 1), (80, 2), (80, 1),
                    (80, 1), (80, 1), (96, 1), (96, 1), (96, 1), (96, 1), (192, 2), (192, 1),
                    (192, 1), (192, 1), (320, 1)]  # fmt: skip
MOGA_SKELETON = [(24, 2), (24, 1), (40, 2), (40, 1), (40, 1), (80, 2), (80, 1), (80, 1), (80, 1),
                 (112, 1), (112, 1), (160, 2), (160, 1), (160, 1)]  # fmt: skip


@dataclass(frozen=True)
class Family:
    """What differs between the four released code bases (papers.md 1.1)."""

    name: str
    skeleton: list[tuple[int, int]]
    stem: int  # stem output channels (the separable block outputs 16 in all four)
    stem_act: Callable
    sep_act: Callable
    block_acts: list[Callable]  # one per position
    se_builder: Callable | None  # None: the family has no SE blocks
    head_features: int
    head_act: Callable
    head_hidden: int | None = None  # MoGA's post-pool 1x1 conv 960 -> 1280 (no bias, no BN)
    dropout: float = 0.0
    classes: int = 1000

    def block(self, position: int, expansion: int, kernel: int, se: bool) -> InvertedResidual:
        """The released block at ``position`` (0-based) with one choice."""
        inp = self.skeleton[position - 1][0] if position else 16
        oup, stride = self.skeleton[position]
        if se and self.se_builder is None:
            raise ValueError(f"{self.name} has no SE blocks")
        builder = self.se_builder if se else None
        act = Act(self.block_acts[position])
        return InvertedResidual(inp, oup, kernel, stride, expansion, act, builder)


def scarlet_family() -> Family:
    return Family("scarlet", SCARLET_SKELETON, 32, relu6, relu6, [hswish] * 19, scarlet_se, 1280,
                  relu6)  # fmt: skip


def fairnas_family() -> Family:
    return Family("fairnas", SCARLET_SKELETON, 32, relu6, relu6, [relu6] * 19, None, 1280, relu6,
                  dropout=0.2)  # fmt: skip


def fairnas_se_family(se_ratio: float = 1.0, classes: int = 1000) -> Family:
    """timm 0.1.18 ``EfficientNet`` defaults: ReLU stem, ``ds`` block and head; no dropout."""
    return Family("fairnas_se", SCARLET_SKELETON, 32, relu, relu, [swish] * 19, timm_se(se_ratio),
                  1280, relu, classes=classes)  # fmt: skip


def moga_family() -> Family:
    acts = [relu] * 5 + [hswish] * 9  # MobileNetV3-Large: ReLU at positions 1-5, h-swish 6-14
    return Family("moga", MOGA_SKELETON, 16, hswish, relu, acts, moga_se, 960, hswish,
                  head_hidden=1280, dropout=0.2)  # fmt: skip


FAMILIES = {
    "scarlet": scarlet_family,
    "fairnas": fairnas_family,
    "fairnas_se": fairnas_se_family,
    "moga": moga_family,
}


# -- the published models, typed from the layer tables of papers.md section 3 -----------------

LAYER_TABLES = {
    "scarlet_a": "E3K7 E6K5 E3K5 E3K7SE E6K3SE E3K5SE E6K3SE E3K3 E3K7SE E3K7 E3K5 E3K7SE E3K3 "
                 "E3K7SE E6K3SE E6K5SE E3K3SE E6K3SE E6K7SE",
    "scarlet_b": "E3K3SE E3K5SE E3K3SE E6K7SE E3K3 E3K5 E6K7SE E3K3SE ID E3K5 E3K3SE E3K3SE E6K7SE "
                 "E3K3SE E6K5SE E6K5SE ID E6K7SE E6K5SE",
    "scarlet_c": "E3K5SE E3K3SE E3K5SE ID ID E3K3 E6K7SE E3K3SE E3K3SE E3K5 E3K7SE E3K7 E3K3SE "
                 "E3K7SE E3K3SE ID E6K3SE E6K7SE E6K5SE",
    "fairnas_a": "E3K7 E3K3 E3K7 E6K3 E6K7 E3K3 E3K3 E6K7 E6K7 E3K5 E6K3 E3K5 E3K5 E6K3 E6K3 E6K7 "
                 "E6K3 E6K7 E6K5",
    "fairnas_b": "E3K5 E3K3 E3K5 E3K3 E6K3 E3K5 E3K7 E3K3 E6K3 E3K5 E3K3 E6K3 E3K7 E3K3 E6K7 E6K5 "
                 "E6K7 E6K3 E6K5",
    "fairnas_c": "E3K5 E3K3 E3K7 E3K3 E3K3 E3K3 E3K3 E3K3 E3K3 E6K3 E3K3 E3K3 E3K3 E3K3 E6K7 E6K7 "
                 "E6K3 E6K3 E6K5",
    # MoGA-A as released in code (SE on position 6, not 3)
    "moga_a": "E6K5 E6K7 E6K3 E6K3SE E3K3SE E6K3SE E6K3 E6K7 E3K7SE E6K7 E6K3 E6K3 E6K5SE E6K5SE",
    "moga_b": "E3K3 E3K3 E6K7 E3K3 E6K5 E6K3SE E6K5SE E3K3 E6K7SE E6K7 E3K5 E6K7SE E6K7SE E6K3SE",
    "moga_c": "E3K5 E3K3 E3K5 E3K3 E3K5 E3K5 E6K5SE E3K5 E3K5 E6K3 E6K3SE E6K3SE E6K3SE E6K3SE",
}  # fmt: skip
# FairNAS-SE (the dagger models): the FairNAS genotypes with SE and Swish on every block
for _v in "abc":
    LAYER_TABLES[f"fairnas_{_v}_se"] = " ".join(
        f"{c}SE" for c in LAYER_TABLES[f"fairnas_{_v}"].split()
    )

_CHOICE = re.compile(r"E(\d)K(\d)(SE)?$")


def parse_table(text: str) -> list[tuple[int, int, bool] | None]:
    """``"E3K7 ID E6K5SE"`` -> ``[(3, 7, False), None, (6, 5, True)]`` (None = identity)."""
    out: list[tuple[int, int, bool] | None] = []
    for token in text.split():
        if token == "ID":
            out.append(None)
            continue
        m = _CHOICE.match(token)
        if m is None:
            raise ValueError(f"bad layer {token!r}")
        out.append((int(m.group(1)), int(m.group(2)), m.group(3) is not None))
    return out


def family_of(model: str) -> str:
    if model.endswith("_se"):
        return "fairnas_se"
    return model.rsplit("_", 1)[0]


class XiaomiNet(nn.Module):
    """stem -> separable_conv -> mb_module -> conv_before_pooling -> pool [-> conv_head] ->
    [dropout] -> classifier, as the released ``ScarletA``/``FairNasA``/``MoGaA``/timm models."""

    def __init__(self, family: Family, layers: list[tuple[int, int, bool] | None]) -> None:
        super().__init__()
        if len(layers) != len(family.skeleton):
            raise ValueError(f"{family.name}: {len(layers)} layers for {len(family.skeleton)}")
        self.family = family
        c = family.stem
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), Act(family.stem_act)
        )
        self.separable_conv = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False),
            nn.BatchNorm2d(c),
            Act(family.sep_act),
            nn.Conv2d(c, 16, 1, 1, 0, bias=False),
            nn.BatchNorm2d(16),
        )
        blocks: list[nn.Module] = []
        for i, layer in enumerate(layers):
            blocks.append(nn.Identity() if layer is None else family.block(i, *layer))
        self.mb_module = nn.Sequential(*blocks)
        last, feats = family.skeleton[-1][0], family.head_features
        self.conv_before_pooling = nn.Sequential(
            nn.Conv2d(last, feats, 1, 1, 0, bias=False), nn.BatchNorm2d(feats),
            Act(family.head_act),
        )  # fmt: skip
        width = feats
        self.conv_head = None
        if family.head_hidden:  # MoGA: conv_head = conv (no bias), Hswish, Dropout2d(0.2)
            self.conv_head = nn.Sequential(
                nn.Conv2d(feats, family.head_hidden, 1, bias=False),
                Act(family.head_act),
                nn.Dropout2d(family.dropout),
            )
            width = family.head_hidden
        # FairNAS: classifier = Sequential(Dropout(0.2), Linear); the others: a plain Linear
        dropout = family.dropout if family.dropout and not family.head_hidden else 0.0
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(width, family.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mb_module(self.separable_conv(self.stem(x)))
        x = self.conv_before_pooling(x)
        if self.conv_head is not None:
            x = self.conv_head(F.adaptive_avg_pool2d(x, 1)).view(x.size(0), -1)
        else:
            x = x.mean(3).mean(2)
        return self.classifier(self.dropout(x))

    def roles(self) -> dict[str, nn.Module]:
        r = {"stem.conv": self.stem[0], "stem.bn": self.stem[1]}
        sep = self.separable_conv
        r.update({"sep.dw": sep[0], "sep.bn1": sep[1], "sep.pw": sep[3], "sep.bn2": sep[4]})
        for i, block in enumerate(self.mb_module):
            if isinstance(block, InvertedResidual):
                r.update({f"blocks.{i}.{k}": m for k, m in block.roles().items()})
        r.update({"head.conv": self.conv_before_pooling[0], "head.bn": self.conv_before_pooling[1]})
        if self.conv_head is not None:
            r["head.hidden"] = self.conv_head[0]
        r["classifier"] = self.classifier
        return r


def reference_model(name: str, classes: int = 1000, se_ratio: float = 1.0) -> XiaomiNet:
    """The released network of a published model (``scarlet_a`` ... ``moga_c``), freshly built."""
    fam = family_of(name)
    if fam == "fairnas_se":
        family = fairnas_se_family(se_ratio, classes)
    else:
        family = replace(FAMILIES[fam](), classes=classes)
    return XiaomiNet(family, parse_table(LAYER_TABLES[name]))
