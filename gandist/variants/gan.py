from gandist.variants import Variant

VARIANT = Variant(
    name="gan",
    summary="MLP G and D, non-saturating BCE loss, k = 1; annealed instance noise keeps D from winning early",
    source="Goodfellow et al. 2014; instance noise: Sønderby et al. 2017",
    preset={
        "model.arch": "mlp", "model.g_norm": "none", "model.d_norm": "none",
        "loss.adversarial": "bce", "loss.regularizer": "none", "loss.instance_noise": 0.1,
        "optim.name": "adam", "optim.lr_g": 2e-4, "optim.lr_d": 2e-4, "optim.beta1": 0.5, "optim.beta2": 0.999,
        "optim.n_critic": 1, "optim.g_steps": 1,
    },
)
