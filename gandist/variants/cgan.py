from gandist.variants import Variant
from gandist.variants.parts import CONCAT_LABELS, compose

VARIANT = Variant(
    name="cgan",
    summary="labels (one-hot classes or 0/1 attributes) concatenated to G's noise and to D's input maps; "
            "model.conditioning=projection for a projection D; combines with any loss (e.g. wasserstein + gp)",
    source="Mirza & Osindero 2014, on the DCGAN networks and optimizer of Radford et al. 2016; projection: "
           "Miyato & Koyama 2018",
    preset=compose(CONCAT_LABELS),
)
