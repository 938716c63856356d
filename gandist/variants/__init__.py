"""A variant is data, not a subclass: a preset of config values that composes the parts in
`parts.py` (networks, adversarial loss, regulariser, conditioning, optimizer).  Adding one is a
small file here that defines VARIANT, plus a config; it is found without being listed anywhere."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    summary: str
    source: str  # where the defaults come from
    preset: dict  # dotted config keys -> values, applied beneath the user's file and overrides


def _collect() -> dict[str, Variant]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        v = getattr(module, "VARIANT", None)
        if v is None:
            continue  # a helper module such as parts.py
        if v.name in found:
            raise RuntimeError(f"two variant files define the variant {v.name!r}")
        found[v.name] = v
    return found


VARIANTS = _collect()
