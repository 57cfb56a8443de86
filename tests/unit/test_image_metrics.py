"""Image metrics: FID, CMMD and CLIP score, their reference statistics and `eval-images`, with tiny
random feature models saved to a temp dir and loaded back through the real loading code."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg

from launcher import cli
from mmdit_scale.eval.image_metrics.demo_models import build_metric_models
from mmdit_scale.eval.image_metrics.distances import clip_score, cmmd, fid, gaussian_stats
from mmdit_scale.eval.image_metrics.extractors import INCEPTION_FILE, Clip, Inception, MissingWeights
from mmdit_scale.eval.image_metrics.reference import Reference, ReferenceMismatch
from mmdit_scale.eval.image_metrics.score import score_images

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["a red circle on the left", "a blue square on the right", "a green triangle at the top"]


def closed_form_fid(mu1, s1, mu2, s2) -> float:
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fid_equals_the_closed_form_of_two_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = random_cov(rng, 6), random_cov(rng, 6)
    assert fid(mu1, s1, mu2, s2) == pytest.approx(closed_form_fid(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)
    # From features drawn from those Gaussians: the sample statistics give the same number as the
    # closed form of those statistics, and approach the true distance.
    x, y = rng.multivariate_normal(mu1, s1, 20000), rng.multivariate_normal(mu2, s2, 20000)
    (m1, c1), (m2, c2) = gaussian_stats(x), gaussian_stats(y)
    assert fid(m1, c1, m2, c2) == pytest.approx(closed_form_fid(m1, c1, m2, c2), rel=1e-9)
    assert fid(m1, c1, m2, c2) == pytest.approx(closed_form_fid(mu1, s1, mu2, s2), rel=0.05)


def test_fid_of_a_set_against_itself_is_zero():
    x = np.random.default_rng(1).normal(size=(200, 16))
    mu, sigma = gaussian_stats(x)
    assert abs(fid(mu, sigma, mu, sigma)) <= 1e-6


def test_cmmd_is_zero_for_identical_sets_and_positive_otherwise():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(50, 8)), rng.normal(size=(40, 8)) + 0.5
    assert cmmd(x, x) == 0.0
    assert cmmd(x, y) > 0 and cmmd(x, y) == pytest.approx(cmmd(y, x), rel=1e-12)


def test_clip_score_is_100_times_the_clipped_cosine():
    img = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    txt = np.array([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    assert clip_score(img, txt) == pytest.approx(100 * (1 + 2 ** -0.5 + 0) / 3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("metric-models")
    return build_metric_models(root, PROMPTS, image_size=32)


def images(seed: int, n: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def test_tiny_models_score_a_set_against_itself_as_zero_and_round_trip_the_reference(models, tmp_path):
    inception, clip = Inception.load(models[0]), Clip.load(models[1])
    real = images(0)
    ref = Reference.from_images(real, inception, clip, source="test")
    path = ref.save(tmp_path / "ref.npz")
    loaded = Reference.load(path)
    loaded.check(inception, clip, path)
    prompts = [PROMPTS[i % 3] for i in range(len(real))]
    same = score_images(real, loaded, inception, clip, prompts)
    assert abs(same["fid"]) <= 1e-6 and same["cmmd"] == 0.0 and 0 <= same["clip_score"] <= 100
    other = score_images(images(1) // 4, loaded, inception, clip)
    assert other["fid"] > 1e-3 and other["cmmd"] > 0 and "clip_score" not in other


def test_statistics_of_other_feature_models_are_refused(models, tmp_path):
    from mmdit_scale.eval.image_metrics.demo_models import save_pool_features

    inception, clip = Inception.load(models[0]), Clip.load(models[1])
    path = Reference.from_images(images(0), inception, clip, source="test").save(tmp_path / "ref.npz")
    other = Inception.load(save_pool_features(tmp_path / "other.pt", seed=99))
    with pytest.raises(ReferenceMismatch, match="another Inception model"):
        Reference.load(path).check(other, clip, path)


def write_folder(folder, array):
    from PIL import Image

    folder.mkdir()
    for i, img in enumerate(array):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


def test_eval_images_prints_one_json_object(models, tmp_path, capsys):
    real, fake = write_folder(tmp_path / "real", images(0)), write_folder(tmp_path / "fake", images(1))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[i % 3] for i in range(12)) + "\n")
    weights = ["--inception", str(models[0]), "--clip", str(models[1])]
    code = cli.main(["eval-images", "--real", str(real), "--fake", str(fake), "--prompts", str(prompts),
                     "--save-reference", str(tmp_path / "ref.npz"), *weights])
    out = capsys.readouterr().out
    assert code == 0 and len(out.strip().splitlines()) == 1
    first = json.loads(out)
    assert set(first) >= {"fid", "cmmd", "clip_score", "images", "reference"} and first["images"] == 12
    # The saved statistics give the same numbers as the folder they came from.
    assert cli.main(["eval-images", "--real", str(tmp_path / "ref.npz"), "--fake", str(fake),
                     "--prompts", str(prompts), *weights]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {k: again[k] for k in ("fid", "cmmd", "clip_score")} == {k: first[k] for k in ("fid", "cmmd", "clip_score")}


def test_missing_weights_name_the_file_to_supply(models, tmp_path, capsys):
    real = write_folder(tmp_path / "real", images(0, 3))
    assert cli.main(["eval-images", "--real", str(real), "--fake", str(real), "--clip", str(models[1])]) == 2
    assert INCEPTION_FILE in capsys.readouterr().err
    assert cli.main(["eval-images", "--real", str(real), "--fake", str(real), "--inception", str(models[0]),
                     "--clip", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "CLIP" in err and "config.json" in err and "--clip" in err
    with pytest.raises(MissingWeights, match="eval.metrics.inception"):
        Inception.load("", where="eval.metrics.inception")


def test_a_run_with_image_metrics_needs_both_models_before_it_starts(models):
    from mmdit_scale.config import load_config
    from mmdit_scale.eval.image_metrics.extractors import resolve_config_paths

    cfg = load_config(REPO / "recipes" / "tiny.yaml", ["eval.image_every=10", f"eval.metrics.clip={models[1]}"])
    with pytest.raises(MissingWeights, match=f"{INCEPTION_FILE}.*eval.metrics.inception"):
        resolve_config_paths(cfg)
    off = load_config(REPO / "recipes" / "tiny.yaml", ["eval.metrics.inception=relative.pt"])  # off: nothing is checked
    assert resolve_config_paths(off).eval.metrics.inception == str(Path("relative.pt").resolve())
