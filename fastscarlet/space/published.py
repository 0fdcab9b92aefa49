"""The published architectures, built from their genomes (papers.md section 3).

Genomes use the choice index of each space (papers.md section 1.2): for SCARLET
``idx = 3*[t == 6] + {3: 0, 5: 1, 7: 2}[k] + 6*SE``, 12 = identity. MoGA-A is the released code's
version (SE on layer 6, not on layer 3 as the paper's figures draw it), since the released weights
were produced with it. The FairNAS-SE ("dagger") models are the FairNAS genotypes in the
``fairnas_se`` space.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastscarlet.space.genome import Genome
from fastscarlet.space.spaces import SearchSpace, get_space


@dataclass(frozen=True)
class PublishedModel:
    name: str
    space: str
    genome: Genome
    madds_m: float  # published Mult-Adds (millions) at 224x224
    params_m: float  # published parameters (millions)
    top1: float
    source: str


_FAIRNAS_A = (2, 0, 2, 3, 5, 0, 0, 5, 5, 1, 3, 1, 1, 3, 3, 5, 3, 5, 4)
_FAIRNAS_B = (1, 0, 1, 0, 3, 1, 2, 0, 3, 1, 0, 3, 2, 0, 5, 4, 5, 3, 4)
_FAIRNAS_C = (1, 0, 2, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 5, 5, 3, 3, 4)

PUBLISHED: dict[str, PublishedModel] = {
    m.name: m
    for m in [
        PublishedModel("scarlet_a", "scarlet", (2, 4, 1, 8, 9, 7, 9, 0, 8, 2, 1, 8, 0, 8, 9, 10, 6, 9, 11), 365, 6.7, 76.9, "SCARLET-NAS Table 3"),
        PublishedModel("scarlet_b", "scarlet", (6, 7, 6, 11, 0, 1, 11, 6, 12, 1, 6, 6, 11, 6, 10, 10, 12, 11, 10), 329, 6.5, 76.3, "SCARLET-NAS Table 3"),
        PublishedModel("scarlet_c", "scarlet", (7, 6, 7, 12, 12, 0, 11, 6, 6, 1, 8, 2, 6, 8, 6, 12, 9, 11, 10), 280, 6.0, 75.6, "SCARLET-NAS Table 3"),
        PublishedModel("fairnas_a", "fairnas", _FAIRNAS_A, 388, 4.6, 75.3, "FairNAS Table 2"),
        PublishedModel("fairnas_b", "fairnas", _FAIRNAS_B, 345, 4.5, 75.1, "FairNAS Table 2"),
        PublishedModel("fairnas_c", "fairnas", _FAIRNAS_C, 321, 4.4, 74.7, "FairNAS Table 2"),
        PublishedModel("fairnas_a_se", "fairnas_se", _FAIRNAS_A, 392, 5.9, 77.5, "FairNAS Table 2 (A-dagger)"),
        PublishedModel("fairnas_b_se", "fairnas_se", _FAIRNAS_B, 349, 5.7, 77.2, "FairNAS Table 2 (B-dagger)"),
        PublishedModel("fairnas_c_se", "fairnas_se", _FAIRNAS_C, 325, 5.6, 76.7, "FairNAS Table 2 (C-dagger)"),
        PublishedModel("moga_a", "moga", (4, 5, 3, 9, 6, 9, 3, 5, 8, 5, 3, 3, 10, 10), 304, 5.1, 75.9, "MoGA Table 3 (released code)"),
        PublishedModel("moga_b", "moga", (0, 0, 5, 0, 4, 9, 10, 0, 11, 5, 1, 11, 11, 9), 248, 5.5, 75.5, "MoGA Table 3"),
        PublishedModel("moga_c", "moga", (1, 0, 1, 0, 1, 1, 10, 1, 1, 3, 9, 9, 9, 9), 221, 5.4, 75.3, "MoGA Table 3"),
    ]
}  # fmt: skip


def list_models() -> list[str]:
    return list(PUBLISHED)


def get_published(name: str) -> PublishedModel:
    try:
        return PUBLISHED[name.lower().replace("-", "_")]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown model {name!r}; known: {list_models()}") from None


def model_space(name: str, num_classes: int = 1000) -> SearchSpace:
    return get_space(get_published(name).space, num_classes=num_classes)
