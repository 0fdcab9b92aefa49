"""Channel-count alignment hints (fastscarlet.kernels.alignment) and what they buy: the sm_90 code
of a 40/120-channel block loads whole vectors instead of one 16-bit element per instruction."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("triton")


def test_channel_align_is_the_largest_power_of_two_dividing_every_count() -> None:
    from fastscarlet.kernels.alignment import MAX_ALIGN, channel_align

    counts = [0, 1, 2, 3, 6, 7, 8, 10, 12, 16, 21, 24, 40, 41, 48, 96, 112, 120, 192, 320, 1152]
    for group in itertools.chain(
        ((n,) for n in counts), itertools.combinations(counts, 2), [(40, 120, 240), (8, 16, 24)]
    ):
        brute = max(
            a for a in (1, 2, 4, 8, 16) if a <= MAX_ALIGN and all(n % a == 0 for n in group)
        )
        assert channel_align(*group) == brute, group
    assert channel_align() == MAX_ALIGN


def test_aot_specialises_ints_as_triton_does_at_launch() -> None:
    """The AOT check must compile the kernel that runs: Triton's own specialisation of an int
    argument (multiple of 16 -> divisibility attribute, 1 -> constant) is the reference."""
    libtriton = pytest.importorskip("triton._C.libtriton")
    if not hasattr(libtriton, "native_specialize_impl"):
        pytest.skip("this Triton has no native_specialize_impl")
    from aot import _int_spec
    from triton.backends.nvidia.compiler import CUDABackend

    for value in (1, 2, 3, 8, 16, 40, 48, 120, 192, 2**31 - 16, 2**31, 2**33 + 16, 2**33 + 8):
        kind, spec = libtriton.native_specialize_impl(CUDABackend, value, False, True, True)
        assert _int_spec(value) == (kind, spec if kind != "constexpr" else ""), value


def test_memory_widths_counts_vector_scalar_and_async_accesses() -> None:
    from aot import memory_widths

    ptx = """
    @%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
    @%p2 ld.global.b16 { %rs1 }, [ %rd2 + 0 ];
    ld.global.L1::evict_last.v2.b32 { %r5, %r6 }, [ %rd3 + 0 ];
    @%p3 st.global.v4.b32 [ %rd4 + 0 ], { %r1, %r2, %r3, %r4 };
    cp.async.cg.shared.global [ %r36 + 0 ], [ %rd7 + 0 ], 0x10, %r37;
    cp.async.ca.shared.global [ %r38 + 0 ], [ %rd8 + 0 ], 4, %r39;
    cp.async.commit_group;
    """
    loads, stores = memory_widths(ptx)
    assert loads == {16: 2, 2: 1, 8: 1, 4: 1}
    assert stores == {16: 1}


def test_sass_loops_finds_each_backward_branch_and_its_body() -> None:
    from aot import sass_loops

    sass = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;                 /* 0x0 */
        /*0010*/                   SHFL.BFLY PT, R3, R2, 0x10, 0x1f ;     /* 0x0 */
        /*0020*/                   FFMA R4, R2, R3, R4 ;                  /* 0x0 */
        /*0030*/                   LDG.E.128 R8, desc[UR4][R6.64] ;       /* 0x0 */
        /*0040*/               @P0 BRA 0x20 ;                             /* 0x0 */
        /*0050*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;          /* 0x0 */
        /*0060*/              @!P1 BRA 0x10 ;                             /* 0x0 */
        /*0070*/                   BRA 0x90 ;                             /* 0x0 */
        /*0080*/                   EXIT ;                                 /* 0x0 */
    """
    inner, outer = sass_loops(sass)
    assert (inner.start, inner.end) == (0x20, 0x40)
    assert inner.ops == {"FFMA": 1, "LDG": 1, "BRA": 1}
    assert (outer.start, outer.end) == (0x10, 0x60)
    assert outer.ops == {"SHFL": 1, "FFMA": 1, "LDG": 1, "BRA": 2, "BAR": 1}
    assert inner.line() == "loop 0x0020-0x0040: 3 instructions (FFMA 1, LDG 1)"


def test_dw_fwd_cost_counts_loop_trips_programs_and_warps() -> None:
    """Layer 4's tile forward as RESULTS.md derives it by hand: a kernel-row loop of 467
    instructions (112 FFMA) run 7 times inside an image loop of 755 (128 FFMA); 16 tiles of 8x8
    pixels and 4 blocks of 32 channels cover 28 x 28 x 120 outputs with 4 warps each."""
    from aot import SassLoop, dw_fwd_cost

    from fastscarlet.kernels.launch import Launch

    inner = SassLoop(0x100, 0x200, {"FFMA": 112, "LDG": 28, "IMAD": 327})
    outer = SassLoop(0x080, 0x300, {"FFMA": 128, "LDG": 28, "IMAD": 599})
    args = (None,) * 12 + (120, 28, 28, 28, 28)
    launch = Launch(None, (16, 256, 4), args, {"KSIZE": 7}, num_warps=4, num_stages=1)
    per_output, ffma = dw_fwd_cost(launch, [outer, inner])
    per_image = 755 + 6 * 467
    assert per_output == pytest.approx(16 * 4 * 4 * per_image / (28 * 28 * 120))
    assert per_output == pytest.approx(9.68, abs=0.01)
    assert ffma == pytest.approx((128 + 6 * 112) / per_image)


@pytest.mark.slow
def test_a_40_and_120_channel_block_compiles_to_vector_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scarlet-A's layer 4 (40 -> 40, expansion 3: 120 hidden channels, k = 7, SE), bf16, train
    and inference, with both depthwise forward kernels: no kernel may load one 16-bit element
    per instruction, or spill. Without the hints (``assume_multiple`` a no-op) 15 of its 20
    kernels had 16-bit loads, the depthwise forward 112 of them."""
    from aot import compile_launch, record_block, unique

    launches = []
    for mode in ("tile", "sweep"):
        monkeypatch.setenv("FASTSCARLET_DW_FWD", mode)
        launches += record_block(40, 40, 3, 7, 1, se=True, size=28, training=True)
        launches += record_block(40, 40, 3, 7, 1, se=True, size=28, training=False)
    compiled = [compile_launch(launch) for launch in unique(launches)]
    assert {
        "_dw_conv_fwd_kernel", "_dw_sweep_fwd_kernel", "_dw_conv_bwd_kernel", "_pw_conv_fwd_kernel"
    } <= {c.name for c in compiled}  # fmt: skip
    spills = {f"{c.name} [{c.constexprs}]": c.spill_bytes for c in compiled if c.spill_bytes}
    assert not spills, spills
    narrow = {f"{c.name} [{c.constexprs}]": c.narrow_loads for c in compiled if c.narrow_loads}
    assert not narrow, narrow
