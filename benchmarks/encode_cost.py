"""Pre-encoding cost: `prepare`'s images/s on one GPU with SD3's full-size encoders, against training.

    python benchmarks/encode_cost.py                                    # GPU: 256 and 1024 px, bf16
    python benchmarks/encode_cost.py --engine-json engine_step.txt      # ... and the ratio to training
    python benchmarks/encode_cost.py --train-samples-per-s 256=122.6,1024=9.9
    python benchmarks/encode_cost.py --device cpu --smoke               # tiny sizes on CPU (what the test runs)

The 16-channel VAE, CLIP-L, CLIP-G and T5-XXL are built at random from their published configs
(benchmarks/sd3_encoders.py), saved, and loaded back by `prepare`'s own `EncoderSet.load`; every
timing then calls `prepare`'s code: `EncoderSet.encode_images` (VAE images/s per resolution),
each `TextEncoder.encode` (captions/s, tokenizing included, at the encoders config's `tokens`,
77 for all three), and `encode_shard.encode_items` on JPEG files, which is one `prepare` worker's
whole per-shard work short of writing the tar: decode, centre crop, VAE, and every caption variant
through the three text encoders (`--captions-per-image`, 2: original and synthetic). Each timing
follows a warm-up call and drains the GPU queue (benchmarks/timing.py).

References measured in the same run: each model's FLOP/s (FLOPs counted by torch's FlopCounterMode
on one batch; attention on CPU is not counted) over a bf16 matmul's (`vs_matmul`), and
`prepare_vs_components`, the measured prepare rate over the rate its GPU parts alone would allow
(the rest is host work: JPEG decode, resize, copies; tokenizing is inside the text rates).

`encode_gpu_hours_per_train_gpu_hour` = training samples/s per GPU / prepare samples/s per GPU, at
the same resolution: the GPU-hours of encoding each GPU-hour of training needs when every sample is
seen once (divide by the epochs otherwise). The training figure comes from `--train-samples-per-s`
or from benchmarks/engine_step.py's output (`--engine-json`, the d24-PIXELS case's fastest ZeRO
stage); without either the ratio is null and the formula is printed. Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.sd3_encoders import save_sd3_encoders  # noqa: E402
from benchmarks.timing import matmul_flops_per_s, timed  # noqa: E402

FORMULA = "encode_gpu_hours_per_train_gpu_hour = train_samples_per_s / prepare_samples_per_s (same resolution)"


def captions(count: int) -> list[str]:
    """Distinct captions of a few sentences (longer than 77 tokens, like synthetic captions)."""
    from data_pipeline.demo_data import demo_corpus

    corpus = demo_corpus()[:120]
    return [", ".join(corpus[(i + k * 7) % len(corpus)] for k in range(6)) for i in range(count)]


def write_images(root: Path, pixels: int, count: int) -> list[Path]:
    """`count` JPEGs of a 4:3 photo's size a little above `pixels`, so prepare crops and resizes them:
    smooth gradients with grain, which decode like photographs (pure noise would decode slower)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    h, w = pixels * 5 // 4, pixels * 5 // 3
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
    paths = []
    for i in range(count):
        pixels_i = np.clip(np.roll(ramp, 37 * i, axis=1) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        paths.append(root / f"{pixels}-{i}.jpg")
        Image.fromarray(pixels_i).save(paths[-1], quality=90)
    return paths


def flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def rate(fn, items: int, iters: int, device) -> tuple[float, int]:
    """(items/s over `iters` calls after one warm-up call, FLOPs of one call)."""
    one_call = flops(fn)
    fn()  # warm-up outside the counter's dispatch mode
    return items * iters / timed(fn, device, iters), one_call


def train_rates(args) -> dict[int, float]:
    """{pixels: training samples/s per GPU} from --train-samples-per-s or --engine-json."""
    out: dict[int, float] = {}
    if args.engine_json and args.engine_json.is_file():  # a failed engine run leaves no JSON: no ratio, no error
        lines = [line for line in args.engine_json.read_text().splitlines() if line.startswith("{")]
        rows = [r for line in lines for r in json.loads(line).get("results", [])]
        for r in rows:
            if r["case"].startswith("d24-") and r["applied"]:
                pixels = int(r["case"].split("-")[1])
                out[pixels] = max(out.get(pixels, 0.0), r["samples_per_s"])
    if args.train_samples_per_s:  # named figures win over the engine's
        for pair in args.train_samples_per_s.split(","):
            pixels, value = pair.split("=")
            out[int(pixels)] = float(value)
    return out


def measure(args, device, work: Path) -> dict:
    from data_pipeline.demo_data import demo_corpus
    from data_pipeline.encode_shard import EncodeSettings, encode_items
    from data_pipeline.encoders.encoder_set import EncoderSet
    from data_pipeline.shard_plan import PlannedItem
    from data_pipeline.sources import Blob

    from data_pipeline.encoders.encoder_set import quiet_hub_progress

    quiet_hub_progress()  # no saving bars per model
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    matmul = matmul_flops_per_s(device, dtype)
    begin = time.perf_counter()
    cfg, params = save_sd3_encoders(work / "models", demo_corpus(), args.smoke, device, dtype, args.batch_size,
                                    args.tokens)
    build_s = time.perf_counter() - begin
    begin = time.perf_counter()
    encoders = EncoderSet.load(cfg, device)  # prepare's own loading path, from the saved directories
    load_s = time.perf_counter() - begin
    bs, n = args.batch_size, args.batch_size * args.iters
    texts = captions(max(n * args.captions_per_image, bs))
    rows = []
    for name, enc in encoders.text.items():
        per_s, f = rate(lambda enc=enc: enc.encode(texts[:bs]), bs, args.iters, device)
        rows.append({"encoder": name, "input": "caption", "pixels": None, "items_per_s": per_s,
                     "tflops_per_s": f * per_s / bs / 1e12, "vs_matmul": f * per_s / bs / matmul,
                     "params": params[name]})
    text_s_per_caption = sum(1 / r["items_per_s"] for r in rows)
    resolutions = []
    for pixels in args.resolutions:
        images = torch.rand(bs, 3, pixels, pixels) * 2 - 1  # (B, 3, H, W) in [-1, 1], on the host as prepare has them
        per_s, f = rate(lambda images=images: encoders.encode_images(images), bs, args.iters, device)
        rows.append({"encoder": "vae", "input": "image", "pixels": pixels, "items_per_s": per_s,
                     "tflops_per_s": f * per_s / bs / 1e12, "vs_matmul": f * per_s / bs / matmul,
                     "params": params["vae"]})
        files = write_images(work, pixels, min(n, 8))  # a few files, read again: decoding is the cost, not disk
        variants = ("orig", "syn")[:args.captions_per_image]
        items = [PlannedItem(key=f"{pixels}-{i}", image=Blob(str(files[i % len(files)])), sha256="",
                             captions={v: texts[(i * len(variants) + k) % len(texts)] for k, v in enumerate(variants)})
                 for i in range(n)]
        settings = EncodeSettings(resolution=pixels, buckets=None, tensor_dtype="bf16")
        encode_items(items[:bs], encoders, settings)  # warm-up: this size's first decode and resize
        prepare = n / timed(lambda: encode_items(items, encoders, settings), device, 1)
        components = 1 / (1 / per_s + args.captions_per_image * text_s_per_caption)
        resolutions.append({"pixels": pixels, "vae_images_per_s": per_s, "prepare_samples_per_s": prepare,
                            "components_samples_per_s": components, "prepare_vs_components": prepare / components})
    return {"matmul_tflops": matmul / 1e12, "build_s": build_s, "load_s": load_s, "encoders": rows,
            "resolutions": resolutions}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 32 and 64 px, fp32, a few items (CPU test)")
    ap.add_argument("--resolutions", default="256,1024", help="square image sides in pixels, comma-separated")
    ap.add_argument("--batch-size", type=int, default=16, help="the encoders config's batch_size (its default)")
    ap.add_argument("--iters", type=int, default=5, help="timed batches per measurement")
    ap.add_argument("--tokens", type=int, default=None, help="text tokens (default: the encoders config's, 77)")
    ap.add_argument("--captions-per-image", type=int, default=2, choices=(1, 2),
                    help="caption variants prepare encodes per image (original and synthetic: 2)")
    ap.add_argument("--dtype", default=None, choices=("bf16", "fp32"), help="default: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--train-samples-per-s", default=None, metavar="PIXELS=RATE,...",
                    help="training samples/s per GPU by resolution, e.g. 256=122.6,1024=9.9")
    ap.add_argument("--engine-json", type=Path, default=None,
                    help="benchmarks/engine_step.py's output (its JSON line): the d24 cases' samples/s")
    ap.add_argument("--work", type=Path, default=None, help="where the models and images go (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.resolutions, args.batch_size, args.iters = "32,64", 2, 2
    from data_pipeline.layout import TEXT_TOKENS

    args.resolutions = [int(p) for p in args.resolutions.split(",")]
    args.tokens = args.tokens or TEXT_TOKENS
    device = torch.device(args.device)
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory(prefix="encode-cost-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = measure(args, device, work)
    train = train_rates(args)
    for r in result["resolutions"]:
        r["train_samples_per_s"] = train.get(r["pixels"])
        r["encode_gpu_hours_per_train_gpu_hour"] = (r["train_samples_per_s"] / r["prepare_samples_per_s"]
                                                    if r["train_samples_per_s"] else None)
    print(f"{device_name}: {args.dtype}, batch {args.batch_size}, {args.tokens} tokens, "
          f"matmul {result['matmul_tflops']:.1f} TFLOP/s; built and saved in {result['build_s']:.1f} s, "
          f"loaded by EncoderSet.load in {result['load_s']:.1f} s")
    print(f"{'encoder':<8}{'input':>14}{'items/s':>11}{'TFLOP/s':>10}{'vs matmul':>11}{'params':>15}")
    for r in result["encoders"]:
        what = f"{r['pixels']} px image" if r["pixels"] else "caption"
        print(f"{r['encoder']:<8}{what:>14}{r['items_per_s']:>11.1f}{r['tflops_per_s']:>10.2f}"
              f"{r['vs_matmul']:>11.3f}{r['params']:>15,}")
    print(f"{'prepare':<8}{'samples/s':>12}{'encoders alone':>17}{'ratio':>7}{'train/s':>9}{'encode h / train h':>20}")
    for r in result["resolutions"]:
        train_text = "n/a" if r["train_samples_per_s"] is None else f"{r['train_samples_per_s']:.1f}"
        ratio = r["encode_gpu_hours_per_train_gpu_hour"]
        print(f"{str(r['pixels']) + ' px':<8}{r['prepare_samples_per_s']:>12.1f}{r['components_samples_per_s']:>17.1f}"
              f"{r['prepare_vs_components']:>7.2f}{train_text:>9}{'n/a' if ratio is None else f'{ratio:.3f}':>20}")
    print(FORMULA)
    print(json.dumps({"benchmark": "encode_cost", "device": device_name, "dtype": args.dtype,
                      "batch_size": args.batch_size, "tokens": args.tokens,
                      "captions_per_image": args.captions_per_image, "smoke": args.smoke, **result,
                      "formula": FORMULA}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
