"""`mmdit-scale prepare`: plan, encode in worker processes, write the manifest and the report.

Fatal errors (bad arguments, unloadable encoders, unlistable input, nothing written) raise
PrepareError; bad individual inputs are only counted, and named in the skipped file (skipped.py).
With `parts > 1` this run is one slice of a larger job: it writes a part manifest and, once every
part's manifest exists, the merged one.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from data_pipeline.encoders import EncodersConfigError, resolve_encoders, resolve_repa_encoder
from data_pipeline.encoders.config import EncodersConfig, VisionEncoderSpec
from data_pipeline.encoders.encoder_set import EncoderSet, describe_encoders
from data_pipeline.filters import Filters
from data_pipeline.format import TENSOR_DTYPES
from data_pipeline.layout import FORMAT_VERSION
from data_pipeline.manifest import (MANIFEST_NAME, Manifest, Provenance, ShardInfo, merge_parts,
                                    part_manifest_name)
from data_pipeline.shard_plan import ShardPlan, make_plan
from data_pipeline.skipped import reasons, write_skipped
from data_pipeline.sources import SourceError, list_records
from data_pipeline.transforms import RESAMPLE, make_buckets
from data_pipeline.encode_shard import EncodeSettings, ShardResult, load_state, write_shard


class PrepareError(Exception):
    """A fatal error: the run wrote nothing usable, and the message says why."""


@dataclass
class PrepareOptions:
    input: Path
    output: Path
    encoders: str = "demo"
    repa_encoder: Optional[str] = None
    """A transformers vision model's directory (or `demo`) whose patch features of each clean image
    are stored for REPA (`train.repa`); None: no features."""
    source: str = "auto"
    resolution: int = 256
    buckets: Optional[list[tuple[int, int]]] = None
    """Explicit (H, W) buckets; see `auto_buckets`."""
    auto_buckets: bool = False
    """Generate buckets with H * W about resolution^2 (sides multiples of factor * patch)."""
    patch_size: int = 2
    samples_per_shard: int = 1000
    workers: Optional[int] = None
    """None: one per GPU, or 1 on CPU."""
    part: int = 0
    parts: int = 1
    tensor_dtype: str = "bf16"
    min_size: Optional[int] = None
    max_aspect: float = 3.0
    dedup: bool = True
    syn_field: str = "syn_caption"
    image_column: Optional[str] = None
    caption_column: Optional[str] = None
    batch_size: Optional[int] = None
    merge: bool = True
    progress: bool = True


@dataclass
class PrepareReport:
    inputs: int
    samples: int
    """Samples in this run's (part's) manifest, including those of reused shards."""
    shards_written: int
    shards_reused: int
    shards_empty: int
    skipped: dict
    seconds: float
    images_per_s: float
    part: Optional[list[int]] = None
    merged: bool = False
    manifest: str = ""
    encoded: int = 0
    """Inputs encoded by this invocation (0 when every shard was reused)."""
    skipped_file: str = ""
    """Every skipped input of this run (part) with its reason, one JSON object a line."""

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def table(self) -> str:
        rows = [("inputs", self.inputs), ("samples written", self.samples),
                ("shards written", self.shards_written), ("shards reused", self.shards_reused),
                ("shards empty", self.shards_empty)]
        rows += [(f"skipped: {reason}", n) for reason, n in sorted(self.skipped.items())]
        rows += [("skipped total", self.skipped_total), ("images/s", f"{self.images_per_s:.1f}")]
        width = max(len(r[0]) for r in rows)
        title = "prepare report" + (f" (part {self.part[0]}/{self.part[1]})" if self.part else "")
        return "\n".join([title] + [f"  {name:<{width}}  {value:>10}" for name, value in rows])


def _main_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _settings_fingerprint(provenance: Provenance, opts: PrepareOptions) -> str:
    prov = provenance.to_dict()
    for info in prov["encoders"].values():
        info.pop("model_dir")  # same weights at another path are the same encoder
    return json.dumps({"format": FORMAT_VERSION, "provenance": prov, "resample": str(RESAMPLE),
                       "syn_field": opts.syn_field}, sort_keys=True)


def _check_options(opts: PrepareOptions) -> None:
    if not 0 <= opts.part < opts.parts:
        raise PrepareError(f"--part {opts.part}/{opts.parts}: need 0 <= I < N")
    if opts.samples_per_shard < 1:
        raise PrepareError("--samples-per-shard must be >= 1")
    if opts.resolution < 1:
        raise PrepareError("--resolution must be >= 1")
    if opts.tensor_dtype not in TENSOR_DTYPES:
        raise PrepareError(f"--dtype {opts.tensor_dtype!r} not in {sorted(TENSOR_DTYPES)}")
    if opts.workers is not None and opts.workers < 1:
        raise PrepareError("--workers must be >= 1")
    if opts.output.resolve() == opts.input.resolve():
        raise PrepareError("--output must differ from --input")


def _load_encoders(opts: PrepareOptions) -> tuple[EncodersConfig, Provenance]:
    try:
        cfg = resolve_encoders(opts.encoders, opts.output)
        if opts.batch_size:
            cfg = replace(cfg, batch_size=opts.batch_size)
        if opts.repa_encoder:
            cfg = replace(cfg, repa=VisionEncoderSpec(resolve_repa_encoder(opts.repa_encoder, opts.output)))
        infos, latent = describe_encoders(cfg, _main_device())
    except (EncodersConfigError, OSError, KeyError, ValueError) as err:
        raise PrepareError(f"cannot load encoders {opts.encoders!r}: {err}") from err
    unit = latent.factor * opts.patch_size
    buckets = None
    if opts.auto_buckets:
        buckets = make_buckets(opts.resolution, unit, opts.max_aspect)
    elif opts.buckets:
        buckets = list(opts.buckets)
    sizes = buckets or [(opts.resolution, opts.resolution)]
    bad = [s for s in sizes if s[0] % unit or s[1] % unit]
    if bad:
        raise PrepareError(f"sizes {bad} are not multiples of autoencoder factor {latent.factor} x patch "
                           f"{opts.patch_size} = {unit}")
    provenance = Provenance(encoders=infos, latent=latent, resolution=opts.resolution,
                            buckets=[list(b) for b in buckets] if buckets else None, tensor_dtype=opts.tensor_dtype)
    return cfg, provenance


_WORKER: dict = {}


def _load_set(cfg: EncodersConfig, device: torch.device) -> EncoderSet:
    try:
        return EncoderSet.load(cfg, device)
    except Exception as err:  # any loader failure (missing file, bad weights, OOM) is fatal
        raise PrepareError(f"cannot load encoders on {device}: {type(err).__name__}: {err}") from err


def _worker_init(cfg: EncodersConfig, devices, threads: int) -> None:
    torch.set_num_threads(threads)
    device = torch.device(devices.get())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # An initializer that raises makes Pool respawn workers forever; fail the first task instead.
    try:
        _WORKER["encoders"] = _load_set(cfg, device)
    except PrepareError as err:
        _WORKER["error"] = str(err)


def _worker_task(task: tuple) -> ShardResult:
    if "error" in _WORKER:
        raise PrepareError(_WORKER["error"])
    shard, out_dir, settings, fingerprint = task
    return write_shard(shard, out_dir, _WORKER["encoders"], settings, fingerprint)


def _run_pending(pending: list[ShardPlan], opts: PrepareOptions, cfg: EncodersConfig, settings: EncodeSettings,
                 fingerprint_base: str) -> list[ShardResult]:
    from tqdm import tqdm

    gpus = torch.cuda.device_count()
    workers = opts.workers or max(1, gpus)
    workers = min(workers, len(pending))
    total = sum(len(s.items) for s in pending)
    results = []
    with tqdm(total=total, unit="img", desc="prepare", disable=not opts.progress, dynamic_ncols=True) as bar:
        if workers <= 1:
            encoders = _load_set(cfg, torch.device("cuda:0") if gpus else torch.device("cpu"))
            for shard in pending:
                results.append(write_shard(shard, opts.output, encoders, settings,
                                           shard.fingerprint(fingerprint_base)))
                bar.update(len(shard.items))
            return results
        ctx = mp.get_context("spawn")  # CUDA and fork do not mix; spawn is safe everywhere
        devices = ctx.Queue()
        for i in range(workers):
            devices.put(f"cuda:{i % gpus}" if gpus else "cpu")
        threads = max(1, (os.cpu_count() or 1) // workers)
        tasks = [(s, opts.output, settings, s.fingerprint(fingerprint_base)) for s in pending]
        sizes = {s.name: len(s.items) for s in pending}
        with ctx.Pool(workers, initializer=_worker_init, initargs=(cfg, devices, threads)) as pool:
            for result in pool.imap_unordered(_worker_task, tasks):
                results.append(result)
                bar.update(sizes[result.name])
    return results


def _try_merge(output: Path, parts: int) -> bool:
    paths = [output / part_manifest_name(i, parts) for i in range(parts)]
    if not all(p.exists() for p in paths):
        return False
    merged = merge_parts([Manifest.load(p) for p in paths])
    merged.save(output / MANIFEST_NAME)
    return True


def merge_output(output: Path) -> Manifest:
    """`prepare --merge-only`: join the part manifests found in `output` into manifest.json."""
    found = sorted(output.glob("manifest.part-*-of-*.json"))
    if not found:
        raise PrepareError(f"no part manifests in {output}")
    try:
        merged = merge_parts([Manifest.load(p) for p in found])
    except ValueError as err:
        raise PrepareError(str(err)) from err
    merged.save(output / MANIFEST_NAME)
    return merged


def run_prepare(opts: PrepareOptions) -> PrepareReport:
    start = time.monotonic()
    _check_options(opts)
    opts.output.mkdir(parents=True, exist_ok=True)
    cfg, provenance = _load_encoders(opts)
    fingerprint_base = _settings_fingerprint(provenance, opts)
    try:
        records = list_records(opts.input, opts.source, opts.syn_field, opts.image_column, opts.caption_column)
    except (SourceError, OSError) as err:
        raise PrepareError(f"cannot list input {opts.input}: {err}") from err
    filters = Filters.for_resolution(opts.resolution, opts.min_size, opts.max_aspect, opts.dedup)
    plan = make_plan(records, part=opts.part, parts=opts.parts, filters=filters, syn_field=opts.syn_field,
                     samples_per_shard=opts.samples_per_shard)
    settings = EncodeSettings(resolution=opts.resolution,
                              buckets=tuple(tuple(b) for b in provenance.buckets) if provenance.buckets else None,
                              tensor_dtype=opts.tensor_dtype)

    done, pending = _finished_shards(plan.shards, opts.output, fingerprint_base)
    encode_start = time.monotonic()
    results = _run_pending(pending, opts, cfg, settings, fingerprint_base) if pending else []
    encode_seconds = time.monotonic() - encode_start
    by_name = {**done, **{r.name: r for r in results}}

    manifest = Manifest(provenance=provenance, part=[opts.part, opts.parts] if opts.parts > 1 else None)
    skipped_inputs = list(plan.skipped_inputs)
    for shard in plan.shards:
        r = by_name[shard.name]
        skipped_inputs += r.skipped_list()
        if r.samples:
            manifest.shards.append(ShardInfo(name=r.name, samples=r.samples, bytes=r.bytes, sha256=r.sha256))
    skipped = reasons(skipped_inputs)
    skipped_file = opts.output / _part_file(opts, "skipped", ".jsonl")
    write_skipped(skipped_file, skipped_inputs)
    if manifest.samples == 0:
        raise PrepareError(f"nothing written: {plan.inputs} inputs, skipped {dict(sorted(skipped.items()))} "
                           f"(each named in {skipped_file})")
    name = part_manifest_name(opts.part, opts.parts) if opts.parts > 1 else MANIFEST_NAME
    manifest.save(opts.output / name)
    merged = False
    if opts.parts > 1 and opts.merge:
        try:
            merged = _try_merge(opts.output, opts.parts)
        except ValueError as err:
            raise PrepareError(f"merging part manifests: {err}") from err
    encoded = sum(len(s.items) for s in pending)
    report = PrepareReport(
        inputs=plan.inputs, samples=manifest.samples,
        shards_written=sum(1 for r in results if r.samples), shards_reused=sum(1 for r in done.values() if r.samples),
        shards_empty=sum(1 for r in by_name.values() if not r.samples), skipped=dict(sorted(skipped.items())),
        seconds=round(time.monotonic() - start, 3),
        images_per_s=round(encoded / encode_seconds, 2) if encoded and encode_seconds > 0 else 0.0,
        part=[opts.part, opts.parts] if opts.parts > 1 else None, merged=merged,
        manifest=str(opts.output / (MANIFEST_NAME if opts.parts == 1 or merged else name)), encoded=encoded,
        skipped_file=str(skipped_file))
    _save_report(report, opts)
    return report


def _finished_shards(shards: list[ShardPlan], output: Path,
                     fingerprint_base: str) -> tuple[dict[str, ShardResult], list[ShardPlan]]:
    """Split the plan into shards a previous run finished (same fingerprint, tar present or
    recorded empty) and shards still to encode. A tar from other settings is a fatal error."""
    done: dict[str, ShardResult] = {}
    pending: list[ShardPlan] = []
    for shard in shards:
        fp = shard.fingerprint(fingerprint_base)
        state = load_state(output, shard.name)
        exists = (output / shard.name).exists()
        if state is not None and state.fingerprint != fp and exists:
            raise PrepareError(f"{output / shard.name} was written from other inputs or settings; "
                               "use a fresh --output (or delete the old shards)")
        if state is not None and state.fingerprint == fp and (state.samples == 0 or exists):
            done[shard.name] = state
        else:
            pending.append(shard)
    return done, pending


def _part_file(opts: PrepareOptions, stem: str, suffix: str) -> str:
    """`stem+suffix`, or with `--part I/N` the part's own `stem.part-IIIII-of-NNNNN+suffix`."""
    return stem + suffix if opts.parts == 1 else f"{stem}.part-{opts.part:05d}-of-{opts.parts:05d}{suffix}"


def _save_report(report: PrepareReport, opts: PrepareOptions) -> None:
    data = asdict(report)
    data["skipped_total"] = report.skipped_total
    (opts.output / _part_file(opts, "report", ".json")).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
