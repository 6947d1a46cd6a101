"""Converts a GGUF checkpoint into a safetensors folder vLLM can serve.

Runs with the ENGINE virtualenv's python (it has torch, transformers, gguf, safetensors); it must
import nothing from switchboard. Usage: ``python convert_gguf.py GGUF_FILE OUT_DIR``.

transformers dequantizes the GGUF weights on load (``gguf_file=``), but ``save_pretrained`` refuses
a model that came from a quantized GGUF, so the state dict is written with safetensors directly.
``lm_head.weight`` is dropped when the embeddings are tied (safetensors refuses shared tensors, and
vLLM ties them again from the config), and ``quantization_config`` is left out of the config so vLLM
does not look for a GGUF quantization method.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {
        name: tensor.detach().contiguous()
        for name, tensor in model.state_dict().items()
        if not (tied and name == "lm_head.weight")
    }
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    # A GGUF-born config has no architectures; vLLM picks its model class from them.
    config["architectures"] = config.get("architectures") or [type(model).__name__]
    config["dtype"] = config["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    print(f"wrote {len(state)} tensors to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: convert_gguf.py GGUF_FILE OUT_DIR")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
