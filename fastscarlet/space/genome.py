"""Architecture encoding: integer genome <-> readable string <-> timm-style arch-def.

* **genome**: a tuple with one choice index per layer of the space (``space.choices[g[i]]``).
* **readable**: the choice names joined by ``-``, e.g. ``"E3K7-E6K5-...-ID-E6K7SE"``.
* **arch-def**: timm's ``arch_def`` format, a list of stages, each a list of block strings
  (``ds_r1_k3_s1_c16_nr6``, ``ir_r1_k7_s2_e3_c32_se0.25_nhs``). Identity layers are written
  ``skip_r1_s1_c40`` so that the round trip keeps positions; :func:`to_timm_arch_def` drops them
  for timm's builder. The string form is the JSON text of the nested list.

Every decoder raises ``ValueError`` naming the layer and its allowed choices on invalid input, and
nothing else.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Sequence

import numpy as np

from fastscarlet.space.spaces import Choice, SearchSpace

Genome = tuple[int, ...]

_ACT_TAG = {"relu": "re", "relu6": "r6", "hswish": "hs", "swish": "sw"}
_TAG_ACT = {v: k for k, v in _ACT_TAG.items()}


def _layer_error(space: SearchSpace, i: int, got: object) -> ValueError:
    allowed = ", ".join(f"{c}={space.choices[c].name}" for c in space.layers[i].allowed)
    return ValueError(
        f"{space.name}: layer {i + 1} (index {i}) cannot take {got!r}; allowed choices: {allowed}"
    )


def validate_genome(space: SearchSpace, genome: object) -> Genome:
    """Check ``genome`` against ``space`` and return it as a tuple of Python ints.

    Accepts any sequence (or 1-D integer array) of integral numbers. Raises ``ValueError`` for a
    wrong type or length, non-integral or out-of-range entries, and choices a layer does not allow.
    """
    if isinstance(genome, (str, bytes)) or not hasattr(genome, "__len__"):
        raise ValueError(
            f"{space.name}: a genome is a sequence of {space.num_layers} choice indices, "
            f"got {type(genome).__name__}"
        )
    if isinstance(genome, np.ndarray) and genome.ndim != 1:
        raise ValueError(f"{space.name}: a genome array must be 1-D, got shape {genome.shape}")
    try:
        items = list(genome)  # type: ignore[call-overload]
    except Exception as exc:
        raise ValueError(f"{space.name}: cannot read genome: {exc}") from None
    if len(items) != space.num_layers:
        raise ValueError(
            f"{space.name}: a genome has {space.num_layers} entries (one per layer), got {len(items)}"
        )
    out = []
    for i, g in enumerate(items):
        if isinstance(g, bool) or not isinstance(g, numbers.Integral):
            # Accept integral floats (e.g. 3.0 from a JSON file or a float array), nothing else.
            if isinstance(g, numbers.Real) and not isinstance(g, bool):
                try:
                    ok = float(g).is_integer()
                except (OverflowError, ValueError):
                    ok = False
                if not ok:
                    raise _layer_error(space, i, g)
                g = int(g)
            else:
                raise _layer_error(space, i, g)
        g = int(g)
        if g not in space.layers[i].allowed:
            raise _layer_error(space, i, g)
        out.append(g)
    return tuple(out)


def random_genome(space: SearchSpace, rng: np.random.Generator) -> Genome:
    """A uniformly random valid genome."""
    return tuple(int(rng.choice(layer.allowed)) for layer in space.layers)


# --- readable form ----------------------------------------------------------------------------


def to_readable(space: SearchSpace, genome: Sequence[int]) -> str:
    g = validate_genome(space, genome)
    return "-".join(space.choices[c].name for c in g)


def from_readable(space: SearchSpace, text: str | Sequence[str]) -> Genome:
    """Parse ``"E3K7-E6K5-..."`` (``-``, ``,`` or whitespace separated) or a list of names."""
    if isinstance(text, str):
        tokens = [t for t in re.split(r"[\s,\-]+", text.strip()) if t]
    elif isinstance(text, Sequence) and all(isinstance(t, str) for t in text):
        tokens = list(text)
    else:
        raise ValueError(f"{space.name}: a readable architecture is a string, got {text!r}")
    if len(tokens) != space.num_layers:
        raise ValueError(
            f"{space.name}: a readable architecture names {space.num_layers} layers, "
            f"got {len(tokens)}"
        )
    names = space.choice_names
    genome = []
    for i, tok in enumerate(tokens):
        try:
            name = Choice.parse(tok).name
        except ValueError:
            raise _layer_error(space, i, tok) from None
        if name not in names:
            raise _layer_error(space, i, tok)
        genome.append(names.index(name))
    return validate_genome(space, genome)


# --- timm-style arch-def ----------------------------------------------------------------------


def _se_tag(space: SearchSpace, in_ch: int, hidden: int) -> str:
    # timm's se ratio is relative to the block input (old timm) or the expanded width (MBv3);
    # we write the ratio relative to the expanded width so that the string is self-describing.
    reduced = space.se.reduced_channels(in_ch, hidden)
    return f"_se{reduced / hidden:.6g}"


def to_arch_def(space: SearchSpace, genome: Sequence[int]) -> list[list[str]]:
    """timm-style arch-def: the fixed first block, then one list per stage."""
    g = validate_genome(space, genome)
    fb = space.first_block
    stages: list[list[str]] = [
        [f"ds_r1_k{fb.kernel}_s1_c{fb.out_channels}_n{_ACT_TAG[fb.activation]}"]
    ]
    for s in range(space.num_stages):
        blocks = []
        for i in space.stage_layers(s):
            layer, c = space.layers[i], space.choices[g[i]]
            if c.identity:
                blocks.append(f"skip_r1_s{layer.stride}_c{layer.out_channels}")
                continue
            hidden = round(layer.in_channels * c.expansion)
            se = _se_tag(space, layer.in_channels, hidden) if c.se else ""
            blocks.append(
                f"ir_r1_k{c.kernel}_s{layer.stride}_e{c.expansion}_c{layer.out_channels}"
                f"{se}_n{_ACT_TAG[layer.activation]}"
            )
        stages.append(blocks)
    return stages


def to_arch_def_string(space: SearchSpace, genome: Sequence[int]) -> str:
    return json.dumps(to_arch_def(space, genome))


def to_timm_arch_def(space: SearchSpace, genome: Sequence[int]) -> list[list[str]]:
    """The arch-def without identity layers, as timm's ``_decode_arch_def`` expects."""
    stages = [[b for b in st if not b.startswith("skip_")] for st in to_arch_def(space, genome)]
    return [st for st in stages if st]


_BLOCK_RE = re.compile(r"^(ir|skip|ds)((?:_[a-z]+[0-9.]*)*)$")


def _parse_block(block: str, where: str) -> dict[str, str]:
    if not isinstance(block, str) or not _BLOCK_RE.match(block):
        raise ValueError(f"{where}: cannot parse block string {block!r}")
    kind, _, rest = block.partition("_")
    fields: dict[str, str] = {"type": kind}
    for part in rest.split("_"):
        m = re.match(r"^([a-z]+?)([0-9.]+|re|r6|hs|sw)$", part)
        if not m:
            raise ValueError(f"{where}: bad option {part!r} in {block!r}")
        key, val = m.groups()
        if key in fields:
            raise ValueError(f"{where}: option {key!r} repeated in {block!r}")
        fields[key] = val
    return fields


def from_arch_def(space: SearchSpace, arch_def: str | Sequence[Sequence[str]]) -> Genome:
    """Inverse of :func:`to_arch_def` (also accepts its JSON string)."""
    if isinstance(arch_def, str):
        try:
            arch_def = json.loads(arch_def)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{space.name}: arch-def string is not JSON: {exc}") from None
    if not isinstance(arch_def, Sequence) or isinstance(arch_def, str):
        raise ValueError(f"{space.name}: an arch-def is a list of stages, got {arch_def!r}")
    stages = list(arch_def)
    if len(stages) != space.num_stages + 1:
        raise ValueError(
            f"{space.name}: arch-def has {len(stages)} stages, expected {space.num_stages + 1} "
            "(the first block, then one per stage)"
        )
    for s, st in enumerate(stages):
        if isinstance(st, str) or not isinstance(st, Sequence):
            raise ValueError(f"{space.name}: arch-def stage {s} is not a list of block strings")
    first = stages[0]
    fb = space.first_block
    want = f"ds_r1_k{fb.kernel}_s1_c{fb.out_channels}_n{_ACT_TAG[fb.activation]}"
    if list(first) != [want]:
        raise ValueError(f"{space.name}: arch-def first stage must be [{want!r}], got {first!r}")
    genome: list[int] = []
    names = space.choice_names
    for s in range(space.num_stages):
        idx = space.stage_layers(s)
        blocks = list(stages[s + 1])
        if len(blocks) != len(idx):
            raise ValueError(
                f"{space.name}: arch-def stage {s + 1} has {len(blocks)} blocks, expected {len(idx)}"
            )
        for i, block in zip(idx, blocks):
            layer = space.layers[i]
            where = f"{space.name}: layer {i + 1}"
            f = _parse_block(block, where)
            if f.get("s") != str(layer.stride) or f.get("c") != str(layer.out_channels):
                raise ValueError(
                    f"{where}: block {block!r} must have s{layer.stride} and c{layer.out_channels}"
                )
            if f["type"] == "skip":
                choice = Choice(identity=True)
            elif f["type"] == "ir":
                try:
                    e, k = int(f["e"]), int(f["k"])
                except (KeyError, ValueError):
                    raise ValueError(f"{where}: block {block!r} needs integer e and k") from None
                if f.get("n") != _ACT_TAG[layer.activation]:
                    raise ValueError(
                        f"{where}: block {block!r} must use activation n{_ACT_TAG[layer.activation]}"
                    )
                try:
                    choice = Choice(e, k, "se" in f)
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None
            else:
                raise _layer_error(space, i, block)
            if choice.name not in names:
                raise _layer_error(space, i, block)
            genome.append(names.index(choice.name))
    return validate_genome(space, genome)
