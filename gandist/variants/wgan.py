from gandist.variants import Variant

VARIANT = Variant(
    name="wgan",
    summary="critic without sigmoid, loss E[D(fake)] - E[D(real)], weights clipped to [-0.01, 0.01], n_critic 5",
    source="Arjovsky et al. 2017 (Algorithm 1: RMSprop lr 5e-5, c = 0.01, n_critic = 5)",
    preset={
        "model.arch": "dcgan", "model.g_norm": "batch", "model.d_norm": "batch",
        "loss.adversarial": "wasserstein", "loss.regularizer": "clip", "loss.clip": 0.01,
        "optim.name": "rmsprop", "optim.lr_g": 5e-5, "optim.lr_d": 5e-5, "optim.n_critic": 5,
    },
)
