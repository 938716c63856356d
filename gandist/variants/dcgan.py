from gandist.variants import Variant

VARIANT = Variant(
    name="dcgan",
    summary="(transposed) strided convolutions, BatchNorm, ReLU in G, LeakyReLU(0.2) in D, BCE loss",
    source="Radford et al. 2016 (Adam lr 2e-4, beta1 0.5, N(0, 0.02) init)",
    preset={},  # the defaults of gandist/config/schema.py are DCGAN's
)
