from gandist.variants import Variant
from gandist.variants.parts import INSTANCE_NOISE, MLP, compose

VARIANT = Variant(
    name="gan",
    summary="MLP G and D (Linear + LeakyReLU(0.2)), non-saturating BCE loss, k = 1; annealed instance "
            "noise on D's inputs keeps D from winning early (optim.g_steps > 1 is the other remedy)",
    source="Goodfellow et al. 2014 (k = 1, non-saturating G loss); Adam 2e-4, beta1 0.5 as in Radford et al. "
           "2016, since the paper's SGD + momentum schedule is tuned to maxout nets; instance noise "
           "Sønderby et al. 2017",
    preset=compose(MLP, INSTANCE_NOISE),
)
