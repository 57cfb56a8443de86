"""`mmdit-scale sample`: generate images from a run or checkpoint with the Euler ODE sampler and CFG."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Generate images from a run or checkpoint with the Euler ODE sampler and CFG."
DESCRIPTION = (
    "Encode the prompts with the run's own text encoders (found through the provenance of its training "
    "shards), integrate the flow ODE with Euler steps and classifier-free guidance, decode with the run's "
    "autoencoder, and write a PNG grid (a row per prompt) plus FILE.json with the prompts and settings. "
    "RUN_OR_CKPT is a run dir (its `latest` checkpoint), a checkpoints dir or one checkpoint dir. See docs/sampling.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="RUN_OR_CKPT", type=Path, help="run, checkpoints or checkpoint directory")
    parser.add_argument("--prompt", action="append", required=True, metavar="TEXT",
                        help="a prompt; repeat for several (one grid row each)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.png", help="grid image to write")
    parser.add_argument("--steps", type=int, default=28, metavar="N", help="Euler steps (default: 28)")
    parser.add_argument("--cfg", type=float, default=3.0, metavar="S", help="guidance scale; 1 = none (default: 3)")
    parser.add_argument("--shift", type=float, default=None, metavar="A",
                        help="timestep shift of the sampling grid (default: the run's training rule, "
                             "flow.shift at data.resolution)")
    parser.add_argument("--height", type=int, default=None, metavar="PX",
                        help="image height (default: the training data's resolution); any multiple of the "
                             "autoencoder factor x patch size that the model's position table covers")
    parser.add_argument("--width", type=int, default=None, metavar="PX",
                        help="image width (default: the training data's resolution)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="noise seed (default: 0)")
    parser.add_argument("--per-prompt", type=int, default=1, metavar="K", help="images per prompt (default: 1)")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args: argparse.Namespace) -> int:
    from mmdit_scale.eval.sampling import RunSampler, SampleSettings, SamplingError, check_prompts, write_grid

    try:
        check_prompts(args.prompt)
        settings = SampleSettings(steps=args.steps, cfg=args.cfg, shift=args.shift, seed=args.seed, ema=args.ema,
                                  per_prompt=args.per_prompt, height=args.height, width=args.width)
        sampler = RunSampler(args.path, ema=args.ema, device=args.device)
        settings = sampler.resolved(settings)
        encoded = sampler.truncations(args.prompt)
        images = sampler.sample(args.prompt, settings)
    except (FileNotFoundError, ValueError, SamplingError) as err:
        print(f"mmdit-scale sample: error: {err}", file=sys.stderr)
        return 2
    out = write_grid(images, args.prompt, settings, args.out, sampler.checkpoint, encoded)
    print(f"wrote {len(images)} images from {sampler.checkpoint} to {out}")
    return 0
