"""gandist: distributed GAN training on Accelerate, from one CPU to many GPU nodes.

    G = gandist.load_generator("runs/x/final")     # a trained generator, from final/generator.json
"""
from importlib import import_module

__version__ = "0.1.0"

# Loaded on first use (PEP 562): every `from gandist.x import y` runs this file first, and importing
# gandist.trained here would load the nets into every process and import this package half made.
_LAZY = {"load_generator": "gandist.trained", "GeneratorError": "gandist.trained"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gandist' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
