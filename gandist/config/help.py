"""The help of every config key, grouped by section: its type, default, allowed values, range, help
text and the values the variants' presets give it (`gandist-train --help-config [SECTION]`).  Read from
the typed config itself, so it cannot drift from what `config.load` accepts."""
from __future__ import annotations

import dataclasses
import typing

from gandist.cli import ConfigError
from gandist.config.schema import Config, allowed
from gandist.variants import VARIANTS


def _type_name(tp) -> str:
    return " or ".join("null" if a is type(None) else a.__name__ for a in typing.get_args(tp)) or tp.__name__


def help_text(section: str = "") -> str:
    """The help of every key, grouped by section, with the values the variants' presets give it;
    `section` (e.g. "loss") limits it to one section."""
    sections = {f.name: f for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default_factory)}
    if section and section not in sections and section != "variant":
        raise ConfigError(f"--help-config: no section {section!r}; the sections are {', '.join(sections)}")
    presets = {}
    for name, v in VARIANTS.items():
        for k, value in v.preset.items():
            presets.setdefault(k, []).append(f"{name}: {value!r}")
    lines = []

    def describe(key: str, f: dataclasses.Field, tp, default):
        choices = allowed(f)
        lines.append(f"  {key}  ({_type_name(tp)}, default {default!r})")
        if f.metadata.get("help"):
            lines.append(f"      {f.metadata['help']}")
        if choices:
            lines.append(f"      allowed: {', '.join(map(str, choices))}")
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None or hi is not None:
            lines.append(f"      range: {'' if lo is None else lo}..{'' if hi is None else hi}")
        if key in presets:
            lines.append(f"      variant presets: {'; '.join(presets[key])}")

    top = {f.name: f for f in dataclasses.fields(Config)}
    if not section or section == "variant":
        describe("variant", top["variant"], str, Config.variant)
    for name, sf in sections.items():
        if section and section != name:
            continue
        cls = sf.default_factory
        lines.append(f"\n{name}:")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            describe(f"{name}.{f.name}", f, hints[f.name], default)
    return "\n".join(lines).lstrip("\n") + "\n"


def print_help(section: str = "") -> int:
    print("Config keys (set them in the YAML file or as key.sub=value; layers: defaults < variant preset < "
          "file < command line)\n")
    print(help_text(section), end="")
    return 0
