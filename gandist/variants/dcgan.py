from gandist.variants import Variant

VARIANT = Variant(
    name="dcgan",
    summary="(transposed) strided convolutions, BatchNorm, ReLU in G, LeakyReLU(0.2) in D, BCE loss",
    source="Radford et al. 2016",
    preset={
        "model.arch": "dcgan", "model.g_norm": "batch", "model.d_norm": "batch",
        "loss.adversarial": "bce", "loss.regularizer": "none",
        "optim.name": "adam", "optim.lr_g": 2e-4, "optim.lr_d": 2e-4, "optim.beta1": 0.5, "optim.beta2": 0.999,
        "optim.n_critic": 1,
    },
)
