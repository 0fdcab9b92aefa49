"""Training-BN kernels (fastscarlet.kernels.batchnorm) and the activation helpers."""

from __future__ import annotations

import copy

import pytest
import torch
import triton
import triton.language as tl

from fastscarlet.env import triton_interpret
from fastscarlet.kernels.activations import ACT_CODES, act_fwd, act_grad, act_grad_ref, act_ref
from fastscarlet.kernels.batchnorm import batch_norm_ref
from fastscarlet.kernels.testing import assert_close_scaled as _close
from fastscarlet.kernels.testing import randomize_bn, rows

needs_interpreter = pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1")
# Include the kinks, where PyTorch's backward formulas pick a side.
KINKS = torch.tensor([-4.0, -3.0, -2.5, -1e-3, 0.0, 1e-3, 2.9, 3.0, 3.5, 5.9, 6.0, 7.0])


@pytest.mark.parametrize("name", sorted(ACT_CODES))
def test_act_grad_ref_is_autograd_of_act_ref(name: str) -> None:
    u = torch.cat([KINKS, torch.randn(100)]).double().requires_grad_()
    (want,) = torch.autograd.grad(act_ref(u, name).sum(), u)
    # ATen's hardsigmoid backward multiplies by float(1/6) even in float64: compare to 1e-7.
    assert torch.allclose(act_grad_ref(u.detach(), name), want, rtol=1e-7, atol=1e-7)


@triton.jit
def _act_probe_kernel(u_ptr, f_ptr, d_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    u = tl.load(u_ptr + i, mask=i < n, other=0.0)
    tl.store(f_ptr + i, act_fwd(u, ACT), mask=i < n)
    tl.store(d_ptr + i, act_grad(u, ACT), mask=i < n)


@needs_interpreter
@pytest.mark.interpreter
def test_triton_activations_match_pytorch() -> None:
    import triton
    import triton.language as tl

    from fastscarlet.kernels.activations import act_fwd, act_grad

    @triton.jit
    def k(u_ptr, f_ptr, d_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        u = tl.load(u_ptr + i, mask=i < n, other=0.0)
        tl.store(f_ptr + i, act_fwd(u, ACT), mask=i < n)
        tl.store(d_ptr + i, act_grad(u, ACT), mask=i < n)

    u = torch.cat([KINKS, torch.randn(50)])
    for name, code in ACT_CODES.items():
        f, d = torch.empty_like(u), torch.empty_like(u)
        k[(1,)](u, f, d, u.numel(), ACT=code, BLOCK=64)
        _close(f, act_ref(u.double(), name))
        _close(d, act_grad_ref(u.double(), name))


@needs_interpreter
@pytest.mark.interpreter
def test_finalize_and_backward_coefficients() -> None:
    """Sums -> (mean, rstd, scale, shift, unbiased var); BN backward sums -> A, B, C with
    dz = A du + B z + C equal to autograd through F.batch_norm (training)."""
    from fastscarlet.kernels import batchnorm as bn

    g = torch.Generator().manual_seed(0)
    P, C = 300, 40
    z = torch.randn(P, C, generator=g, dtype=torch.float64) * 2 + 1
    gamma = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(C, generator=g, dtype=torch.float64)
    sums = torch.stack([z.sum(0), z.square().sum(0)]).float()
    stats = torch.empty(bn.STAT_ROWS, C)
    bn.bn_train_finalize(sums, gamma.float(), beta.float(), stats, P, 1e-5)
    var = z.var(0, unbiased=False)
    _close(stats[bn.MEAN], z.mean(0))
    _close(stats[bn.RSTD], (var + 1e-5).rsqrt(), 1e-4)
    _close(stats[bn.VAR_UNBIASED], z.var(0, unbiased=True), 1e-4)
    _close(stats[bn.SCALE], gamma * (var + 1e-5).rsqrt(), 1e-4)

    zz = z.detach().requires_grad_()
    y = torch.nn.functional.batch_norm(zz, None, None, gamma, beta, True, 0.0, 1e-5)
    du = torch.randn(P, C, generator=g, dtype=torch.float64)
    (dz_ref,) = torch.autograd.grad(y, zz, du)
    xhat = (z - z.mean(0)) * (var + 1e-5).rsqrt()
    dsums = torch.stack([du.sum(0), (du * xhat).sum(0)]).float()
    coef = torch.empty(3, C)
    dgamma, dbeta = torch.empty(C), torch.empty(C)
    bn.bn_bwd_coef(dsums, stats, gamma.float(), coef, dgamma, dbeta, P)
    dz = coef[0].double() * du + coef[1].double() * z + coef[2].double()
    _close(dz, dz_ref, 1e-4)
    _close(dgamma, (du * xhat).sum(0))
    _close(dbeta, du.sum(0))

    # the reduction kernel computes the same two sums from (du, z)
    red = torch.zeros(2, C)
    bn.bn_bwd_reduce(du.float(), z.float(), stats[bn.MEAN], stats[bn.RSTD], red)
    _close(red, dsums, 1e-4)


@needs_interpreter
@pytest.mark.interpreter
def test_channel_sums_and_eval_fold() -> None:
    """``channel_sums``: (sum z, sum z^2) per channel of rows that no epilogue summed (P not a
    multiple of the tile); ``bn_eval_fold``: eval BN as (scale, shift) equals ``F.batch_norm``."""
    from fastscarlet.kernels import batchnorm as bn

    g = torch.Generator().manual_seed(5)
    P, C = 301, 40
    z = torch.randn(P, C, generator=g) * 2 + 1
    sums = torch.zeros(2, C)
    bn.channel_sums(z, sums)
    _close(sums[0], z.double().sum(0))
    _close(sums[1], z.double().square().sum(0))
    gamma, beta = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g)
    mean, var = torch.randn(C, generator=g), torch.rand(C, generator=g) + 0.5
    fold = torch.empty(2, C)
    bn.bn_eval_fold(gamma, beta, mean, var, 1e-3, fold)
    want = torch.nn.functional.batch_norm(z.double(), mean.double(), var.double(),
                                          gamma.double(), beta.double(), False, 0.0, 1e-3)  # fmt: skip
    _close(z.double() * fold[0].double() + fold[1].double(), want)


def _batches(C: int, seed: int) -> list[torch.Tensor]:
    """Three ``[N, C, H, W]`` batches with different means and spreads, so that the running
    statistics of a cumulative average differ from any fixed momentum's."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, C, 5, 5, generator=g) * (i + 1) + i for i in range(3)]


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
def test_batch_norm_ref_is_batchnorm2d(momentum: float | None) -> None:
    """The oracle itself: on ``[P, C]`` rows, over three training batches and then in eval mode,
    the output and every buffer of ``nn.BatchNorm2d`` on the same pixels. ``momentum=None`` is
    the cumulative average (what BN recalibration uses), not "never update"."""
    module = torch.nn.BatchNorm2d(12, momentum=momentum)
    randomize_bn(module)
    oracle = copy.deepcopy(module)
    for x in [*_batches(12, 0), None]:
        if x is None:  # eval mode: the running statistics just accumulated normalise
            module.eval()
            oracle.eval()
            x = torch.randn(3, 12, 5, 5)
        want = rows(module(x))
        got = batch_norm_ref(rows(x), oracle)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        for name, buf in module.named_buffers():
            torch.testing.assert_close(oracle.get_buffer(name), buf, rtol=1e-6, atol=1e-6)
    assert int(oracle.num_batches_tracked) == 3


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize(
    "momenta",
    [(0.1, 0.1), (None, None), (None, 0.3)],
    ids=["foreach-momentum", "cumulative", "mixed"],
)
def test_training_bn_path_matches_batch_norm_ref(momenta: tuple[float | None, ...]) -> None:
    """Sums -> ``bn_train_finalize`` -> ``affine_act`` and ``update_running_stats``, as the
    block's training forward uses them, over three batches for two BNs at once (one momentum
    for both takes the foreach path; ``None`` or mixed momenta the per-BN one): the normalised
    output and the buffers of :func:`batch_norm_ref` in float64."""
    from fastscarlet.kernels import batchnorm as bn

    C = 40
    mods = [torch.nn.BatchNorm2d(C, momentum=m) for m in momenta]
    for i, m in enumerate(mods):
        randomize_bn(m, torch.Generator().manual_seed(i))
    oracles = [copy.deepcopy(m).double() for m in mods]
    batches = [_batches(C, i) for i in range(len(mods))]
    for step in range(3):
        stats, outs = [], []
        for i, m in enumerate(mods):
            z = rows(batches[i][step]).contiguous()
            sums = torch.stack([z.sum(0), z.square().sum(0)])
            st = torch.empty(bn.STAT_ROWS, C)
            bn.bn_train_finalize(sums, m.weight.detach(), m.bias.detach(), st, z.shape[0], m.eps)
            out = torch.empty_like(z)
            bn.affine_act(z, st[bn.SCALE], st[bn.SHIFT], (3, 25), out=out)
            stats.append(st)
            with torch.no_grad():
                outs.append((out, batch_norm_ref(z.double(), oracles[i])))
        bn.update_running_stats(mods, stats)
        for (out, want), m, oracle in zip(outs, mods, oracles):
            _close(out, want, 1e-5)
            _close(m.running_mean, oracle.running_mean, 1e-5)
            _close(m.running_var, oracle.running_var, 1e-5)
            assert torch.equal(m.num_batches_tracked, oracle.num_batches_tracked)
    assert all(int(m.num_batches_tracked) == 3 for m in mods)


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize("offset", [0.0, 3.0], ids=["centred", "offset-input"])
def test_gram_finalize_matches_direct_statistics(offset: float) -> None:
    """BN statistics of z = x W^T from [x, 1]^T x equal those of z itself; an input with a mean of
    3 std (a post-ReLU6 tensor) checks the cancellation in E[z^2] - mean^2."""
    from fastscarlet.kernels import batchnorm as bn

    g = torch.Generator().manual_seed(3)
    P, CIN, E = 500, 40, 72
    x = torch.randn(P, CIN, generator=g, dtype=torch.float64) + offset
    w = torch.randn(E, CIN, generator=g, dtype=torch.float64) / CIN**0.5
    gamma, beta = torch.rand(E, dtype=torch.float64) + 0.5, torch.randn(E, dtype=torch.float64)
    gram = (torch.cat([x, torch.ones(P, 1, dtype=torch.float64)], 1).t() @ x).float()
    stats = torch.empty(bn.STAT_ROWS, E)
    bn.bn_gram_finalize(gram, w.float(), gamma.float(), beta.float(), stats, P, 1e-5)
    z = x @ w.t()
    var = z.var(0, unbiased=False)
    _close(stats[bn.MEAN], z.mean(0))
    _close(stats[bn.RSTD], (var + 1e-5).rsqrt(), 1e-4)
    _close(stats[bn.VAR_UNBIASED], z.var(0, unbiased=True), 1e-4)
    _close(stats[bn.SHIFT], beta - z.mean(0) * gamma * (var + 1e-5).rsqrt(), 1e-4)


@needs_interpreter
@pytest.mark.interpreter
def test_affine_act_store_residual_and_pool() -> None:
    from fastscarlet.kernels.batchnorm import affine_act

    g = torch.Generator().manual_seed(1)
    N, HW, C = 3, 49, 40
    z, res = torch.randn(N * HW, C, generator=g), torch.randn(N * HW, C, generator=g)
    sa, sb = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g)
    ref = act_ref(z.double() * sa.double() + sb.double(), "hswish")
    out = torch.empty_like(z)
    pool = torch.zeros(N, C)
    affine_act(z, sa, sb, (N, HW), act="hswish", out=out, residual=res, pool=pool)
    _close(out, ref + res.double())
    _close(pool, (ref + res.double()).view(N, HW, C).mean(1))


@needs_interpreter
@pytest.mark.interpreter
def test_bn_bwd_apply_with_se_term_in_place() -> None:
    from fastscarlet.kernels.batchnorm import bn_bwd_apply

    g = torch.Generator().manual_seed(2)
    N, HW, C = 3, 25, 40
    du, z = torch.randn(N * HW, C, generator=g), torch.randn(N * HW, C, generator=g)
    coef = torch.randn(3, C, generator=g)
    sa, sb, dmh = torch.rand(C, generator=g), torch.randn(C, generator=g), torch.randn(N, C)
    d = act_grad_ref(z.double() * sa.double() + sb.double(), "relu6")
    full = du.double() + dmh.double().repeat_interleave(HW, 0) * d
    want = coef[0].double() * full + coef[1].double() * z.double() + coef[2].double()
    bn_bwd_apply(du, z, coef, du, HW, se_term=(dmh, sa, sb), act="relu6")
    _close(du, want)
