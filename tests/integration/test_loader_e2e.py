"""The loader end to end: images through `prepare` and the loader equal a direct encode; and an
exact resume across real interpreter restarts with DataLoader worker processes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_pipeline.demo_data import write_demo_data
from data_pipeline.encoders import load_encoders_config
from data_pipeline.encoders.encoder_set import EncoderSet
from data_pipeline.format import assemble_text
from data_pipeline.loader import LoaderConfig, ModelDims, ShardLoader
from data_pipeline.loader.synthetic import TINY_TEXT, SyntheticSpec, write_synthetic
from data_pipeline.prepare import PrepareOptions, run_prepare
from data_pipeline.transforms import decode_image, place
from data_pipeline.encode_shard import pixels_to_tensor


def test_images_through_prepare_and_loader_equal_a_direct_encode(demo_encoders, tmp_path):
    write_demo_data(tmp_path / "in", count=6)
    run_prepare(PrepareOptions(input=tmp_path / "in", output=tmp_path / "out", encoders=demo_encoders,
                               resolution=32, samples_per_shard=4, progress=False))
    loader = ShardLoader(str(tmp_path / "out"), LoaderConfig(batch_size=4), validation=True,
                         model=ModelDims(in_channels=12, context_dim=64, pooled_dim=64))
    batches = list(loader)
    assert sum(len(b["keys"]) for b in batches) == 6

    encoders = EncoderSet.load(load_encoders_config(demo_encoders), torch.device("cpu"))
    layout = loader.layout
    for b in batches:
        for i, key in enumerate(b["keys"]):
            image = next(p for p in (tmp_path / "in").glob(f"{key}.*") if p.suffix in (".png", ".jpg"))
            placed = place(decode_image(image.read_bytes()), 32)
            latent = encoders.encode_images(pixels_to_tensor(placed.pixels)[None])[0]
            assert torch.equal(b["latent"][i], latent.bfloat16())
            caption = (tmp_path / "in" / f"{key}.txt").read_text().strip()
            assert b["caption"][i] == caption  # validation reads the original caption
            direct = encoders.encode_captions([caption])
            tensors = {f"orig.{enc}" + ("_pooled" if part == "pooled" else ""): t[0].bfloat16()
                       for enc, out in direct.items() for part, t in out.items()}
            context, pooled = assemble_text(tensors, "orig", layout)
            # bf16 storage of fp32 encoder outputs: one bf16 rounding apart at most.
            torch.testing.assert_close(b["context"][i].float(), context.float(), rtol=2 ** -7, atol=1e-6)
            torch.testing.assert_close(b["pooled"][i].float(), pooled.float(), rtol=2 ** -7, atol=1e-6)


SCRIPT = """
import hashlib, json, sys
import torch
from data_pipeline.loader import LoaderConfig, ShardLoader
data, k, n, state_in, state_out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
loader = ShardLoader(data, LoaderConfig(batch_size=4, shuffle_buffer=9, num_workers=2, worker_type="process"))
if state_in != "-":
    loader.load_state_dict(json.load(open(state_in)))
it = iter(loader)
digests = []
for _ in range(n):
    b = next(it)
    h = hashlib.sha256(json.dumps(b["keys"]).encode())
    for f in ("latent", "context", "pooled", "text_keep", "caption_variant"):
        h.update(b[f].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digests.append(h.hexdigest())
    if len(digests) == k and state_out != "-":
        json.dump(loader.state_dict(), open(state_out, "w"))
print(json.dumps(digests))
"""


@pytest.mark.slow
def test_exact_resume_across_interpreter_restarts_with_worker_processes(tmp_path):
    write_synthetic(tmp_path / "d", SyntheticSpec(shards=5, per_shard=9, latent_sizes=((4, 4), (6, 4)), text=TINY_TEXT))

    def run(*args):
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "d"), *map(str, args)],
                             capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    full = run(0, 20, "-", "-")
    head = run(7, 7, "-", tmp_path / "state.json")
    tail = run(0, 13, tmp_path / "state.json", "-")
    assert head + tail == full and len(set(full)) == 20
