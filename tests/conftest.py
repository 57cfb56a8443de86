"""Session-wide test environment: CPU DeepSpeed, offline Hugging Face, one thread per rank.

Set here (not only in the Makefile) so a bare `pytest` from the venv behaves like `make test`.
"""
import os
import sys

for _k, _v in {
    # DeepSpeed JIT-builds a comm op once; a per-venv cache stops two venvs on one machine from
    # rebuilding it in turn (its build flags name the venv's include paths).
    "TORCH_EXTENSIONS_DIR": os.path.join(sys.prefix, "torch_extensions"),
    "DS_ACCELERATOR": "cpu",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test fails, with its reason: CI must run everything (a real SLURM
    cluster, diffusers parity, ...), and a machine that cannot must not look green. Elsewhere a
    skip stays a skip, and `-ra` (pyproject's addopts) prints its reason in the summary."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"
