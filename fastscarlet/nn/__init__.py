"""Stage 2, the networks: blocks, the LET stabilizer, one-genome networks and the supernet.

- :mod:`~fastscarlet.nn.blocks`: MBConv, squeeze-excite, stem, separable block, head, the init;
- :mod:`~fastscarlet.nn.stabilizer`: SCARLET's LET stabilizer and its exact folding; the plain
  identity choice (no stabilizer);
- :mod:`~fastscarlet.nn.network`: a standalone network of one genome; the published models;
- :mod:`~fastscarlet.nn.supernet`: the weight-sharing supernet (every path is a network of the
  space) and subnet extraction.

On CUDA the blocks run the Triton kernels of :mod:`fastscarlet.kernels` where its dispatch says
so; the modules' own code is the reference and the CPU path.
"""

from fastscarlet.nn.blocks import (
    ClassifierHead,
    MBConv,
    SeparableConv,
    SqueezeExcite,
    StemConv,
    init_weights,
    make_activation,
    make_gate,
    make_se,
)
from fastscarlet.nn.network import (
    IDENTITY_MODES,
    Network,
    build_block,
    build_network,
    create_model,
)
from fastscarlet.nn.stabilizer import (
    LinearStabilizer,
    PlainIdentity,
    fold_into_1x1,
    fold_stabilizers,
)
from fastscarlet.nn.supernet import ChoiceLayer, SuperNet

__all__ = [
    "IDENTITY_MODES",
    "ChoiceLayer",
    "ClassifierHead",
    "LinearStabilizer",
    "MBConv",
    "Network",
    "PlainIdentity",
    "SeparableConv",
    "SqueezeExcite",
    "StemConv",
    "SuperNet",
    "build_block",
    "build_network",
    "create_model",
    "fold_into_1x1",
    "fold_stabilizers",
    "init_weights",
    "make_activation",
    "make_gate",
    "make_se",
]
