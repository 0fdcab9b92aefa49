"""Channel counts the compiler can prove divisible, so channels_last loads and stores vectorise.

At launch Triton marks an int argument as a multiple of 16 when it is one, and nothing less.
A channels_last row offset ``pixel * C + c`` with ``C = 40`` or ``120`` (Scarlet's third stage,
MoGA's and FairNAS's 40-channel stages) is then of unknown alignment, and the compiler emits one
16-bit load per element: the sm_90 PTX of the depthwise kernel of Scarlet-A's layer 4 (``C = 120``)
held 112 scalar ``ld.global.b16`` against 10 ``ld.global.v4`` for layer 2 (``C = 192``), for the
same loop (``python tools/aot.py`` reports these counts as ``narrow-ld``).

The host knows more: 40 and 120 are multiples of 8, i.e. 16 bytes of bf16. A kernel takes that as a
``tl.constexpr`` (:func:`channel_align`) and rewrites its channel counts with
:func:`assume_multiple`: ``x // A * A`` is ``x`` itself when ``A`` divides it, and the compiler's
alignment analysis reads the product as a multiple of ``A`` (``tl.multiple_of`` applies to
tensors, not to scalar arguments: it left the PTX unchanged). The cost is a shift pair per count
per program.

Rule that keeps it exact: every count a kernel rewrites with ``A`` is one of the counts the host
passed to ``channel_align`` to compute that ``A``.
"""

from __future__ import annotations

import triton
import triton.language as tl

MAX_ALIGN = 16  # elements: 32 bytes of bf16, more than one 16-byte vector load needs


def channel_align(*counts: int) -> int:
    """The largest power of two ``<= MAX_ALIGN`` that divides every count (1 if none is given).

    >>> channel_align(120), channel_align(40, 120), channel_align(192, 41), channel_align(0)
    (8, 8, 1, 16)
    """
    align = MAX_ALIGN
    for n in counts:
        n = int(n)
        while align > 1 and n % align:
            align //= 2
    return align


@triton.jit
def assume_multiple(x, ALIGN: tl.constexpr):
    """``x`` unchanged, known to the compiler as a multiple of ``ALIGN`` (which must divide it)."""
    if ALIGN > 1:
        x = x // ALIGN * ALIGN
    return x


__all__ = ["MAX_ALIGN", "assume_multiple", "channel_align"]
