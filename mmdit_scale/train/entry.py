"""Per-rank entry point: `python -m mmdit_scale.train.entry --run-dir DIR`.

Started once per rank by torch.distributed's launcher (or directly per SLURM task), with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the environment. Reads the resolved config
the launcher wrote to RUN_DIR/config.yaml, trains, and exits with a code from `exit_codes`.
The exit path destroys the process group, flushes and leaves with `os._exit`: interpreter teardown
with DeepSpeed's threads still around occasionally aborts a rank after all work is done.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path

from mmdit_scale.run import exit_codes
from mmdit_scale.run.process import die_with_parent, report_exit


def _device():
    """(device, device name, communication backend) of this rank."""
    import torch
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu":
        return torch.device("cpu"), "cpu", "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    accelerator.set_device(local_rank)
    device = torch.device(accelerator.device_name(local_rank))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    return device, name, accelerator.communication_backend_name()


def _train(run_dir: Path) -> int:
    import logging

    import deepspeed
    import torch.distributed as dist

    from mmdit_scale.config import ConfigError, load_config
    from mmdit_scale.run.layout import CONFIG_FILE
    from mmdit_scale.train.loop import CheckpointWriteError, NonFiniteError, SetupError, Trainer

    deepspeed.utils.logger.setLevel(logging.WARNING)
    # DeepSpeed's own calls of deprecated torch.distributed names: noise in every rank's log.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    device, device_name, backend = _device()
    deepspeed.init_distributed(dist_backend=backend)
    rank = dist.get_rank()
    try:
        cfg = load_config(run_dir / CONFIG_FILE)
        return Trainer(cfg, run_dir, device, device_name).run()
    except (ConfigError, SetupError) as err:
        if rank == 0:
            print(f"mmdit-scale train: {err}", file=sys.stderr, flush=True)
        return exit_codes.CONFIG_ERROR
    except NonFiniteError as err:
        if rank == 0:
            print(f"mmdit-scale train: {err}", file=sys.stderr, flush=True)
        return exit_codes.NONFINITE
    except CheckpointWriteError as err:  # this rank's own failure: every rank that hits it says so
        print(f"mmdit-scale train: rank {rank}: {err}", file=sys.stderr, flush=True)
        return exit_codes.IO_ERROR
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    die_with_parent()
    parser = argparse.ArgumentParser(description="one rank of `mmdit-scale train`")
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        code = _train(args.run_dir)
    except BaseException:  # noqa: BLE001 -- any failure must still reach report_exit and os._exit
        traceback.print_exc()
        code = exit_codes.FAILED
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(report_exit(rank, code))


if __name__ == "__main__":
    main()
