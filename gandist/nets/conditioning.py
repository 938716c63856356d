"""Label conditioning, written once for every family: G concatenates labels to its noise (Mirza & Osindero
2014); D takes them with its input (`concat`) or projects them onto its features (`projection`, Miyato &
Koyama 2018).  A family gets both by deriving from ConditionalGenerator and ConditionalDiscriminator.

InfoGAN's categorical code (Chen et al. 2016) lives here too, as the unsupervised counterpart of a class label:
G reads its first `info_codes` noise values as a one-hot code (info_code: their argmax, so the code is uniform
and comes from the same world-size invariant noise draw as z), and D gets a head that predicts the code.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from gandist.nets.layers import maybe_sn

CONDITIONINGS = ("none", "concat", "projection")


def check_labels(y: torch.Tensor | None, label_dim: int, who: str):
    if y is None or y.dim() != 2 or y.shape[1] != label_dim:
        got = None if y is None else tuple(y.shape)
        raise ValueError(f"{who} is conditioned on {label_dim} label values per sample, got labels of shape {got}")


def info_code(z: torch.Tensor, k: int) -> torch.Tensor:
    """The categorical code (N,) carried by noise z: the argmax of its first k values (uniform over k classes)."""
    return z[:, :k].argmax(1)


def label_maps(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Labels (N, L) broadcast to constant feature maps (N, L, H, W) for concatenation with images."""
    return y[:, :, None, None].expand(-1, -1, h, w)


class Projection(nn.Module):
    """Projection head: logit += <embed(y), features>.  The bias matters for 0/1 attributes: b + sum_k y_k w_k
    is one two-class projection per attribute, so an absent attribute is evidence too, not silence."""

    def __init__(self, label_dim: int, features: int, sn: bool):
        super().__init__()
        self.label_dim = label_dim
        self.embed = maybe_sn(nn.Linear(label_dim, features), sn)

    def forward(self, feats: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.embed(y) * feats).sum(1)


class ConditionalGenerator(nn.Module):
    """G's side of conditioning.  A subclass sizes its first layer for `self.input_dim` inputs
    (z_dim, plus label_dim when conditional) and feeds it `self.latent(z, y)`."""

    def __init__(self, z_dim: int, label_dim: int):
        super().__init__()
        self.z_dim, self.label_dim = z_dim, label_dim
        self.input_dim = z_dim + label_dim
        self.info_codes = 0  # set by nets.build_generator: no weights of its own, so the families never see it

    def latent(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The noise (its first info_codes values made a one-hot code), followed by the label vector when G is
        conditional."""
        if self.info_codes:
            k = self.info_codes
            z = torch.cat([nn.functional.one_hot(info_code(z, k), k).to(z.dtype), z[:, k:]], 1)
        if not self.label_dim:
            return z
        check_labels(y, self.label_dim, "G")
        return torch.cat([z, y.to(z.dtype)], 1)


class ConditionalDiscriminator(nn.Module):
    """D's side of conditioning.  A subclass adds `self.label_inputs` to its input layer, calls
    `self.add_projection(features, sn)` last in __init__ (so `proj.*` stays last in the parameter order and the
    other layers' initialisation is unchanged), and in forward starts with `self.labelled(x, y)` and ends with
    `self.heads`.  D's output is one logit per sample, or (N, 1 + info_codes) with InfoGAN's head
    (add_info_head): the logit, then the code's logits (gandist.objective splits them)."""

    def __init__(self, label_dim: int, conditioning: str):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, not {conditioning!r}")
        self.label_dim, self.conditioning = label_dim, conditioning
        self.label_inputs = label_dim if conditioning == "concat" else 0
        self.proj = self.info = None
        self.features_dim = 0

    def add_projection(self, features: int, sn: bool):
        self.features_dim = features
        if self.conditioning == "projection":
            self.proj = Projection(self.label_dim, features, sn)

    def add_info_head(self, codes: int, sn: bool):
        """InfoGAN's Q head, on the (sum-pooled) features the projection sees: added by nets.build once the
        family's layers are built and initialised, so `info.*` is last in the parameter order."""
        self.info = maybe_sn(nn.Linear(self.features_dim, codes), sn)

    def labelled(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's input with the labels appended (`concat`), and the labels in its dtype (None: unconditional)."""
        if self.conditioning == "none":
            return x, None
        check_labels(y, self.label_dim, "D")
        y = y.to(x.dtype)
        if self.conditioning == "concat":
            x = torch.cat([x, y if x.dim() == 2 else label_maps(y, x.shape[2], x.shape[3])], 1)
        return x, y

    def heads(self, out: torch.Tensor, feats: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Logits plus the projection term, and the code's logits beside them with an info head; feature maps
        are sum-pooled over space, as in the projection paper."""
        if self.proj is None and self.info is None:
            return out
        if feats.dim() == 4:
            feats = feats.sum((2, 3))
        if self.proj is not None:
            out = out + self.proj(feats, y)
        return out if self.info is None else torch.cat([out[:, None], self.info(feats).to(out.dtype)], 1)
