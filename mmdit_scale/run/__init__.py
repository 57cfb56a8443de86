"""The run directory: its layout and file names, checkpoints and `latest`, the resolved config,
data dims, exit codes and the process helpers of a training run.

Everything outside the trainer (the launcher, `plan`, `eval`, `interop`) reads runs through this
package. Torch-free at import: reading weights (`checkpoints.load_weights`, `build_model`) imports
torch inside the function, and nothing here imports deepspeed or torch.distributed.
"""
