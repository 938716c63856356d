from gandist.variants import Variant

VARIANT = Variant(
    name="cgan",
    summary="labels (one-hot classes or binary attributes) concatenated to G's noise and to D's input maps",
    source="Mirza & Osindero 2014, on the DCGAN networks and optimizer of Radford et al. 2016",
    preset={
        "model.arch": "dcgan", "model.g_norm": "batch", "model.d_norm": "batch", "model.conditioning": "concat",
        "loss.adversarial": "bce", "loss.regularizer": "none",
        "optim.name": "adam", "optim.lr_g": 2e-4, "optim.lr_d": 2e-4, "optim.beta1": 0.5, "optim.beta2": 0.999,
        "optim.n_critic": 1,
    },
)
