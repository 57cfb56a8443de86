"""The run-config loader: merge order, base chains, overrides, errors a user sees, round trips."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmdit_scale.config import ConfigError, OptimConfig, RunConfig, load_config, to_yaml
from mmdit_scale.run.layout import write_config
from mmdit_scale.config.validate import schema_keys
from mmdit_scale.flow.names import FORMULATIONS

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """grand <- parent <- sub/child.yaml; the cwd is elsewhere, so `base:` must be file-relative."""
    write(tmp_path / "grand.yaml", "optim: {lr: 1.0, eps: 1.0e-6}\ntrain: {steps: 10, seed: 5}\n")
    write(tmp_path / "parent.yaml", "base: grand.yaml\noptim: {lr: 2.0}\ntrain: {steps: 20}\n")
    child = write(tmp_path / "sub" / "child.yaml", "base: ../parent.yaml\noptim: {lr: 3.0}\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return child


def test_merge_order_defaults_then_base_chain_then_recipe_then_overrides(chain: Path) -> None:
    cfg = load_config(chain)
    assert cfg.optim.lr == 3.0                      # the recipe beats its bases
    assert cfg.train.steps == 20                    # the parent beats the grandparent
    assert cfg.optim.eps == 1e-6 and cfg.train.seed == 5   # the root of the chain beats defaults
    assert cfg.optim.warmup_steps == OptimConfig().warmup_steps == 1000   # untouched: the default
    assert load_config(chain, ["optim.lr=4.0"]).optim.lr == 4.0
    assert load_config(chain, ["optim.lr=4.0", "optim.lr=5e-4"]).optim.lr == 5e-4   # last one wins


def test_lists_replace_and_mappings_merge(tmp_path: Path) -> None:
    base = write(tmp_path / "b.yaml", "model: {depth: 4, dual_attention_layers: [0, 1, 2]}\n")
    child = write(tmp_path / "c.yaml", f"base: {base.name}\nmodel: {{dual_attention_layers: [3]}}\n")
    model = load_config(child).model
    assert model.depth == 4 and model.dual_attention_layers == (3,)
    assert model.hidden_size == 256 and model.num_heads == 4   # None fields follow depth


def test_unknown_key_in_recipe_names_file_and_nearest_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "x.yaml", "optim:\n  lrr: 2.0e-4\n")
    with pytest.raises(ConfigError) as err:
        load_config("x.yaml")
    assert str(err.value) == "unknown key 'optim.lrr' in x.yaml; did you mean 'optim.lr'?"


def test_unknown_key_in_a_base_names_the_base(chain: Path) -> None:
    grand = chain.parent.parent / "grand.yaml"
    grand.write_text(grand.read_text() + "parallel: {zero_stag: 3}\n")
    with pytest.raises(ConfigError, match=r"'parallel.zero_stag' in .*grand\.yaml; did you mean 'parallel.zero_stage'"):
        load_config(chain)


@pytest.mark.parametrize("override, unknown, nearest", [
    ("optim.lrr=1e-4", "optim.lrr", "'optim.lr'"),
    ("train.lr=1e-4", "train.lr", "'optim.lr'"),            # right name, wrong section
    ("optimizer.lr=1e-4", "optimizer", "'optim'"),
    ("model.qknorm=true", "model.qknorm", "'model.qk_norm'"),
    ("every=5", "every", "'checkpoint.every' or 'logging.every' or 'eval.every'"),
])
def test_unknown_key_in_override_names_nearest_key(override: str, unknown: str, nearest: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "recipes" / "tiny.yaml", [override])
    assert str(err.value) == f"unknown key '{unknown}' in override '{override}'; did you mean {nearest}?"


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=abc", "expected float, got str 'abc'"),
    ("train.steps=true", "expected int, got bool True"),
    ("train.steps=2.5", "expected int, got float 2.5"),
    ("model.qk_norm=1", "expected bool, got int 1"),
    ("data.train=", "expected str or a list of a mapping (path, weight, manifest), got null"),
    ("optim.betas=[0.9]", "expected a list (float, float), got list [0.9]"),
    ("optim=3", "expected a section (mapping of keys), got int 3"),
])
def test_bad_type_names_key_expected_type_and_value(override: str, expected: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "recipes" / "tiny.yaml", [override])
    assert str(err.value) == f"bad value for '{key}' in override '{override}': {expected}"


def test_bad_list_element_names_its_index(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "x.yaml", "model: {depth: 4, dual_attention_layers: [0, one]}\n")
    with pytest.raises(ConfigError) as err:
        load_config("x.yaml")
    assert str(err.value) == "bad value for 'model.dual_attention_layers[1]' in x.yaml: expected int, got str 'one'"


@pytest.mark.parametrize("override, choices", [
    ("parallel.zero_stage=4", "one of 0, 1, 2, 3, got int 4"),
    ("parallel.zero_stage=true", "one of 0, 1, 2, 3, got bool True"),
    ("parallel.precision=fp16", "one of 'bf16', 'fp32', got str 'fp16'"),
    ("flow.formulation=ddpm", "one of " + ", ".join(repr(f) for f in FORMULATIONS) + ", got str 'ddpm'"),
])
def test_bad_choice_lists_the_allowed_values(override: str, choices: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "recipes" / "tiny.yaml", [override])
    assert str(err.value).endswith(f"in override '{override}': expected {choices}")


def test_accepted_coercions_are_only_the_lossless_ones() -> None:
    cfg = load_config(REPO / "recipes" / "tiny.yaml", ["optim.lr=1", "parallel.zero_stage=3",
                                                       "model.dual_attention_layers=[1,0]"])
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float
    assert cfg.parallel.zero_stage == 3
    assert cfg.model.dual_attention_layers == (1, 0)


def test_cross_field_errors_name_the_section_and_sources(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "x.yaml", "model: {depth: 2, hidden_size: 64}\ntrain: {global_batch: 8}\n")
    with pytest.raises(ConfigError, match=r"^invalid 'model' section \(from x.yaml, override 'model.num_heads=3'\): .*"
                                          r"not divisible by num_heads 3"):
        load_config("x.yaml", ["model.num_heads=3"])
    with pytest.raises(ConfigError, match=r"train.micro_batch \(16\) exceeds train.global_batch \(8\)"):
        load_config("x.yaml", ["train.micro_batch=16"])


@pytest.mark.parametrize("names", [("a.yaml", "b.yaml"), ("a.yaml",)])
def test_base_cycle_is_an_error(tmp_path: Path, monkeypatch, names: tuple[str, ...]) -> None:
    monkeypatch.chdir(tmp_path)
    for name, parent in zip(names, names[1:] + names[:1]):
        write(tmp_path / name, f"base: {parent}\ntrain: {{steps: 1}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(names[0])
    assert str(err.value) == "base cycle: " + " -> ".join(names + names[:1])


def test_missing_recipe_and_base(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^recipe nope.yaml not found$"):
        load_config("nope.yaml")
    write(tmp_path / "x.yaml", "base: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"^recipe gone.yaml not found \(named as base in x.yaml\)$"):
        load_config("x.yaml")


def test_malformed_inputs_raise_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "list.yaml", "- 1\n")
    write(tmp_path / "broken.yaml", "optim: {lr: [1\n")
    write(tmp_path / "must.yaml", "data:\n  train: ???\n")
    with pytest.raises(ConfigError, match="list.yaml must be a mapping"):
        load_config("list.yaml")
    with pytest.raises(ConfigError, match="cannot parse broken.yaml"):
        load_config("broken.yaml")
    with pytest.raises(ConfigError, match=r"missing value for 'data.train': it is '\?\?\?' in must.yaml"):
        load_config("must.yaml")
    assert load_config("must.yaml", ["data.train=/shards"]).data.train == "/shards"
    with pytest.raises(ConfigError, match=r"override 'optim.lr' is not of the form key=value"):
        load_config("must.yaml", ["optim.lr"])


def test_save_then_load_gives_an_equal_object(tmp_path: Path) -> None:
    cfg = load_config(REPO / "recipes" / "tiny.yaml",
                      ["optim.eps=1e-15", "optim.lr=3e-4", "model.dual_attention_layers=[0,1]",
                       "data.train=/data/shards-1e3", "flow.shift=3"])
    path = tmp_path / "run" / "config.yaml"
    write_config(cfg, path)
    back = load_config(path)
    assert back == cfg
    assert back.optim.eps == 1e-15 and back.data.train == "/data/shards-1e3"
    assert isinstance(back.model.dual_attention_layers, tuple) and isinstance(back.optim.betas, tuple)
    assert to_yaml(back) == path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]   # no temp file left


def test_defaults_alone_form_a_valid_config(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "empty.yaml", "")) == RunConfig()


def test_importing_the_config_and_loading_a_recipe_do_not_import_torch() -> None:
    code = ("import sys, mmdit_scale.config as c; c.load_config('recipes/ladder/d24.yaml'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_docs_list_every_key_exactly() -> None:
    leaves = {k for k in schema_keys(RunConfig) if "." in k}
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_.]+)` \|", (REPO / "docs" / "config.md").read_text(), re.M))
    assert documented == leaves
