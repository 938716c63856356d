from gandist.variants import Variant
from gandist.variants.parts import RMSPROP_WGAN, WASSERSTEIN_CLIP, compose

VARIANT = Variant(
    name="wgan",
    summary="critic without sigmoid, loss E[D(fake)] - E[D(real)], every critic parameter clipped to "
            "[-0.01, 0.01] after each critic step, n_critic 5",
    source="Arjovsky et al. 2017 (Algorithm 1: RMSprop lr 5e-5, c = 0.01, n_critic = 5; DCGAN networks)",
    preset=compose(WASSERSTEIN_CLIP, RMSPROP_WGAN),
)
