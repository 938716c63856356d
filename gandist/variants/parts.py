"""The parts a variant composes, each a dict of dotted config keys.  A variant's preset is the
merge of its parts, later parts winning; every key is documented in gandist/config.py."""
from __future__ import annotations


def compose(*parts: dict) -> dict:
    out: dict = {}
    for p in parts:
        out.update(p)
    return out


# -- networks ---------------------------------------------------------------------------------
MLP = {"model.arch": "mlp", "model.g_norm": "none", "model.d_norm": "none", "model.spectral_norm": False}
DCGAN = {"model.arch": "dcgan", "model.g_norm": "batch", "model.d_norm": "batch", "model.spectral_norm": False}
# A critic trained with a gradient penalty must treat every sample alone (the penalty is a
# per-sample gradient norm), so BatchNorm is out; Gulrajani et al. use layer norm or nothing.
CRITIC_LAYER_NORM = {"model.d_norm": "layer"}

# -- adversarial loss and regulariser of D ------------------------------------------------------
BCE = {"loss.adversarial": "bce", "loss.regularizer": "none"}
WASSERSTEIN_CLIP = {"loss.adversarial": "wasserstein", "loss.regularizer": "clip", "loss.clip": 0.01}
WASSERSTEIN_GP = {"loss.adversarial": "wasserstein", "loss.regularizer": "gp", "loss.gp_weight": 10.0}
# Sønderby et al. 2017: Gaussian noise on everything D sees, annealed to 0 over the run.
INSTANCE_NOISE = {"loss.instance_noise": 0.1, "loss.instance_noise_steps": 0}

# -- conditioning ------------------------------------------------------------------------------
CONCAT_LABELS = {"model.conditioning": "concat"}

# -- optimizers --------------------------------------------------------------------------------
ADAM_DCGAN = {"optim.name": "adam", "optim.lr_g": 2e-4, "optim.lr_d": 2e-4, "optim.beta1": 0.5,
              "optim.beta2": 0.999, "optim.n_critic": 1, "optim.g_steps": 1}
RMSPROP_WGAN = {"optim.name": "rmsprop", "optim.lr_g": 5e-5, "optim.lr_d": 5e-5, "optim.n_critic": 5,
                "optim.g_steps": 1}
ADAM_WGAN_GP = {"optim.name": "adam", "optim.lr_g": 1e-4, "optim.lr_d": 1e-4, "optim.beta1": 0.0,
                "optim.beta2": 0.9, "optim.n_critic": 5, "optim.g_steps": 1}
