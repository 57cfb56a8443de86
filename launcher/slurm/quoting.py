"""Quoting for the two languages of a batch script: bash, and sbatch's `#SBATCH` lines.

Bash values go through `shlex.quote`, which is safe for any string. `#SBATCH` lines are parsed by
sbatch itself, not by bash: it understands double and single quotes (adjacent quoted parts join,
as in a shell) and treats a backslash inside quotes as an escape, so `directive` quotes each run
of characters with the quote it does not contain and refuses backslashes. No value may contain a
newline or other control character: it could end a line early in either language.
"""
from __future__ import annotations

import re
import shlex

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLAIN = re.compile(r"[A-Za-z0-9_.,:=@%+/\-\[\]]+")
"""Directive values made only of these characters need no quotes."""


class SubmitError(ValueError):
    """A value or option that cannot go into a batch script; the message says which and why."""


def check_text(what: str, value: str) -> str:
    if _CONTROL.search(value):
        raise SubmitError(f"{what} contains a newline or control character: {value!r}")
    return value


def shell(value: str) -> str:
    """`value` as one bash word."""
    return shlex.quote(check_text("a value", str(value)))


def shell_words(values: list[str]) -> str:
    return " ".join(shell(v) for v in values)


def directive(value: str) -> str:
    """`value` as one argument of an `#SBATCH --option=VALUE` line."""
    check_text("an sbatch option", value)
    if "\\" in value:
        raise SubmitError(f"sbatch cannot read a backslash in its options: {value!r}")
    if _PLAIN.fullmatch(value):
        return value
    # Runs without a double quote go in double quotes, double quotes go in single quotes.
    parts = re.findall(r'[^"]+|"+', value)
    return "".join(f"'{p}'" if p.startswith('"') else f'"{p}"' for p in parts)


def filename_pattern(path: str) -> str:
    """A literal path for sbatch's --output, where `%` starts a replacement symbol."""
    return path.replace("%", "%%")


_NAME = re.compile(r"[A-Za-z0-9_.,-]+")
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.,:&|!*()\[\]-]+")
_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|\d+-\d+|UNLIMITED|INFINITE", re.IGNORECASE)
_MEM = re.compile(r"\d+[KMGT]?")
_JOB_ID = re.compile(r"\d+(_\d+)?(:\d+(_\d+)?)*")


def check_option(flag: str, value: str) -> str:
    """Validate a user-given sbatch option value; SLURM's own syntax, nothing a shell could read."""
    pattern, example = {
        "--partition": (_NAME, "gpu or gpu,gpu-long"),
        "--account": (_NAME, "proj123"),
        "--qos": (_NAME, "normal"),
        "--constraint": (_CONSTRAINT, "a100&ib"),
        "--time": (_TIME, "HH:MM:SS or D-HH:MM:SS"),
        "--mem": (_MEM, "500G or 0 (all of the node)"),
        "--after": (_JOB_ID, "12345 or 12345:12346"),
    }[flag]
    if not pattern.fullmatch(value):
        raise SubmitError(f"{flag} {value!r} is not a valid SLURM value (e.g. {example})")
    return value


def job_name(text: str) -> str:
    """A job name squeue shows cleanly: safe characters only, at most 64."""
    return (re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "job")[:64]
