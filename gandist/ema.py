"""Exponential moving average of G's weights, used for samples and evaluation when enabled."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    def __init__(self, G: nn.Module, decay: float, start: int = 0):
        self.decay, self.start = decay, start
        self.model = copy.deepcopy(G).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, G: nn.Module, step: int):
        d = self.decay if step >= self.start else 0.0
        for e, p in zip(self.model.parameters(), G.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), G.buffers()):
            e.copy_(b)  # BatchNorm running statistics follow G directly

    # accelerate's register_for_checkpointing saves anything with these two methods
    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)
