"""Every variant's networks at every resolution: shapes, range, gradients; the ResNet of WGAN-GP;
per-sample critics; label conditioning; spectral normalisation."""
import pytest
import torch
import torch.nn as nn

from gandist import config, nets
from gandist.nets.conditioning import ConditionalDiscriminator, ConditionalGenerator
from gandist.nets.resnet import DownBlock, ResNetDiscriminator, ResNetGenerator, UpBlock
from gandist.variants import VARIANTS

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = ["model.z_dim=16", "model.g_width=8", "model.d_width=8"]
ATTRS = "[Smiling,Male,Eyeglasses]"


def build(*overrides, resolution=32, channels=3):
    # shards (never read here) lift the embedded dataset's 32/64 px restriction
    cfg = config.load(None, [*SMALL, f"data.resolution={resolution}", f"data.channels={channels}",
                             "data.source=shards", "data.urls=unused-{000000..000001}.tar", *overrides])
    G, D = nets.build(cfg)
    return cfg, G, D


def labels_for(cfg, n, seed=0):
    ld = cfg.label_dim
    if not ld:
        return None
    g = torch.Generator().manual_seed(seed)
    if cfg.data.attributes:
        return (torch.rand(n, ld, generator=g) > 0.5).float()
    return nn.functional.one_hot(torch.randint(ld, (n,), generator=g), ld).float()


def _name(overrides):
    return "-".join("attributes" if s.startswith("data.attributes") else s.split("=")[1] for s in overrides) or "preset"


def _cases():
    out = []
    for v in sorted(VARIANTS):
        arch = config.load(None, [f"variant={v}"]).model.arch  # the preset may leave the default
        conds = [[]]
        if v == "cgan":
            conds = [[], ["model.conditioning=projection"], [f"data.attributes={ATTRS}"],
                     ["model.conditioning=projection", f"data.attributes={ATTRS}"]]
        archs = [[]] + ([["model.arch=resnet"]] if arch == "dcgan" else [])
        for a in archs:
            for res, ch in ((28, 1), (32, 3), (64, 3)):
                if a and res == 28:
                    continue  # the ResNet is defined for 32 and 64 px (config refuses 28)
                for c in conds:
                    out.append(pytest.param(v, res, ch, a + c, id=f"{v}-{res}px-{_name(a + c)}"))
    return out


@pytest.mark.parametrize("variant,res,ch,extra", _cases())
def test_every_variant_builds_runs_forward_and_backward_at_every_resolution(variant, res, ch, extra):
    torch.manual_seed(0)
    cfg, G, D = build(f"variant={variant}", *extra, resolution=res, channels=ch)
    n = 4
    z = torch.randn(n, cfg.model.z_dim)
    y = labels_for(cfg, n)
    x = G(z, y)
    assert x.shape == (n, ch, res, res)
    assert x.min() >= -1 and x.max() <= 1
    out = D(x, y)
    assert out.shape == (n,) and torch.isfinite(out).all()
    (out.sum() + D(torch.rand(n, ch, res, res) * 2 - 1, y).sum()).backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in G.parameters())


def test_resnet_matches_the_wgan_gp_cifar10_architecture():
    cfg = config.load("configs/wgan_gp_cifar10.yaml")
    G, D = nets.build(cfg)
    assert isinstance(G, ResNetGenerator) and isinstance(D, ResNetDiscriminator)
    # G: linear to 128 x 4 x 4, three up-blocks of 128 channels, norm + ReLU + conv3x3 to RGB, tanh
    assert (G.fc.in_features, G.fc.out_features) == (128, 128 * 4 * 4)
    assert len(G.blocks) == 3 and all(isinstance(b, UpBlock) and b.c1.out_channels == 128 for b in G.blocks)
    assert isinstance(G.out[0], nn.BatchNorm2d) and G.out[2].kernel_size == (3, 3) and G.out[2].out_channels == 3
    assert isinstance(G.out[3], nn.Tanh)
    # D: optimised first block, one down-block, two blocks without resampling; no normalisation
    kinds = [(b.first, b.down) for b in D.blocks]
    assert kinds == [(True, True), (False, True), (False, False), (False, False)]
    assert all(isinstance(b, DownBlock) and b.c2.out_channels == 128 for b in D.blocks)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) for m in D.modules())
    assert isinstance(D.blocks[2].skip, nn.Identity) and isinstance(D.blocks[3].skip, nn.Identity)
    assert (D.head.in_features, D.head.out_features) == (128, 1)
    # the blocks end at 8x8, then global mean pooling and the linear head
    feats = D.blocks(torch.zeros(2, 3, 32, 32))
    assert feats.shape == (2, 128, 8, 8)
    x = torch.randn(2, 3, 32, 32)
    want = D.head(torch.relu(D.blocks(x)).mean((2, 3))).squeeze(1)
    torch.testing.assert_close(D(x), want)


def test_resnet_optimised_first_block_has_no_norm_and_no_activation_before_its_first_conv():
    b = DownBlock(3, 8, "layer", sn=False, down=True, first=True)
    assert isinstance(b.n1, nn.Identity) and isinstance(b.n2, nn.Identity)
    x = -torch.rand(1, 3, 8, 8)  # all negative: a ReLU in front would zero the input
    h = b.c1(x)
    assert h.abs().sum() > 0
    torch.testing.assert_close(b(x), nn.functional.avg_pool2d(b.c2(torch.relu(h)), 2) + b.skip(nn.functional.avg_pool2d(x, 2)))


def _per_sample(D, res, ch, y=None):
    """True if each sample's output ignores the other samples of the batch (in train mode)."""
    D.train()
    torch.manual_seed(1)
    x = torch.randn(6, ch, res, res)
    a = D(x, y)
    x2 = x.clone()
    x2[1:] = torch.randn(5, ch, res, res) * 3 + 1
    return torch.allclose(a[0], D(x2, y)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("res,ch", [(28, 1), (32, 3), (64, 3)])
def test_wgan_gp_critic_uses_layer_norm_and_treats_each_sample_alone(res, ch):
    _, _, D = build("variant=wgan_gp", resolution=res, channels=ch)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    norms = [m for m in D.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 1 for m in norms)  # normalised over (C, H, W) of each sample
    assert _per_sample(D, res, ch)
    # the check can fail: DCGAN's BatchNorm D couples the samples of a batch
    _, _, D_bn = build("variant=dcgan", resolution=res, channels=ch)
    assert not _per_sample(D_bn, res, ch)


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_resnet_critic_treats_each_sample_alone(norm):
    _, _, D = build("variant=wgan_gp", "model.arch=resnet", f"model.d_norm={norm}")
    assert _per_sample(D, 32, 3)


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
@pytest.mark.parametrize("labels", ["classes", "attributes"])
def test_conditional_g_output_changes_with_its_own_label_only(arch, labels):
    extra = [f"data.attributes={ATTRS}"] if labels == "attributes" else []
    cfg, G, _ = build("variant=cgan", f"model.arch={arch}", *extra)
    G.eval()  # BatchNorm on running statistics: no batch coupling
    torch.manual_seed(0)
    z = torch.randn(5, cfg.model.z_dim)
    y = labels_for(cfg, 5)
    base = G(z, y)
    y2 = y.clone()
    if labels == "classes":
        y2[2] = torch.roll(y2[2], 1)  # another class for sample 2
    else:
        y2[2, 1] = 1 - y2[2, 1]  # flip one chosen attribute of sample 2
    out = G(z, y2)
    # N(0, 0.02) init makes small images, so the change is measured against the image's own scale
    assert (out[2] - base[2]).abs().max() > 1e-2 * base[2].abs().max()
    others = [0, 1, 3, 4]
    torch.testing.assert_close(out[others], base[others], rtol=0, atol=0)
    # the same label gives the same image
    torch.testing.assert_close(G(z, y), base, rtol=0, atol=0)


def test_attribute_conditioning_has_an_input_for_the_chosen_attributes_only():
    cfg, G, D = build("variant=cgan", f"data.attributes={ATTRS}")
    assert cfg.label_dim == 3
    assert G.net[0].in_channels == cfg.model.z_dim + 3  # an attribute not chosen has no input at all
    assert D.features[0].in_channels == 3 + 3
    z = torch.randn(2, cfg.model.z_dim)
    with pytest.raises(ValueError, match="conditioned on 3 label values"):
        G(z, torch.ones(2, 40))  # all 40 CelebA attributes: refused, not silently misread
    with pytest.raises(ValueError, match="conditioned on 3 label values"):
        G(z, None)
    # an unconditional G takes no label input, so labels cannot change its output
    cfg_u, G_u, _ = build("variant=dcgan")
    G_u.eval()
    z = torch.randn(2, cfg_u.model.z_dim)
    torch.testing.assert_close(G_u(z, torch.eye(2)), G_u(z, None), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
@pytest.mark.parametrize("conditioning", ["concat", "projection"])
@pytest.mark.parametrize("labels", ["classes", "attributes"])
def test_conditional_d_output_changes_with_its_own_label_only(arch, conditioning, labels):
    extra = [f"data.attributes={ATTRS}"] if labels == "attributes" else []
    # a per-sample critic, so sample i's output may depend on sample i's label alone
    cfg, _, D = build("variant=cgan", f"model.arch={arch}", f"model.conditioning={conditioning}",
                      "model.d_norm=layer", *extra)
    if conditioning == "projection":  # the projection head starts at zero bias; give it weights to use
        with torch.no_grad():
            for p in D.proj.parameters():
                p.normal_(0, 1)
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    y = labels_for(cfg, 4)
    base = D(x, y)
    y2 = y.clone()
    y2[1] = torch.roll(y2[1], 1) if labels == "classes" else 1 - y2[1]
    out = D(x, y2)
    assert (out[1] - base[1]).abs() > 1e-6
    torch.testing.assert_close(out[[0, 2, 3]], base[[0, 2, 3]], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch,trunk", [("mlp", "features"), ("dcgan", "features"), ("resnet", "blocks")])
def test_conditional_d_keeps_the_state_dict_layout_of_existing_checkpoints(arch, trunk):
    # checkpoints and exported safetensors of earlier runs name D's weights so: trunk, head, proj
    _, _, D = build("variant=cgan", f"model.arch={arch}", "model.conditioning=projection", "model.d_norm=layer")
    tops = list(dict.fromkeys(k.split(".")[0] for k in D.state_dict()))
    assert tops == [trunk, "head", "proj"]
    assert [k for k in D.state_dict() if k.startswith("proj.")] == ["proj.embed.weight", "proj.embed.bias"]
    _, _, D_u = build("variant=dcgan", f"model.arch={arch}", "model.d_norm=layer")
    assert D_u.proj is None and list(dict.fromkeys(k.split(".")[0] for k in D_u.state_dict())) == [trunk, "head"]


class _TinyG(ConditionalGenerator):
    def __init__(self, z_dim, label_dim):
        super().__init__(z_dim, label_dim)
        self.fc = nn.Linear(self.input_dim, 6)

    def forward(self, z, y=None):
        return self.fc(self.latent(z, y))


class _TinyD(ConditionalDiscriminator):
    """A new family, conditioned through the base class alone."""

    def __init__(self, label_dim, conditioning):
        super().__init__(label_dim, conditioning)
        self.features = nn.Conv2d(2 + self.label_inputs, 5, 3, 1, 1)
        self.head = nn.Linear(5, 1)
        self.add_projection(5, sn=False)

    def forward(self, x, y=None):
        x, y = self.labelled(x, y)
        h = self.features(x)
        return self.heads(self.head(h.sum((2, 3))).squeeze(1), h, y)


def test_a_new_family_gets_conditioning_from_the_base_classes():
    torch.manual_seed(0)
    G = _TinyG(4, 3)
    assert G.fc.in_features == 7
    z, y = torch.randn(2, 4), torch.eye(3)[:2]
    torch.testing.assert_close(G(z, y), G.fc(torch.cat([z, y], 1)), rtol=0, atol=0)
    x = torch.randn(2, 2, 4, 4)
    concat = _TinyD(3, "concat")
    assert concat.features.in_channels == 5 and concat.proj is None
    maps = y[:, :, None, None].expand(-1, -1, 4, 4)
    torch.testing.assert_close(concat(x, y), concat.head(concat.features(torch.cat([x, maps], 1)).sum((2, 3))).squeeze(1))
    proj = _TinyD(3, "projection")
    assert proj.features.in_channels == 2
    h = proj.features(x).sum((2, 3))
    torch.testing.assert_close(proj(x, y), proj.head(h).squeeze(1) + (proj.proj.embed(y) * h).sum(1))
    none = _TinyD(3, "none")
    torch.testing.assert_close(none(x, y), none(x, None), rtol=0, atol=0)  # an unconditional D ignores labels
    for D in (concat, proj):
        with pytest.raises(ValueError, match="D is conditioned on 3 label values"):
            D(x, None)
    with pytest.raises(ValueError, match="conditioning must be one of"):
        _TinyD(3, "concatenate")


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_spectral_norm_bounds_every_d_layer(arch):
    _, _, D = build("variant=dcgan", f"model.arch={arch}", "model.spectral_norm=true", "model.d_norm=none",
                    "model.conditioning=projection")
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    D.train()
    with torch.no_grad():
        y = nn.functional.one_hot(torch.arange(2), 10).float()
        for _ in range(30):  # one power iteration per forward
            D(torch.randn(2, 3, 32, 32), y)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05)


def test_dcgan_init_is_normal_0_02():
    _, G, D = build("variant=dcgan", "model.g_width=64", "model.d_width=64")
    w = torch.cat([m.weight.flatten() for m in list(G.modules()) + list(D.modules())
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert w.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert w.std().item() == pytest.approx(0.02, rel=0.02)


def test_unsupported_resolutions_are_refused():
    from gandist.nets.dcgan import DCGANGenerator

    with pytest.raises(ValueError, match="DCGAN supports"):
        DCGANGenerator(16, 3, 48)
    with pytest.raises(ValueError, match="ResNet nets support 32 or 64"):
        ResNetGenerator(16, 3, 128)
