"""The run's configuration: one typed tree, the single home of every default (schema.py), loaded in layers
and checked before any work (load.py), its help shown to users by `gandist-train --help-config` (help.py).

    from gandist import config
    cfg = config.load("configs/quickstart.yaml", ["train.steps=100"])
"""
from gandist.cli import ConfigError
from gandist.config.load import check_world_size, dump, load, to_dict
from gandist.config.schema import Config, allowed

__all__ = ["Config", "ConfigError", "allowed", "check_world_size", "dump", "load", "to_dict"]
