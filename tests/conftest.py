"""Session-wide test environment: CPU DeepSpeed, offline Hugging Face, one thread per rank.

Set here (not only in the Makefile) so a bare `pytest` from the venv behaves like `make test`.
"""
import os

for _k, _v in {
    "DS_ACCELERATOR": "cpu",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)
