"""Label conditioning, written once for every network family.

G is conditioned by concatenating the label vector to its noise (Mirza & Osindero 2014).  D either
takes the labels with its input (`concat`: appended to a flat input, or as constant feature maps to
an image) or adds a projection of them onto its features to its logit (`projection`, Miyato & Koyama
2018).  A family gets both by deriving its G from ConditionalGenerator and its D from
ConditionalDiscriminator; see their docstrings for the few calls each makes.
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


def label_maps(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Labels (N, L) broadcast to constant feature maps (N, L, H, W) for concatenation with images."""
    return y[:, :, None, None].expand(-1, -1, h, w)


class Projection(nn.Module):
    """Projection discriminator head (Miyato & Koyama 2018): logit += <embed(y), features>.

    For one-hot classes embed(y) is the class's embedding (the bias adds only a class-independent
    term, like D's own head).  For 0/1 attribute vectors the bias is what makes it right:
    b + sum_k y_k w_k is exactly one two-class projection per attribute (b collects every
    attribute's "absent" embedding), so an absent attribute is evidence too, not silence.
    """

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

    def latent(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The noise, followed by the label vector when G is conditional."""
        if not self.label_dim:
            return z
        check_labels(y, self.label_dim, "G")
        return torch.cat([z, y.to(z.dtype)], 1)


class ConditionalDiscriminator(nn.Module):
    """D's side of conditioning.  A subclass

    - adds `self.label_inputs` channels (or features, for a flat input) to its input layer,
    - calls `self.add_projection(features, sn)` after building its head, with the width of the
      pooled features the head reads (last, so `proj.*` stays last in the state dict, as it always was),
    - and in forward: `x, y = self.labelled(x, y)` first, `return self.plus_projection(out, h, y)` last.
    """

    def __init__(self, label_dim: int, conditioning: str):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, not {conditioning!r}")
        self.label_dim, self.conditioning = label_dim, conditioning
        self.label_inputs = label_dim if conditioning == "concat" else 0
        self.proj = None

    def add_projection(self, features: int, sn: bool):
        if self.conditioning == "projection":
            self.proj = Projection(self.label_dim, features, sn)

    def labelled(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's input with the labels appended (`concat`), and the labels in the input's dtype
        (None when D is unconditional: whatever labels it is given are ignored)."""
        if self.conditioning == "none":
            return x, None
        check_labels(y, self.label_dim, "D")
        y = y.to(x.dtype)
        if self.conditioning == "concat":
            x = torch.cat([x, y if x.dim() == 2 else label_maps(y, x.shape[2], x.shape[3])], 1)
        return x, y

    def plus_projection(self, out: torch.Tensor, feats: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """D's logits plus the projection term.  Feature maps (N, F, H, W) are sum-pooled over space,
        the paper's global pooling; a family that pools otherwise passes its pooled (N, F) features."""
        if self.proj is None:
            return out
        if feats.dim() == 4:
            feats = feats.sum((2, 3))
        return out + self.proj(feats, y)
