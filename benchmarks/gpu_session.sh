#!/usr/bin/env bash
# Every GPU measurement the [engine] issue asks for, as one script for a lent GPU machine (no network).
#
# Here, before the session (once): build the wheels the GPU image lacks (its Python has torch, triton,
# transformers, sentencepiece, pyarrow, tensorboard, safetensors and numpy; see ENVIRONMENT_NOTES):
#     .venv/bin/pip wheel --no-deps --no-build-isolation -w wheels deepspeed==0.19.8
#     .venv/bin/pip download --no-deps -d wheels diffusers==0.42.1 webdataset==1.0.2 omegaconf==2.4.0 \
#         antlr4-python3-runtime==4.9.3 braceexpand==0.1.7 hjson==3.1.0 py-cpuinfo==9.0.0 msgpack ninja einops
# Then run it through the device tool with `carry: ["wheels"]`:
#     bash benchmarks/gpu_session.sh           # results in $OUT (the device tool's folder), else ./gpu-results
set -uo pipefail
out=${OUT:-gpu-results}
mkdir -p "$out"
python -m pip install --no-index --no-deps --quiet wheels/*.whl || { echo "wheel install failed" >&2; exit 1; }
export PYTHONPATH=$PWD DS_ACCELERATOR=cuda
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
run() {  # name, command...: each measurement keeps going when another fails
  local name=$1; shift
  echo "== $name: $*"
  timeout 900 "$@" > "$out/$name.txt" 2>&1; echo "exit $?" >> "$out/$name.txt"
  tail -n 12 "$out/$name.txt"
}
run engine_step python benchmarks/engine_step.py --cases d24-256,d24-1024 --stages 2,3 --steps 20
run gpu_step python benchmarks/gpu_step.py
run loader python benchmarks/loader_throughput.py --workers 1,2,4,8 --repeat 3
