"""The parts a variant composes, each a dict of dotted config keys saying where it departs from the
defaults in gandist/config/schema.py (DCGAN's networks, BCE loss, no regulariser, Adam 2e-4 with betas
(0.5, 0.999), one D step per G step): every default is written there once.  A variant's preset is the
merge of its parts, later parts winning."""
from __future__ import annotations


def compose(*parts: dict) -> dict:
    out: dict = {}
    for p in parts:
        out.update(p)
    return out


# -- networks ---------------------------------------------------------------------------------
MLP = {"model.arch": "mlp", "model.g_norm": "none", "model.d_norm": "none"}
# A critic trained with a gradient penalty must treat every sample alone (the penalty is a
# per-sample gradient norm), so BatchNorm is out; Gulrajani et al. use layer norm or nothing.
CRITIC_LAYER_NORM = {"model.d_norm": "layer"}
# Miyato et al. 2018: each D layer's spectral norm held at 1 bounds D's Lipschitz constant without BatchNorm.
SPECTRAL_D = {"model.spectral_norm": True, "model.d_norm": "none"}

# -- adversarial loss and regulariser of D ------------------------------------------------------
WASSERSTEIN_CLIP = {"loss.adversarial": "wasserstein", "loss.regularizer": "clip"}
WASSERSTEIN_GP = {"loss.adversarial": "wasserstein", "loss.regularizer": "gp"}
# Sønderby et al. 2017: Gaussian noise on everything D sees, annealed to 0 over the run.
INSTANCE_NOISE = {"loss.instance_noise": 0.1}
HINGE = {"loss.adversarial": "hinge"}

# -- conditioning ------------------------------------------------------------------------------
CONCAT_LABELS = {"model.conditioning": "concat"}
PROJECTION_LABELS = {"model.conditioning": "projection"}  # D: an inner product of its features with the label

# -- optimizers --------------------------------------------------------------------------------
RMSPROP_WGAN = {"optim.name": "rmsprop", "optim.lr_g": 5e-5, "optim.lr_d": 5e-5, "optim.n_critic": 5}
ADAM_WGAN_GP = {"optim.lr_g": 1e-4, "optim.lr_d": 1e-4, "optim.beta1": 0.0, "optim.beta2": 0.9, "optim.n_critic": 5}
