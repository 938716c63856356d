"""final/generator.json without training: G rebuilt from the card alone has the same structure and
outputs, the card's errors name the file, class names from the data, slerp and the interpolation rows."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import gandist
from gandist import config, nets
from gandist.sample import interpolation, slerp
from gandist.trained import CARD_FORMAT, GeneratorError, class_names, generator_card, write_generator_card
from tests.metrics_fixtures import tiny_cfg

ATTRS = ["variant=cgan", "data.attributes=[Male,Smiling,Young]", "data.label_key=attr"]


pytestmark = pytest.mark.usefixtures("one_thread")


def save(G, path):
    save_file({k: v.detach().contiguous() for k, v in G.state_dict().items()}, str(path))


def finished_run(tmp_path, *overrides, ema=True, card=True):
    """A run directory as gandist-train leaves it (config.yaml, final/ weights and card), made by hand:
    G trained for one step so its BatchNorm statistics are not the defaults, and an EMA copy that differs."""
    cfg = tiny_cfg(*overrides)
    torch.manual_seed(0)
    G, _ = nets.build(cfg)
    ld = cfg.label_dim
    G.train()(torch.randn(8, cfg.model.z_dim), torch.eye(ld)[torch.arange(8) % ld] if ld else None)
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text(config.dump(cfg))
    save(G, run / "final" / "generator.safetensors")
    if ema:
        with torch.no_grad():
            for p in G.parameters():
                p.mul_(0.5)
        save(G, run / "final" / "generator_ema.safetensors")
    if card:
        write_generator_card(run / "final", cfg)
    return cfg, G.eval(), run


@pytest.mark.parametrize("overrides", [
    ["variant=dcgan"], ["variant=cgan"], ATTRS, ["variant=dcgan", "model.arch=resnet", "model.g_norm=batch"],
    ["variant=dcgan", "model.arch=mlp", "data.channels=1"],
], ids=["dcgan", "cgan", "attributes", "resnet", "mlp-grey"])
def test_card_alone_rebuilds_the_generator(tmp_path, overrides):
    cfg, G, run = finished_run(tmp_path, *overrides)
    card = json.loads((run / "final" / "generator.json").read_text())
    assert card["format"] == CARD_FORMAT and card["variant"] == cfg.variant
    assert card["network"] == {"arch": cfg.model.arch, "z_dim": 8, "channels": cfg.data.channels, "resolution": 32,
                               "width": 4, "norm": cfg.model.g_norm, "label_dim": cfg.label_dim,
                               "info_codes": 0}
    assert card["weights"] == {"generator": "generator.safetensors", "generator_ema": "generator_ema.safetensors"}
    assert card["default"] == "generator_ema"
    (run / "config.yaml").unlink()  # the card is all there is

    for path in (run / "final", run):  # the final directory, or the run directory
        ema = gandist.load_generator(path)
        assert not ema.training and not any(p.requires_grad for p in ema.parameters())
        assert ema.card == card
        for k, v in G.state_dict().items():
            assert torch.equal(ema.state_dict()[k], v), k
    raw = gandist.load_generator(run, which="final")
    assert not torch.equal(next(raw.parameters()), next(ema.parameters()))  # the other file

    ld = card["network"]["label_dim"]
    z = torch.randn(6, 8)
    y = torch.eye(ld)[torch.arange(6) % ld] if ld else None
    with torch.no_grad():
        assert torch.equal(ema(z, y), G(z, y))


def test_nets_build_uses_the_same_generator_arguments():
    for overrides in (["variant=dcgan"], ["variant=cgan"], ATTRS, ["model.arch=resnet"], ["model.arch=mlp"]):
        cfg = tiny_cfg(*overrides)
        G, _ = nets.build(cfg)
        alone = nets.build_generator(**nets.generator_args(cfg))
        assert type(alone) is type(G)
        assert {k: v.shape for k, v in alone.state_dict().items()} == {k: v.shape for k, v in G.state_dict().items()}
    with pytest.raises(ValueError, match="unknown network family 'vit'"):
        nets.build_generator("vit", 8, 3, 32, 4, "batch", 0)


def test_card_conditioning_and_class_names(tmp_path):
    classes = generator_card(tiny_cfg("variant=cgan"), ["generator"], class_names(tiny_cfg("variant=cgan")))
    assert classes["conditioning"] == {"kind": "classes", "mode": "concat", "num_classes": 10, "attributes": [],
                                       "class_names": ["disk", "square", "triangle", "diamond", "ring", "plus",
                                                       "hbar", "vbar", "x", "frame"]}
    assert classes["weights"] == {"generator": "generator.safetensors"} and classes["default"] == "generator"
    attrs = generator_card(tiny_cfg(*ATTRS))["conditioning"]
    assert attrs["kind"] == "attributes" and attrs["attributes"] == ["Male", "Smiling", "Young"]
    assert attrs["num_classes"] == 0 and attrs["class_names"] is None
    assert generator_card(tiny_cfg("variant=dcgan"))["conditioning"]["kind"] == "none"

    # shards: the names of their index.json; ids beyond them by number; no index, no names
    (tmp_path / "index.json").write_text(json.dumps({"format": "gandist-shards/1", "classes": ["cat", "dog"]}))
    shards = ["variant=cgan", "data.source=shards", f"data.urls={tmp_path}/train-{{000000..000001}}.tar"]
    assert class_names(tiny_cfg(*shards, "data.num_classes=3")) == ["cat", "dog", "2"]
    assert class_names(tiny_cfg(*shards[:2], f"data.urls={tmp_path}/none/x-{{000000..000001}}.tar")) is None


def _error(path, *args) -> str:
    with pytest.raises(GeneratorError) as e:
        gandist.load_generator(path, *args)
    return str(e.value)


def test_errors_name_the_file(tmp_path):
    cfg, _, run = finished_run(tmp_path, "variant=cgan")
    final, card_path = run / "final", run / "final" / "generator.json"
    assert f"run directory {tmp_path / 'nowhere'} does not exist" in _error(tmp_path / "nowhere")

    good = card_path.read_text()
    card_path.write_text("{not json")
    assert f"{card_path} is not valid JSON" in _error(final)
    card_path.write_text(json.dumps({**json.loads(good), "format": "gandist-generator/9"}))
    assert f"{card_path}: format 'gandist-generator/9' is not 'gandist-generator/1'" in _error(run)
    for change, message in [({"network": {**json.loads(good)["network"], "z_dim": "16"}}, "network.z_dim"),
                            ({"network": {**json.loads(good)["network"], "arch": "vit"}}, "network.arch"),
                            ({"network": {**json.loads(good)["network"], "label_dim": 3}}, "does not match"),
                            ({"default": "generator_best"}, "default 'generator_best'"),
                            ({"network": {**json.loads(good)["network"], "resolution": 48}}, "cannot be built"),
                            ({"weights": {"generator": "../x.safetensors"}}, "weights must map")]:
        card_path.write_text(json.dumps({**json.loads(good), **change}))
        assert f"{card_path}: " in (err := _error(final)) and message in err, err

    # weights that do not fit what the card describes: both files named
    card_path.write_text(json.dumps({**json.loads(good), "network": {**json.loads(good)["network"], "width": 8}}))
    err = _error(final)
    assert f"{final / 'generator_ema.safetensors'} does not fit the generator {card_path} describes" in err
    card_path.write_text(good)
    (final / "generator_ema.safetensors").write_bytes(b"garbage")
    assert f"{final / 'generator_ema.safetensors'} is not a readable safetensors file" in _error(final)
    (final / "generator_ema.safetensors").unlink()  # the card lists it: the file is missing
    assert "generator_ema.safetensors does not exist: the run kept no EMA" in _error(final, "ema")

    # no card: the run's config.yaml stands in (a run from before cards); neither -> the card is named
    card_path.unlink()
    assert gandist.load_generator(run).card["network"]["label_dim"] == 10
    (run / "config.yaml").unlink()
    assert f"{card_path} does not exist, nor does {run / 'config.yaml'}" in _error(final)


def test_slerp_keeps_the_ends_and_the_norm():
    a, b = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    b = b * a.norm() / b.norm()
    t = torch.linspace(0, 1, 7)[:, None]
    path = slerp(a, b, t)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)  # the ends exactly
    assert torch.allclose(path.norm(dim=1), a.norm().expand(7), rtol=1e-5)  # on the sphere all along
    assert path[3].norm() > 1.3 * ((a + b) / 2).norm()  # where the straight line would dip inside
    assert torch.allclose(slerp(a, 2 * a, t), (1 - t) * a + t * 2 * a)  # parallel: the straight line


def test_interpolation_rows_keep_their_condition():
    card = generator_card(tiny_cfg("variant=cgan"))
    z, y, classes = interpolation(card, 12, 5, seed=0)
    assert z.shape == (60, 8) and y.shape == (60, 10)
    rows = y.view(12, 5, 10)
    assert (rows == rows[:, :1]).all()  # constant along each row
    assert rows[:, 0].argmax(1).tolist() == [r % 10 for r in range(12)] and classes == [r % 10 for r in range(12)
                                                                                          for _ in range(5)]
    zr = z.view(12, 5, 8)
    assert not torch.equal(zr[:, 0], zr[:, -1]) and not torch.equal(zr[0, 0], zr[1, 0])  # endpoints per row
    again, _, _ = interpolation(card, 12, 5, seed=0)
    assert torch.equal(again, z) and not torch.equal(interpolation(card, 12, 5, seed=1)[0], z)

    _, y, classes = interpolation(card, 3, 4, seed=0, label=7)
    assert y.argmax(1).tolist() == [7] * 12 and classes == [7] * 12
    attrs = generator_card(tiny_cfg(*ATTRS))
    _, y, classes = interpolation(attrs, 6, 4, seed=0)
    assert classes is None and (y.view(6, 4, 3) == y.view(6, 4, 3)[:, :1]).all()
    assert len({tuple(r) for r in y.view(6, 4, 3)[:, 0].tolist()}) > 1  # random attributes differ per row
    _, y, _ = interpolation(attrs, 2, 3, seed=0, attributes="Young")
    assert y.tolist() == [[0.0, 0.0, 1.0]] * 6
    z, y, classes = interpolation(generator_card(tiny_cfg("variant=dcgan")), 2, 3, seed=0)
    assert z.shape == (6, 8) and y is None and classes is None
