#!/usr/bin/env bash
# Every GPU measurement the [engine] issue asks for, as one script for a lent GPU machine (no network).
#
# Here, before the session (once): build the wheels the GPU image lacks (its Python has torch, triton,
# transformers, sentencepiece, pyarrow, tensorboard, safetensors and numpy; see ENVIRONMENT_NOTES):
#     .venv/bin/pip wheel --no-deps --no-build-isolation -w wheels deepspeed==0.19.8
#     .venv/bin/pip download --no-deps -d wheels diffusers==0.42.1 webdataset==1.0.2 omegaconf==2.4.0 \
#         antlr4-python3-runtime==4.9.3 braceexpand==0.1.7 hjson==3.1.0 py-cpuinfo==9.0.0 msgpack ninja einops
# (encode_cost.py needs nothing more: diffusers is among them; transformers, sentencepiece, tokenizers
# and pillow are in the image.) Then run it through the device tool with `carry: ["wheels"]` and
# `timeout_s: 600` (one command may run 10 minutes; the timeouts below add up to 9 2/3, in the order of
# priority, so only the loader's rounds are at risk if every step runs to its limit):
#     bash benchmarks/gpu_session.sh           # results in $OUT (the device tool's folder), else ./gpu-results
#
# What comes back (the device tool returns at most 8 files of 16 MiB): gpu.txt, and per measurement
# NAME.txt (its output, the JSON line last but one, then its exit status), plus traces.tar (the
# profile's gzipped Chrome traces). Expected wall time per step on an H100/H200 (estimates: none of
# the new steps has run on a GPU yet), its timeout in brackets:
#     wheel install ~15 s; engine_step ~150-200 s [240]; engine_profile ~70 s [100];
#     encode_cost ~60-90 s [120]; gpu_step ~30 s [45]; loader ~60 s [75]; about 7 minutes in all
set -uo pipefail
out=${OUT:-gpu-results}
mkdir -p "$out"
python3 -m pip install --no-index --no-deps --quiet wheels/*.whl || { echo "wheel install failed" >&2; exit 1; }
export PYTHONPATH=$PWD DS_ACCELERATOR=cuda PYTHONUNBUFFERED=1  # a step cut by its timeout keeps what it printed
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
work=$(mktemp -d)  # shards and profiles that stay on the machine
run() {  # name, seconds, command...: each measurement keeps going when another fails or times out
  local name=$1 limit=$2; shift 2
  echo "== $name (timeout ${limit}s): $*"
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1; echo "exit $?" >> "$out/$name.txt"
  tail -n 12 "$out/$name.txt"
}
# The issue's figures first; the profile reuses its shards (--data) and profiles ZeRO-2 only.
run engine_step 240 python3 benchmarks/engine_step.py --cases d24-256,d24-1024 --stages 2,3 --steps 20 \
  --data "$work/shards"
run engine_profile 100 python3 benchmarks/engine_step.py --cases d24-256,d24-1024 --stages 2 --steps 3 --warmup 2 \
  --profile 2 --profile-dir "$work/profile" --data "$work/shards"
# The traces in one file (the tool's 8-file limit), the 1024 px one dropped if both pass 15 MiB.
traces=("$work"/profile/*.trace.json.gz)
if [ -e "${traces[0]}" ]; then
  tar -cf "$out/traces.tar" -C "$work/profile" $(cd "$work/profile" && ls *.trace.json.gz)
  if [ "$(stat -c %s "$out/traces.tar")" -gt $((15 * 1024 * 1024)) ]; then
    tar -cf "$out/traces.tar" -C "$work/profile" d24-256-z2.trace.json.gz
  fi
  ls -l "$out/traces.tar"
fi
# Divides by engine_step's d24 samples/s (no ratio, only the formula, if that run failed).
run encode_cost 120 python3 benchmarks/encode_cost.py --engine-json "$out/engine_step.txt" --work "$work/encode"
run gpu_step 45 python3 benchmarks/gpu_step.py
run loader 75 python3 benchmarks/loader_throughput.py --workers 1,2,4,8 --repeat 3
