"""Architecture encoding: integer genome <-> readable string <-> timm-style arch-def.

* **genome**: a tuple with one choice index per layer of the space (``space.choices[g[i]]``).
* **readable**: the choice names joined by ``-``, e.g. ``"E3K7-E6K5-...-ID-E6K7SE"``.
* **arch-def**: timm's ``arch_def`` format, a list of stages, each a list of block strings
  (``ds_r1_k3_s1_c16_nr6``, ``ir_r1_k7_s2_e3_c32_se0.25_nhs``). Identity layers are written
  ``skip_r1_s1_c40`` so that the round trip keeps positions; :func:`to_timm_arch_def` drops them
  for timm's builder. The string form is the JSON text of the nested list. The decoder reads
  timm's repeat counts (``ir_r2_...`` is two layers; as in timm, only the first of a stage's
  blocks keeps its stride) and checks the SE ratio against the space's; options the space cannot
  represent (another SE ratio, dilation, ``noskip``, ...) are refused, never ignored.

Every decoder raises ``ValueError`` naming the layer and its allowed choices on invalid input, and
nothing else.
"""

from __future__ import annotations

import json
import math
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
# The options each block type may carry: r (repeats), k, s, e, c, se (ratio), n (activation).
_BLOCK_OPTIONS = {"ir": ("r", "k", "s", "e", "c", "se", "n"), "skip": ("r", "s", "c")}


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


def _expand_repeats(blocks: list, where: str) -> list[tuple[str, dict[str, str]]]:
    """One ``(block, options)`` per layer: a block ``_r<n>`` stands for ``n`` layers, the first with
    the block's stride and the others with ``s1`` (timm's builder strides only a stage's first)."""
    out: list[tuple[str, dict[str, str]]] = []
    for block in blocks:
        f = _parse_block(block, where)
        allowed = _BLOCK_OPTIONS.get(f["type"], ())
        extra = [k for k in f if k != "type" and k not in allowed]
        if extra:
            raise ValueError(
                f"{where}: block {block!r} has option {extra[0]!r}, which the space cannot "
                f"represent ({f['type']} blocks take {', '.join(allowed)})"
            )
        try:
            repeats = int(f.get("r", "1"))
        except ValueError:
            repeats = 0
        if repeats < 1:
            raise ValueError(f"{where}: block {block!r} needs a repeat count r >= 1 (an integer)")
        out.append((block, f))
        out.extend((block, {**f, "s": "1"}) for _ in range(repeats - 1))
    return out


def _has_se(
    space: SearchSpace, in_ch: int, expansion: int, ratio_text: str | None, where: str
) -> bool:
    """Whether a block has SE, after checking its ratio is the one the space builds: the space's
    own ``se.ratio`` (of its base width), or the reduced width over the expanded width as
    :func:`to_arch_def` writes it. ``se0`` means no SE, as in timm."""
    if ratio_text is None:
        return False
    try:
        ratio = float(ratio_text)
    except ValueError:
        raise ValueError(f"{where}: SE ratio {ratio_text!r} is not a number") from None
    if ratio == 0:
        return False
    hidden = round(in_ch * expansion)
    reduced = space.se.reduced_channels(in_ch, hidden)
    if math.isclose(ratio, space.se.ratio) or round(ratio * hidden) == reduced:
        return True
    raise ValueError(
        f"{where}: SE ratio {ratio:g} is not the space's: {space.name} reduces to {reduced} "
        f"channels here ({space.se.ratio:g} of the {space.se.base} width; se{reduced / hidden:.6g} "
        "of the expanded width)"
    )


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
        blocks = _expand_repeats(list(stages[s + 1]), f"{space.name}: arch-def stage {s + 1}")
        if len(blocks) != len(idx):
            raise ValueError(
                f"{space.name}: arch-def stage {s + 1} has {len(blocks)} blocks (repeats counted), "
                f"expected {len(idx)}"
            )
        for i, (block, f) in zip(idx, blocks):
            layer = space.layers[i]
            where = f"{space.name}: layer {i + 1}"
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
                se = _has_se(space, layer.in_channels, e, f.get("se"), f"{where}: block {block!r}")
                try:
                    choice = Choice(e, k, se)
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None
            else:
                raise _layer_error(space, i, block)
            if choice.name not in names:
                raise _layer_error(space, i, block)
            genome.append(names.index(choice.name))
    return validate_genome(space, genome)
