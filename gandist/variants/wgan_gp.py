from gandist.variants import Variant

VARIANT = Variant(
    name="wgan_gp",
    summary="Wasserstein loss with a gradient penalty (lambda 10) on per-sample interpolates; critic without BatchNorm",
    source="Gulrajani et al. 2017 (Algorithm 1: Adam lr 1e-4, betas (0, 0.9), n_critic 5; layer norm in the critic)",
    preset={
        "model.arch": "dcgan", "model.g_norm": "batch", "model.d_norm": "layer",
        "loss.adversarial": "wasserstein", "loss.regularizer": "gp", "loss.gp_weight": 10.0,
        "optim.name": "adam", "optim.lr_g": 1e-4, "optim.lr_d": 1e-4, "optim.beta1": 0.0, "optim.beta2": 0.9,
        "optim.n_critic": 5,
    },
)
