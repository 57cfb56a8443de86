"""`mmdit-scale eval-images`: FID, CMMD and CLIP score of a folder of images; prints one JSON object."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "FID, CMMD and CLIP score of a folder of generated images against real images or saved statistics."
DESCRIPTION = (
    "Compare the images in --fake with --real (a folder of images, or reference statistics saved by "
    "--save-reference or by a training run) and print one JSON object: fid (Inception-v3 pool features), "
    "cmmd (MMD of CLIP image embeddings, Gaussian kernel, x1000) and, with --prompts, clip_score. The feature "
    "models are read only from the local paths given. See docs/metrics.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real", type=Path, required=True, metavar="DIR_OR_NPZ",
                        help="real images (a folder), or reference statistics (.npz) computed before")
    parser.add_argument("--fake", type=Path, default=None, metavar="DIR",
                        help="generated images (a folder; sorted by name)")
    parser.add_argument("--prompts", type=Path, default=None, metavar="FILE",
                        help="one prompt per line for the --fake images in name order (gives clip_score)")
    parser.add_argument("--inception", default="", metavar="FILE",
                        help="the FID Inception-v3 network, a local inception-2015-12-05.pt (TorchScript)")
    parser.add_argument("--clip", default="", metavar="DIR",
                        help="a CLIP model directory (transformers save_pretrained, with tokenizer and processor)")
    parser.add_argument("--save-reference", type=Path, default=None, metavar="FILE.npz",
                        help="also save the statistics of --real images here, to pass as --real later")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args: argparse.Namespace) -> int:
    from mmdit_scale.eval.image_metrics.extractors import Clip, Inception, MissingWeights
    from mmdit_scale.eval.image_metrics.folder import image_files, read_images, read_prompts
    from mmdit_scale.eval.image_metrics.reference import Reference
    from mmdit_scale.eval.image_metrics.score import score_images

    if args.fake is None and args.save_reference is None:
        print("mmdit-scale eval-images: error: give --fake (images to score) or --save-reference", file=sys.stderr)
        return 2
    try:
        inception = Inception.load(args.inception, args.device, where="--inception")
        clip = Clip.load(args.clip, args.device, where="--clip")
        if args.real.is_file():
            reference = Reference.load(args.real)
            reference.check(inception, clip, args.real)
        else:
            reference = Reference.from_images(read_images(image_files(args.real)), inception, clip,
                                              source=str(args.real.resolve()))
        if args.save_reference is not None:
            reference.save(args.save_reference)
        record: dict = {"reference": {"source": reference.source, "count": reference.count}}
        if args.save_reference is not None:
            record["reference"]["saved"] = str(args.save_reference.resolve())
        if args.fake is not None:
            files = image_files(args.fake)
            prompts = read_prompts(args.prompts, len(files)) if args.prompts is not None else None
            record = {**score_images(read_images(files), reference, inception, clip, prompts),
                      "images": len(files), **record}
    except (MissingWeights, FileNotFoundError, ValueError, OSError) as err:
        print(f"mmdit-scale eval-images: error: {err}", file=sys.stderr)
        return 2
    record.update(inception=str(Path(args.inception).resolve()), clip=str(Path(args.clip).resolve()))
    print(json.dumps(record))
    return 0
