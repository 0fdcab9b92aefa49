"""``SuperNet(stabilizer=False)`` / ``space.stabilizer: false``: identity choices as a plain identity
(the "without LET" baseline of the ranking study), trained, saved and reopened as such."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import make_image_folder, tiny_config_dict, tiny_space

from fastscarlet.config import config_from_dict
from fastscarlet.nn import LinearStabilizer, PlainIdentity, SuperNet
from fastscarlet.train.checkpoint import load_supernet
from fastscarlet.train.trainer import SupernetTrainer

ID = 4  # the tiny space's identity choice (E2K3, E2K5, E2K3SE, E2K5SE, ID)


def test_identity_choice_is_the_identity_function():
    space = tiny_space()
    assert space.choices[ID].identity
    torch.manual_seed(0)
    plain = SuperNet(space, stabilizer=False).eval()
    x = torch.randn(2, 3, 16, 16)
    for g in [(0, ID, ID), (1, ID, 0), (2, 3, ID)]:
        # the whole path is the network with plain identities (what the papers retrain)
        expect = plain.subnet(g, identity="identity")(x)
        assert torch.equal(plain(x, g), expect)
    block, _ = plain.layers[1].block_of(ID)
    assert isinstance(block, PlainIdentity) and list(block.parameters()) == []
    assert plain.layers[1].parameters_of(ID) == []
    h = torch.randn(2, 12, 8, 8)
    assert block.forward_with_se(h, None) is h
    with pytest.raises(ValueError, match="no SE"):
        block.forward_with_se(h, torch.nn.Identity())


def test_the_let_supernet_differs_only_by_the_stabilizers():
    space = tiny_space()
    let, plain = SuperNet(space), SuperNet(space, stabilizer=False)
    extra = set(let.state_dict()) - set(plain.state_dict())
    assert extra and all(".candidates.ID.conv.weight" in k for k in extra)
    assert set(plain.state_dict()) < set(let.state_dict())
    assert isinstance(let.layers[1].block_of(ID)[0], LinearStabilizer)
    # a LET that is not the identity makes the path another function; the plain one is exact
    x, g = torch.randn(2, 3, 16, 16), (0, ID, 0)
    let.eval(), plain.eval()
    plain.load_state_dict({k: v for k, v in let.state_dict().items() if k not in extra})
    assert not torch.allclose(let(x, g), plain(x, g))
    let.layers[1].candidates["ID"].reset_to_identity()
    assert torch.allclose(let(x, g), plain(x, g), atol=1e-6)


def test_a_shape_changing_identity_needs_the_stabilizer():
    space = tiny_space(identity="all")  # identity also at the stride-2 layer
    SuperNet(space)  # the LET can change the shape
    with pytest.raises(ValueError, match="layer 1 .*stride 2 and channels 8->12.*stabilizer=True"):
        SuperNet(space, stabilizer=False)


def test_trained_with_the_config_key_and_reopened(tmp_path):
    root = make_image_folder(tmp_path / "data", classes=3, per_class=8, size=16)
    cfg = config_from_dict(
        tiny_config_dict(root, tmp_path / "run", space={"stabilizer": False}),
        values={"train.max_steps": 2},
    )
    trainer = SupernetTrainer(cfg)
    assert all(not isinstance(m, LinearStabilizer) for m in trainer.model.modules()) and any(
        isinstance(m, PlainIdentity) for m in trainer.model.modules()
    )
    trainer.fit()
    net = load_supernet(tmp_path / "run" / "last.pt")
    assert net.config.space.stabilizer is False
    assert isinstance(net.layers[2].block_of(ID)[0], PlainIdentity)
    g = (0, ID, ID)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype("float32"))
    trainer.model.eval()
    assert torch.equal(net(x, g), trainer.model(x, g))
