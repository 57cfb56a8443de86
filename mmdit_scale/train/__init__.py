"""The DeepSpeed ZeRO trainer: the only package that imports deepspeed or torch.distributed.

The rank entry point is `python -m mmdit_scale.train.entry --run-dir DIR`, started once per rank
by `mmdit-scale train` (launcher/local_launch.py). Importing this package imports nothing heavy:
the launcher reads `exit_codes` and `ckpt_files` from here without paying for torch.
"""
