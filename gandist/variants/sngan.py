from gandist.variants import Variant
from gandist.variants.parts import HINGE, PROJECTION_LABELS, SPECTRAL_D, compose

VARIANT = Variant(
    name="sngan",
    summary="DCGAN networks with spectral norm and no BatchNorm in D, hinge loss, and labels through a projection "
            "D (G takes them concatenated to z); model.conditioning=none for unlabelled data",
    source="Miyato et al. 2018 (spectral normalisation, hinge loss; Adam 2e-4, beta1 0.5, n_dis 1, their setting C); "
           "projection discriminator Miyato & Koyama 2018",
    preset=compose(SPECTRAL_D, HINGE, PROJECTION_LABELS),
)
