"""A built wheel, installed outside the repo, finds its recipes as package data.

Builds the wheel from the repo root (offline: --no-build-isolation, the venv's setuptools), installs
it with `pip install --target`, and runs the CLI from a directory outside the repo with only that
install on PYTHONPATH: `config tiny`, `config recipes/ladder/d24.yaml` (whose `base:` chain must
resolve inside the package) and an unknown name.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from mmdit_scale.config import load_config, to_yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """TMP with TMP/site (the installed wheel) and TMP/elsewhere (an empty working directory)."""
    tmp = tmp_path_factory.mktemp("installed")
    leftovers = [p for p in (REPO / "build", REPO / "mmdit_scale.egg-info") if not p.exists()]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(tmp / "dist"), "."], cwd=REPO, env=env, check=True, capture_output=True,
                       text=True, timeout=TIMEOUT)
    except subprocess.CalledProcessError as err:
        pytest.fail(f"pip wheel failed:\n{err.stdout}\n{err.stderr}")
    finally:
        for path in leftovers:                     # build/ (and the egg-info) if this build made them
            shutil.rmtree(path, ignore_errors=True)
    wheel, = (tmp / "dist").glob("mmdit_scale-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {f"mmdit_scale/{p.relative_to(REPO).as_posix()}" for p in (REPO / "recipes").rglob("*.yaml")}
    assert shipped <= set(names), f"recipes missing from the wheel: {sorted(shipped - set(names))}"
    assert not [n for n in names if n.startswith("mmdit_scale/recipes/") and not n.endswith(".yaml")]
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                    str(tmp / "site"), str(wheel)], env=env, check=True, capture_output=True, timeout=TIMEOUT)
    (tmp / "elsewhere").mkdir()
    return tmp


def run(installed: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed / "site")}
    return subprocess.run([sys.executable, *args], cwd=installed / "elsewhere", env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_the_modules_come_from_the_install_not_the_repo(installed: Path) -> None:
    out = run(installed, "-c", "import launcher.cli, mmdit_scale.config.recipes as r, mmdit_scale; "
                               "print(mmdit_scale.__file__); print(launcher.cli.__file__); print(r.RECIPES_DIR)")
    assert out.returncode == 0, out.stderr
    site = (installed / "site").resolve()
    for line in out.stdout.splitlines():
        assert Path(line).resolve().is_relative_to(site), line
    assert not Path(out.stdout.splitlines()[-1]).is_symlink()   # real files in the wheel, not the repo's link


@pytest.mark.parametrize("name, recipe", [("tiny", "tiny.yaml"), ("recipes/ladder/d24.yaml", "ladder/d24.yaml"),
                                          ("stages/finetune_512", "stages/finetune_512.yaml"),
                                          ("demo", "demo.yaml")])
def test_config_finds_a_packaged_recipe_outside_the_repo(installed: Path, name: str, recipe: str) -> None:
    out = run(installed, "-m", "launcher.cli", "config", name)
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    chain = REPO / "recipes" / recipe
    assert printed["model"]["depth"] == load_config(chain).model.depth
    assert out.stdout == to_yaml(load_config(chain))      # the whole base chain, resolved as in the repo


def test_the_installed_console_script_runs_config_tiny(installed: Path) -> None:
    script = installed / "site" / "bin" / "mmdit-scale"
    out = subprocess.run([str(script), "config", "tiny", "optim.lr=3e-4"], cwd=installed / "elsewhere",
                         env={**os.environ, "PYTHONPATH": str(installed / "site")},
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert out.stdout == to_yaml(load_config(REPO / "recipes" / "tiny.yaml", ["optim.lr=3e-4"]))


def test_an_unknown_recipe_exits_2_naming_the_nearest(installed: Path) -> None:
    out = run(installed, "-m", "launcher.cli", "config", "ladder/d25")
    assert out.returncode == 2
    assert out.stderr.startswith("mmdit-scale config: recipe ladder/d25 not found"), out.stderr
    assert "ladder/d24" in out.stderr and str(installed / "site") in out.stderr


def test_submit_renders_the_packaged_sbatch_template_outside_the_repo(installed: Path) -> None:
    out = run(installed, "-m", "launcher.cli", "submit", "tiny", "--cpu", "--dry-run", "--nodes", "1", "--gpus-per-node", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("#!") and "PREEMPTED=75" in out.stdout
    assert (REPO / "cluster" / "templates" / "train.sbatch").read_text().splitlines()[0] == out.stdout.splitlines()[0]
