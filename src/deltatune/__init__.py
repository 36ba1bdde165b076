"""deltatune: fine-tune pretrained language models — full, freeze, LoRA and the PEFT family.

Run `deltatune --help` for the command line; `make demo` for the default recipe.
"""

__version__ = "0.1.0"
