"""`mmdit-scale config`: print a recipe's resolved config as YAML.

The output is exactly what a run would use and saves beside its checkpoints; redirect it to a
file and that file is a recipe that loads back to the same config.
"""
from __future__ import annotations

import argparse
import sys

HELP = "Print a recipe's resolved config (defaults < recipe < overrides) as YAML."
DESCRIPTION = (
    "Resolve RECIPE (dataclass defaults, then its `base:` chain, then the recipe, then the "
    "key=value overrides in order) and print the validated config as YAML. "
    "Exits 2 with a one-line message on an unknown key or a bad value."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", metavar="RECIPE", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="dotted overrides applied last, e.g. optim.lr=2e-4 train.steps=100")


def run(args: argparse.Namespace) -> int:
    # Imported here so that building the CLI parser (`mmdit-scale --help`) stays instant.
    from mmdit_scale.config import ConfigError, load_config, to_yaml

    try:
        cfg = load_config(args.recipe, args.overrides)
    except ConfigError as err:
        print(f"mmdit-scale config: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(to_yaml(cfg))
    return 0
