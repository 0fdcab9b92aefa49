"""Stage 1, the search space as data: spaces, genome encodings and the published architectures.

- :mod:`~fastscarlet.space.spaces`: :class:`SearchSpace` (skeleton, choices, per-layer allowed
  choices), :func:`make_space`, the registry (``scarlet``, ``fairnas``, ``fairnas_se``, ``moga``)
  and :func:`build_space` (a run's ``space:`` config section);
- :mod:`~fastscarlet.space.genome`: integer genome <-> readable string <-> timm-style arch-def;
- :mod:`~fastscarlet.space.published`: the published models' genomes and numbers (built as networks
  by :func:`fastscarlet.nn.create_model`).

Nothing here imports torch: a space is plain data that every later stage reads.
"""

from fastscarlet.space.genome import (
    Genome,
    from_arch_def,
    from_readable,
    random_genome,
    to_arch_def,
    to_arch_def_string,
    to_readable,
    to_timm_arch_def,
    validate_genome,
)
from fastscarlet.space.published import (
    PUBLISHED,
    PublishedModel,
    get_published,
    list_models,
    model_space,
)
from fastscarlet.space.spaces import (
    ACTIVATIONS,
    KERNELS,
    SE_GATES,
    Choice,
    FirstBlock,
    Head,
    Layer,
    SearchSpace,
    SEConfig,
    Stage,
    Stem,
    build_space,
    fairnas_se_space,
    fairnas_space,
    get_space,
    list_spaces,
    make_divisible,
    make_space,
    mbconv_choices,
    moga_space,
    register_space,
    scale_width,
    scarlet_space,
)

__all__ = [
    "ACTIVATIONS",
    "KERNELS",
    "PUBLISHED",
    "SE_GATES",
    "Choice",
    "FirstBlock",
    "Genome",
    "Head",
    "Layer",
    "PublishedModel",
    "SEConfig",
    "SearchSpace",
    "Stage",
    "Stem",
    "build_space",
    "fairnas_se_space",
    "fairnas_space",
    "from_arch_def",
    "from_readable",
    "get_published",
    "get_space",
    "list_models",
    "list_spaces",
    "make_divisible",
    "make_space",
    "mbconv_choices",
    "model_space",
    "moga_space",
    "random_genome",
    "register_space",
    "scale_width",
    "scarlet_space",
    "to_arch_def",
    "to_arch_def_string",
    "to_readable",
    "to_timm_arch_def",
    "validate_genome",
]
