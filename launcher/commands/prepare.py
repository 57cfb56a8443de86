"""`mmdit-scale prepare`: pre-encode images and captions into sharded WebDataset tars with a manifest."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Pre-encode images and captions into sharded WebDataset tars with a manifest."
DESCRIPTION = (
    "Encode images (autoencoder latents) and captions (CLIP-L, CLIP-G, T5 hidden states) once, "
    "into WebDataset tar shards plus manifest.json. Bad inputs are skipped, counted, and named with their "
    "reasons in OUTPUT/skipped.jsonl (with --part, OUTPUT/skipped.part-IIIII-of-NNNNN.jsonl); a rerun "
    "skips finished shards. Exit 0 on success (even with skipped inputs), 1 on a fatal error "
    "(unloadable encoders, unlistable input, nothing written), 2 on bad arguments. See docs/data.md."
)


def _part(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--part expects I/N (e.g. 3/8), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--part {text}: need 0 <= I < N")
    return i, n


def _buckets(text: str):
    if text == "auto":
        return "auto"
    from data_pipeline.transforms import parse_buckets

    try:
        return parse_buckets(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", type=Path, help="folder of images, folder of .tar shards, or a .jsonl/.parquet file")
    io.add_argument("--output", type=Path, required=True, help="output folder for shards, manifest and report")
    io.add_argument("--source", choices=("auto", "folder", "tars", "jsonl", "parquet"), default="auto",
                    help="override the detected input type (default: auto)")
    io.add_argument("--syn-field", default="syn_caption",
                    help="JSON sidecar field / table column holding the synthetic caption (default: syn_caption)")
    io.add_argument("--image-column", help="table column with image paths (default: image|image_path|path|file)")
    io.add_argument("--caption-column", help="table column with the original caption (default: caption|text)")
    enc = parser.add_argument_group("encoding")
    enc.add_argument("--encoders", default="demo", help="`demo` or an encoders YAML (default: demo)")
    enc.add_argument("--repa-encoder", metavar="PATH",
                     help="also store each clean image's patch features from this transformers vision model "
                          "(e.g. DINOv2) for REPA (train.repa); `demo`: the demo's seeded tiny encoder")
    enc.add_argument("--resolution", type=int, default=256, help="target side S in pixels (default: 256)")
    enc.add_argument("--buckets", type=_buckets,
                     help="aspect buckets: `auto` (H*W ~ S^2) or HxW,HxW,... ; default: centre crop to SxS")
    enc.add_argument("--patch-size", type=int, default=2, help="model patch size; bucket sides are multiples "
                     "of autoencoder factor x patch (default: 2)")
    enc.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16", help="stored tensor dtype (default: bf16)")
    enc.add_argument("--batch-size", type=int, help="override the encoders YAML batch_size")
    flt = parser.add_argument_group("filters")
    flt.add_argument("--min-size", type=int, help="minimum shorter side in pixels (default: resolution / 2)")
    flt.add_argument("--max-aspect", type=float, default=3.0, help="maximum long/short side ratio (default: 3)")
    flt.add_argument("--no-dedup", action="store_true", help="keep exact duplicate images")
    run = parser.add_argument_group("execution")
    run.add_argument("--samples-per-shard", type=int, default=1000, help="samples per tar shard (default: 1000)")
    run.add_argument("--workers", type=int, help="worker processes (default: one per GPU, 1 on CPU)")
    run.add_argument("--part", type=_part, help="encode slice I of N (0-based) into disjoint shard names")
    run.add_argument("--no-merge", action="store_true",
                     help="with --part: do not merge part manifests even when all parts are done")
    run.add_argument("--merge-only", action="store_true",
                     help="only merge OUTPUT's part manifests into manifest.json")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from data_pipeline.prepare import PrepareError, PrepareOptions, merge_output, run_prepare

    try:
        if args.merge_only:
            merged = merge_output(args.output)
            print(f"merged {len(merged.shards)} shards, {merged.samples} samples into {args.output / 'manifest.json'}")
            return 0
        if args.input is None:
            print("mmdit-scale prepare: error: --input is required", file=sys.stderr)
            return 2
        part, parts = args.part or (0, 1)
        opts = PrepareOptions(
            input=args.input, output=args.output, encoders=args.encoders, repa_encoder=args.repa_encoder,
            source=args.source,
            resolution=args.resolution, buckets=None if args.buckets in (None, "auto") else args.buckets,
            auto_buckets=args.buckets == "auto", patch_size=args.patch_size, samples_per_shard=args.samples_per_shard,
            workers=args.workers, part=part, parts=parts, tensor_dtype=args.dtype, min_size=args.min_size,
            max_aspect=args.max_aspect, dedup=not args.no_dedup, syn_field=args.syn_field,
            image_column=args.image_column, caption_column=args.caption_column, batch_size=args.batch_size,
            merge=not args.no_merge, progress=not args.no_progress)
        report = run_prepare(opts)
    except PrepareError as err:
        print(f"mmdit-scale prepare: error: {err}", file=sys.stderr)
        return 1
    print(report.table())
    print(f"manifest: {report.manifest}")
    print(f"skipped inputs, each with its reason: {report.skipped_file}")
    return 0
