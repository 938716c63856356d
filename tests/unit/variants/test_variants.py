"""The variants: their presets and the shipped configs (their training runs: tests/integration/test_variants_train.py)."""
from __future__ import annotations

import re

import pytest

from gandist import config
from gandist.variants import VARIANTS
from tests.conftest import REPO
from tests.data_fixtures import CELEBA_ATTRIBUTES

QUICK = REPO / "configs" / "quickstart.yaml"
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SHIPPED = ["gan_mnist", "dcgan_cifar10", "dcgan_celeba", "wgan_cifar10", "wgan_gp_cifar10", "wgan_gp_celeba",
           "cgan_cifar10", "cgan_celeba"]
STEPS = 20


# -- presets ---------------------------------------------------------------------------------------

def test_the_issue_variants_are_registered_with_their_sources():
    assert {"gan", "dcgan", "wgan", "wgan_gp", "cgan"} <= set(VARIANTS)
    for name, v in VARIANTS.items():
        assert v.name == name and v.summary and v.source
        config.load(None, [f"variant={name}"])  # every preset key exists and is in range


@pytest.mark.parametrize("variant,expected", [
    ("gan", {"model.arch": "mlp", "loss.adversarial": "bce", "optim.n_critic": 1, "optim.name": "adam"}),
    ("dcgan", {"model.arch": "dcgan", "model.d_norm": "batch", "loss.adversarial": "bce", "optim.lr_d": 2e-4,
               "optim.beta1": 0.5, "optim.n_critic": 1}),
    ("wgan", {"loss.adversarial": "wasserstein", "loss.regularizer": "clip", "loss.clip": 0.01,
              "optim.name": "rmsprop", "optim.lr_g": 5e-5, "optim.lr_d": 5e-5, "optim.n_critic": 5}),
    ("wgan_gp", {"loss.adversarial": "wasserstein", "loss.regularizer": "gp", "loss.gp_weight": 10.0,
                 "model.d_norm": "layer", "optim.name": "adam", "optim.lr_g": 1e-4, "optim.lr_d": 1e-4,
                 "optim.beta1": 0.0, "optim.beta2": 0.9, "optim.n_critic": 5}),
    ("cgan", {"model.conditioning": "concat", "loss.adversarial": "bce", "optim.n_critic": 1}),
    ("sngan", {"model.spectral_norm": True, "model.d_norm": "none", "loss.adversarial": "hinge",
               "model.conditioning": "projection", "optim.n_critic": 1, "optim.beta1": 0.5}),
])
def test_a_plain_override_on_the_quickstart_brings_the_variants_own_defaults(variant, expected):
    cfg = config.load(QUICK, [f"variant={variant}"])
    for key, want in expected.items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == want, key
    if variant == "gan":
        assert cfg.loss.instance_noise > 0
    # whichever variant: the quickstart's dataset and sizes stay
    assert (cfg.data.source, cfg.data.resolution, cfg.model.g_width) == ("synthetic", 32, 32)


def test_variants_do_not_leak_into_each_other():
    # the first preset must not leave anything behind for the second (presets are data, applied afresh)
    config.load(QUICK, ["variant=wgan"])
    cfg = config.load(QUICK, ["variant=dcgan"])
    assert (cfg.loss.regularizer, cfg.optim.name, cfg.optim.n_critic) == ("none", "adam", 1)


def test_a_new_variant_is_one_file(tmp_path, monkeypatch):
    import sys

    import gandist.variants as pkg

    (tmp_path / "hinge_dcgan.py").write_text(
        "from gandist.variants import Variant\n"
        "VARIANT = Variant('hinge_dcgan', 'DCGAN with the hinge loss', 'test', {'loss.adversarial': 'hinge'})\n")
    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(tmp_path)])
    try:
        found = pkg._collect()
    finally:
        sys.modules.pop("gandist.variants.hinge_dcgan", None)
    assert set(found) == set(VARIANTS) | {"hinge_dcgan"}
    assert found["hinge_dcgan"].preset["loss.adversarial"] == "hinge"


# -- shipped configs -----------------------------------------------------------------------------

def test_every_shipped_config_exists():
    names = {p.stem for p in CONFIGS}
    assert set(SHIPPED) <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = config.load(path)
    if path.stem == "quickstart":
        return
    variant = next(v for v in sorted(VARIANTS, key=len, reverse=True) if path.stem.startswith(v + "_"))
    assert cfg.variant == variant
    dataset = path.stem[len(variant) + 1:].split("_")[0]
    want = {"mnist": (28, 1), "cifar10": (32, 3), "celeba": (64, 3)}[dataset]
    assert (cfg.data.resolution, cfg.data.channels) == want
    assert cfg.data.source == "shards"
    # the prepare tool's naming: <out>/train-NNNNNN.tar, as one brace range
    assert re.fullmatch(rf"data/shards/{dataset}[\w-]*/train-\{{000000\.\.\d{{6}}\}}\.tar", cfg.data.urls)
    assert cfg.output.dir == f"runs/{path.stem}"
    if variant == "cgan":
        assert cfg.label_dim == (len(cfg.data.attributes) if dataset == "celeba" else 10)
    if dataset == "celeba":
        assert cfg.data.label_key == "attr"


def test_celeba_attributes_are_real_celeba_attribute_names():
    # CELEBA_ATTRIBUTES is checked against the real list_attr_celeba.txt in test_prepare's real-sample test
    cfg = config.load(REPO / "configs" / "cgan_celeba.yaml")
    assert cfg.data.attributes and set(cfg.data.attributes) <= set(CELEBA_ATTRIBUTES)
    assert len(set(cfg.data.attributes)) == len(cfg.data.attributes)


def test_conditional_wgan_gp_example_composes_cgan_with_the_gp_parts():
    cfg = config.load(REPO / "configs" / "cgan_celeba.yaml")
    assert cfg.model.conditioning == "projection" and cfg.model.d_norm != "batch"
    assert (cfg.loss.adversarial, cfg.loss.regularizer, cfg.optim.n_critic) == ("wasserstein", "gp", 5)


def test_wgan_gp_cifar10_uses_the_papers_resnet_and_a_dcgan_style_config_exists():
    cfg = config.load(REPO / "configs" / "wgan_gp_cifar10.yaml")
    assert (cfg.model.arch, cfg.model.d_norm, cfg.model.z_dim, cfg.model.g_width * 2) == ("resnet", "none", 128, 128)
    assert (cfg.optim.lr_g, cfg.optim.lr_d, cfg.optim.lr_decay) == (2e-4, 2e-4, "linear")  # the paper's schedule
    dc = config.load(REPO / "configs" / "wgan_gp_cifar10_dcgan.yaml")
    assert (dc.model.arch, dc.model.d_norm) == ("dcgan", "layer")
