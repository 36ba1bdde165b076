"""The one table of fine-tuning methods: `method.name` -> the `Method` that implements it.

    from deltatune.methods.registry import METHODS, get_method
    method = METHODS["lora"]                    # config_cls, install, peft twin, ...
    installed = method.install(model, method.config_cls(r=8), InstallContext())

A new method is one folder under `deltatune/methods/` (config + layer + `METHOD`), one row here,
and one row in the shared test matrix (tests/methods/test_method_matrix.py). Nothing else in
deltatune knows method names: the config's `method:` section is the union of the config classes
below (`MethodConfig`, discriminated by `name`), and core, the training loop, export and
serving only call the protocol in `deltatune.methods.protocol`.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, Field

from deltatune.errors import DeltatuneError
from deltatune.methods import freeze, full, ia3, lora, prompt
from deltatune.methods import dora
from deltatune.methods import lora_fa
from deltatune.methods import delta_lora
from deltatune.methods import adalora
from deltatune.methods import qlora
from deltatune.methods import adapter
from deltatune.methods import prefix, ptuning, ptuning_v2
from deltatune.methods import bitfit, fishmask, said
from deltatune.methods.protocol import Method

METHODS: dict[str, Method] = {
    "full": full.METHOD,
    "freeze": freeze.METHOD,
    "lora": lora.METHOD,
    "lora_fa": lora_fa.METHOD,
    "delta_lora": delta_lora.METHOD,
    "dora": dora.METHOD,
    "adalora": adalora.METHOD,
    "qlora": qlora.METHOD,
    "ia3": ia3.METHOD,
    "prompt": prompt.METHOD,
    "prefix": prefix.METHOD,
    "ptuning": ptuning.METHOD,
    "ptuning_v2": ptuning_v2.METHOD,
    "adapter": adapter.METHOD,
    "bitfit": bitfit.METHOD,
    "fishmask": fishmask.METHOD,
    "said": said.METHOD,
}

# The config's `method:` section: exactly one of the methods' config classes, picked by `name`.
MethodConfig = Annotated[Union[tuple(m.config_cls for m in METHODS.values())], Field(discriminator="name")]


def get_method(cfg_or_name: BaseModel | dict | str) -> Method:
    """The Method for a method config, its dict dump, or its name."""
    if isinstance(cfg_or_name, str):
        name = cfg_or_name
    elif isinstance(cfg_or_name, dict):
        name = cfg_or_name.get("name")
    else:
        name = getattr(cfg_or_name, "name", None)
    if name not in METHODS:
        raise DeltatuneError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
