"""The DeepSpeed ZeRO trainer: the only package that imports deepspeed or torch.distributed.

The rank entry point is `python -m mmdit_scale.train.entry --run-dir DIR`, started once per rank
by `mmdit-scale train` (launcher/local_launch.py). The run directory's layout, exit codes and
process helpers live in `mmdit_scale.run`, which the launcher reads without paying for torch.
"""
