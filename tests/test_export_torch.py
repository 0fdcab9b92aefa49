"""The PyTorch export: spaces as plain data, save/load round trips in every identity mode, a
fresh process that never builds a supernet, and the ``fastscarlet export`` command."""

import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch
from export_fixtures import SPACES, inputs, make_checkpoint
from test_supernet import calibrate_, randomize_
from tiny import tiny_space

from fastscarlet.cli import main
from fastscarlet.evaluate import recalibrate_bn
from fastscarlet.export import identity_mode, load, read, save
from fastscarlet.nn import LinearStabilizer, build_network
from fastscarlet.nn.supernet import SuperNet
from fastscarlet.space import get_space, random_genome, to_readable
from fastscarlet.space.serialize import space_from_dict, space_to_dict


@pytest.mark.parametrize(
    "space",
    [get_space(n) for n in SPACES]
    + [get_space("scarlet", identity="all"), tiny_space(num_classes=7)]
    + [replace(get_space("moga"), stem=replace(get_space("moga").stem, stride=1))],
    ids=[*SPACES, "scarlet_identity_all", "tiny", "moga_stem_stride_1"],
)
def test_space_round_trips_through_json(space):
    data = json.loads(json.dumps(space_to_dict(space)))
    assert space_from_dict(data) == space


def test_space_from_dict_names_malformed_data():
    data = space_to_dict(get_space("moga"))
    with pytest.raises(ValueError, match="not a serialised search space"):
        space_from_dict({**data, "format": "x"})
    with pytest.raises(ValueError, match=r"layers\[2\]: unknown Layer fields \['color'\]"):
        bad = json.loads(json.dumps(data))
        bad["layers"][2]["color"] = "red"
        space_from_dict(bad)


def scarlet_with_identities():
    """A scarlet genome with identity before a residual block (layer 4 -> 5: the LET is kept by
    fold) and before a strided one (layer 6 -> 7: folded)."""
    g = list(random_genome(get_space("scarlet"), np.random.default_rng(3)))
    g[3], g[5] = 12, 12
    return g


@pytest.fixture(scope="module")
def scarlet_supernet():
    g = scarlet_with_identities()
    sup = randomize_(SuperNet(get_space("scarlet")))
    return calibrate_(sup, inputs(4, 32), g), g


@pytest.mark.parametrize("mode", ["identity", "let", "fold"])
def test_save_load_round_trip_is_the_same_network(tmp_path, scarlet_supernet, mode):
    sup, g = scarlet_supernet
    net = sup.subnet(g, identity=mode).eval()
    path = save(net, tmp_path / "a.pt", resolution=32, meta={"note": "x"})
    data = torch.load(path, weights_only=True)  # plain data and tensors only
    assert data["identity"] == mode and data["genome"] == g and data["resolution"] == 32
    assert data["readable"] == to_readable(sup.space, g) and data["space"]["name"] == "scarlet"
    back = load(path)
    assert not back.training and back.resolution == 32 and back.meta == {"note": "x"}
    assert [type(b) for b in back.blocks] == [type(b) for b in net.blocks]
    x = inputs(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x), rtol=0, atol=0)
    if mode == "let":
        assert isinstance(back.blocks[3], LinearStabilizer)


def test_identity_mode_is_found_from_the_modules():
    space = get_space("scarlet", identity="all")
    g = scarlet_with_identities()
    g[0] = 12  # a strided, channel-changing LET: no plain identity
    for mode in ("let", "fold"):
        assert identity_mode(build_network(space, g, identity=mode)) == mode
    g2 = scarlet_with_identities()
    assert identity_mode(build_network(space, g2, identity="identity")) == "identity"
    net = build_network(space, g, identity="let")
    net.blocks[0] = torch.nn.Identity()
    with pytest.raises(ValueError, match="match no identity export mode"):
        identity_mode(net)


def test_read_names_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="exported subnet not found"):
        read(tmp_path / "nope.pt")
    torch.save({"format": "fastscarlet.supernet/1"}, tmp_path / "ck.pt")
    with pytest.raises(ValueError, match="not a fastscarlet subnet export"):
        read(tmp_path / "ck.pt")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(ValueError, match="cannot read it"):
        read(tmp_path / "t.txt")


FRESH = textwrap.dedent(
    """
    import sys, torch
    import fastscarlet.nn.supernet as supernet_module

    def refuse(*args, **kwargs):
        raise AssertionError("a supernet was built")

    supernet_module.SuperNet.__init__ = refuse
    from fastscarlet.export import load

    # the parent's thread count: oneDNN's convolutions sum in another order with other counts
    torch.set_num_threads(int(sys.argv[1]))
    for path, io in zip(sys.argv[2::2], sys.argv[3::2]):
        x, want = torch.load(io, weights_only=True)
        net = load(path)
        with torch.no_grad():
            diff = (net(x) - want).abs().max().item()
        print(f"{path}: {net.space.name} diff {diff:.3g}")
        assert diff < 1e-5, (path, diff)
    """
)


def test_export_loads_in_a_fresh_process_with_the_supernet_paths_outputs(
    tmp_path, scarlet_supernet
):
    """A custom (unregistered: the fresh process never imports tests/tiny.py) and a built-in
    space, LETs kept and folded. With ``let`` the export computes the supernet path's ops
    exactly; folding rounds differently (and BN can amplify that), so a folded export is compared
    with the folded subnet in this process."""
    tiny_g = [2, 4, 4]  # LETs before the head: kept by "let", folded into the head by "fold"
    tiny = calibrate_(randomize_(SuperNet(tiny_space())), inputs(4, 32), tiny_g)
    files = []
    x = inputs(2, 32, seed=5)
    for sup, g in [(tiny, tiny_g), scarlet_supernet]:
        for mode in ("let", "fold"):
            sub = sup.subnet(g, identity=mode)
            with torch.no_grad():
                want = sup(x, g) if mode == "let" else sub(x)
            assert (want[0] - want[1]).abs().max() > 1e-2
            stem = tmp_path / f"{sup.space.name}_{mode}"
            torch.save((x, want), f"{stem}_io.pt")
            files += [str(save(sub, f"{stem}.pt", resolution=32)), f"{stem}_io.pt"]
    run = subprocess.run(
        [sys.executable, "-c", FRESH, str(torch.get_num_threads()), *files],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("diff") == 4 and "tiny diff" in run.stdout


def test_cli_torch_export_is_the_supernet_path(tmp_path, capsys):
    ckpt, sup = make_checkpoint(tmp_path)
    g = [0, 4, 1]  # the LET before a residual block: kept by the default "fold"
    out = tmp_path / "sub.pt"
    args = ["export", "--supernet", str(ckpt), "--genome", "0,4,1", "--format", "torch"]
    assert main([*args, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    net = load(out)
    assert net.resolution == 16 and read(out)["identity"] == "fold"
    x = inputs(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), sup(x, g), rtol=1e-5, atol=1e-5)


def test_cli_recalibrates_bn_for_the_subnet(tmp_path):
    ckpt, sup = make_checkpoint(tmp_path)
    g = (0, 3, 2)
    out = tmp_path / "sub.pt"
    args = ["export", "--supernet", str(ckpt), "--readable", "E2K3-E2K5SE-E2K3SE"]
    args += ["--format", "torch", "--out", str(out), "--identity", "let"]
    assert main([*args, "--calib-batches", "2", "--batch-size", "4", "--device", "cpu"]) == 0
    net, data = load(out), read(out)
    assert data["meta"]["calib_batches"] == 2 and data["meta"]["calib_images"] == 8
    # The same recalibration done by hand, on the same (seeded) batches.
    from fastscarlet.data import build_loader

    ref = sup.subnet(g, identity="let")
    loader = build_loader(
        tmp_path / "data", "train", "torch", batch_size=4, image_size=16, num_workers=0,
        recipe="cifar", augment=False, shuffle=True, seed=0,
    )  # fmt: skip
    recalibrate_bn(ref, loader, 2)
    bn, ref_bn, sup_bn = net.blocks[0].bn1, ref.blocks[0].bn1, sup.layers[0].candidates["E2K3"].bn1
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)
    assert not torch.allclose(bn.running_mean, sup_bn.running_mean)


def test_cli_front_and_index(tmp_path, capsys):
    ckpt, _ = make_checkpoint(tmp_path)
    front = tmp_path / "search"
    front.mkdir()
    rows = [{"genome": [0, 1, 2], "readable": "", "acc": 1.0}, {"genome": [3, 4, 1], "acc": 2.0}]
    (front / "front.json").write_text(json.dumps(rows))
    out = tmp_path / "k1.pt"
    base = ["export", "--supernet", str(ckpt), "--format", "torch", "--front", str(front)]
    assert main([*base, "--index", "1", "--out", str(out)]) == 0
    assert read(out)["genome"] == [3, 4, 1]
    assert main([*base, "--out", str(out)]) == 0
    assert read(out)["genome"] == [0, 1, 2]
    capsys.readouterr()
    assert main([*base, "--index", "2", "--out", str(out)]) == 2
    assert "--index 2 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--genome", "0,1"], "a genome has 3 entries"),
        (["--genome", "0,1,9"], "layer 3 (index 2) cannot take 9"),
        (["--genome", "0,x,1"], "not a comma-separated list of integers"),
        (["--genome", "4,0,0"], "layer 1 (index 0) cannot take 4"),  # identity at a strided layer
        (["--readable", "E2K3-E6K5-E2K3"], "layer 2"),
        (["--genome", "0,1,2", "--format", "tflite"], "unknown format 'tflite'"),
        (["--genome", "0,1,2", "--identity", "skip"], "unknown --identity 'skip'"),
        (["--front", "NOFRONT"], "has no front.json"),
        (["--arch-def", "[[1]]"], "arch-def has 1 stages"),
    ],
)
def test_cli_names_bad_input(tmp_path, capsys, extra, message):
    ckpt, _ = make_checkpoint(tmp_path)
    (tmp_path / "NOFRONT").mkdir()
    extra = [str(tmp_path / e) if e == "NOFRONT" else e for e in extra]
    args = ["export", "--supernet", str(ckpt), "--out", str(tmp_path / "x.pt"), *extra]
    if "--format" not in extra:
        args += ["--format", "torch"]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
