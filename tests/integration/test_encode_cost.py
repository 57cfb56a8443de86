"""benchmarks/encode_cost.py's CPU smoke case: SD3's four encoder architectures (tiny sizes) saved,
loaded by prepare's `EncoderSet.load` and timed through prepare's own calls, every key of the JSON
line present; and the training figure it divides by, read from engine_step's output as the GPU
session writes it."""
from __future__ import annotations

import json
from argparse import Namespace

import pytest


def _module():
    from benchmarks import encode_cost

    return encode_cost


def test_the_smoke_case_times_every_encoder_and_prepares_per_resolution(tmp_path, capsys):
    assert _module().main(["--device", "cpu", "--smoke", "--work", str(tmp_path),
                           "--train-samples-per-s", "32=10.0"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["benchmark"] == "encode_cost" and line["device"] == "cpu" and line["tokens"] == 77
    assert [(r["encoder"], r["pixels"]) for r in line["encoders"]] == [
        ("clip_l", None), ("clip_g", None), ("t5", None), ("vae", 32), ("vae", 64)]
    for r in line["encoders"]:
        assert r["items_per_s"] > 0 and r["params"] > 0 and r["tflops_per_s"] > 0 and 0 < r["vs_matmul"] < 1
    small, large = line["resolutions"]
    for r in (small, large):
        assert r["prepare_samples_per_s"] > 0 and r["components_samples_per_s"] > 0
        assert r["prepare_vs_components"] == pytest.approx(r["prepare_samples_per_s"] / r["components_samples_per_s"])
    assert small["encode_gpu_hours_per_train_gpu_hour"] == pytest.approx(10.0 / small["prepare_samples_per_s"])
    assert large["train_samples_per_s"] is None and large["encode_gpu_hours_per_train_gpu_hour"] is None
    assert line["load_s"] > 0 and "train_samples_per_s / prepare_samples_per_s" in line["formula"]
    assert (tmp_path / "models" / "t5" / "config.json").is_file()  # loaded from disk, as prepare loads


def test_the_training_rate_is_the_fastest_applied_zero_stage_of_each_d24_case(tmp_path):
    rows = [{"case": "d24-256", "zero_stage": 2, "applied": True, "samples_per_s": 120.0},
            {"case": "d24-256", "zero_stage": 3, "applied": True, "samples_per_s": 100.0},
            {"case": "d24-1024", "zero_stage": 2, "applied": False, "samples_per_s": 99.0},
            {"case": "d24-1024", "zero_stage": 3, "applied": True, "samples_per_s": 9.5}]
    out = tmp_path / "engine_step.txt"  # as gpu_session.sh keeps it: table, JSON line, exit status
    out.write_text("case ZeRO ms/step\n" + json.dumps({"benchmark": "engine_step", "results": rows}) + "\nexit 0\n")
    train_rates = _module().train_rates
    assert train_rates(Namespace(engine_json=out, train_samples_per_s=None)) == {256: 120.0, 1024: 9.5}
    assert train_rates(Namespace(engine_json=out, train_samples_per_s="256=50")) == {256: 50.0, 1024: 9.5}
    assert train_rates(Namespace(engine_json=tmp_path / "missing.txt", train_samples_per_s=None)) == {}
