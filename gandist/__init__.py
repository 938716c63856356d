"""gandist: distributed GAN training on Accelerate, from one CPU to many GPU nodes."""
__version__ = "0.1.0"
