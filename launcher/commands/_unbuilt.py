"""The one answer every subcommand gives until its issue lands: no fake output."""
from __future__ import annotations

import sys


def not_implemented(command: str, issue: str) -> int:
    print(
        f"mmdit-scale {command}: not implemented yet (it arrives with the {issue} issue).",
        file=sys.stderr,
    )
    return 2
