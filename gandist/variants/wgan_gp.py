from gandist.variants import Variant
from gandist.variants.parts import ADAM_WGAN_GP, CRITIC_LAYER_NORM, WASSERSTEIN_GP, compose

VARIANT = Variant(
    name="wgan_gp",
    summary="Wasserstein loss with a gradient penalty (lambda 10) on per-sample interpolates; critic with "
            "layer norm instead of BatchNorm; model.arch=resnet gives the paper's CIFAR-10 ResNet",
    source="Gulrajani et al. 2017 (Algorithm 1: lambda 10, n_critic 5, Adam lr 1e-4, betas (0, 0.9); "
           "layer norm in the critic)",
    preset=compose(CRITIC_LAYER_NORM, WASSERSTEIN_GP, ADAM_WGAN_GP),
)
