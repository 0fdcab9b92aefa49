"""ONNX export: every published model and random genomes of every built-in space equal PyTorch
under onnxruntime (max abs diff < 1e-4 of the output's scale, max(1, max|y|)) at a dynamic batch
size; the CLI; a missing package.

The weights are seeded per case: the conv weights come from the global generator, so without a
seed a case's network (and its rounding error) changed with the tests that ran before it. The
tolerance is relative because fp32 rounding differences between onnxruntime and oneDNN grow with
the activations: over 8 seeds of a FairNAS-SE network the max abs diff went from 3e-6 to 7.3e-4 as
max|y| went from 0.8 to 52 (always under 1.5e-5 of max|y|); a wrong weight or op gives O(1)."""

import sys

import numpy as np
import pytest
import torch
from export_fixtures import SPACES, inputs, live_network, make_checkpoint

from fastscarlet.cli import main
from fastscarlet.export import check_onnx, export_onnx, opset_of
from fastscarlet.nn import build_network, create_model
from fastscarlet.space import PUBLISHED, get_space, random_genome

RES = 64


def _check(net, path, **kwargs):
    report = export_onnx(net, path, RES, **kwargs)
    assert opset_of(path) >= 17
    # Outputs that depend on the input, so that a wrong graph could not agree by accident; batch
    # 5 (traced at 2) checks the dynamic batch dimension.
    x = inputs(5, RES, seed=9)
    with torch.no_grad():
        y = net(x)
    assert (y[0] - y[1]).abs().max() > 1e-2
    tol = 1e-4 * max(1.0, float(y.abs().max()))
    assert report["max_abs_diff"] < tol
    assert check_onnx(path, net, x) < tol
    return report


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_models_equal_pytorch(tmp_path, name):
    torch.manual_seed(0)
    net = live_network(create_model(name), RES)
    report = _check(net, tmp_path / f"{name}.onnx")
    assert report["exporter"] == "torchscript" and report["opset"] == 18


def _random_genomes():
    cases = [(name, "identity", 0) for name in SPACES]
    cases += [("scarlet", "fold", 1), ("scarlet_all", "let", 2), ("scarlet_all", "fold", 3)]
    return cases


@pytest.mark.parametrize(("space_name", "mode", "seed"), _random_genomes())
def test_random_genomes_of_every_space_equal_pytorch(tmp_path, space_name, mode, seed):
    space = (
        get_space("scarlet", identity="all")
        if space_name == "scarlet_all"
        else get_space(space_name)
    )
    rng = np.random.default_rng(seed)
    g = list(random_genome(space, rng))
    if space.identity_index is not None:
        g[5] = space.identity_index  # an identity before a strided block (folded by "fold")
        if space_name == "scarlet_all":
            g[0] = g[10] = space.identity_index  # a strided and a channel-changing LET
    torch.manual_seed(seed)
    net = live_network(build_network(space, g, identity=mode), RES, seed)
    _check(net, tmp_path / "net.onnx")


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_model(tmp_path):
    net = live_network(create_model("moga_a"), RES)
    report = _check(net, tmp_path / "moga_a.onnx", exporter="dynamo")
    assert report["exporter"] == "dynamo"


def test_bad_arguments_and_a_missing_package(tmp_path, monkeypatch):
    net = create_model("fairnas_c")
    with pytest.raises(ValueError, match="opset must be 17 or newer"):
        export_onnx(net, tmp_path / "a.onnx", RES, opset=13)
    with pytest.raises(ValueError, match="unknown ONNX exporter"):
        export_onnx(net, tmp_path / "a.onnx", RES, exporter="tflite")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match=r"pip install onnxruntime"):
        export_onnx(net, tmp_path / "a.onnx", RES)


def test_cli_onnx_export(tmp_path, capsys):
    ckpt, sup = make_checkpoint(tmp_path)
    out = tmp_path / "sub.onnx"
    args = ["export", "--supernet", str(ckpt), "--genome", "3,4,0", "--format", "onnx"]
    assert main([*args, "--out", str(out), "--identity", "let"]) == 0
    printed = capsys.readouterr().out
    assert "dynamic batch" in printed and "max abs diff" in printed
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = inputs(3, 16)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = sup(x, [3, 4, 0]).numpy()
    assert np.abs(got - want).max() < 1e-4
