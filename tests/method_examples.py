"""One representative config per fine-tuning method, shared by the tests that run every method
(the method matrix, the base-cache fingerprint, the recipe end-to-end run). A new method adds its
row here.

    from method_examples import EXAMPLES     # tests/ is on sys.path (tests/conftest.py lives there)
"""

EXAMPLES = {
    "full": {"name": "full"},
    "freeze": {"name": "freeze", "train_last_n_blocks": 1, "train_norm": True},
    "lora": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
    "lora_fa": {"name": "lora_fa", "r": 4, "alpha": 8, "targets": "all-linear"},
    # warm-up 0: the base weights move from the first step, so the step test sees them change
    "delta_lora": {"name": "delta_lora", "r": 4, "alpha": 8, "targets": "all-linear", "delta_warmup": 0},
    "dora": {"name": "dora", "r": 4, "alpha": 8, "targets": "all-linear"},
    # budget kept at init_r (the hooks run, nothing is pruned): a global budget may prune a whole
    # layer, whose E then ends where it started, which the step test would read as "not trained";
    # pruning is tested in tests/methods/test_adalora.py and against peft
    "adalora": {"name": "adalora", "init_r": 4, "target_r": 4, "alpha": 8, "targets": "all-linear"},
    "ia3": {"name": "ia3"},
    "prompt": {"name": "prompt", "num_virtual_tokens": 5},
    # the reparameterised forms (prefix_projection, encoder: lstm / mlp) save folded, as their table:
    # tests/methods/test_prefix.py runs them through these checks with the folded config expected
    "prefix": {"name": "prefix", "num_virtual_tokens": 4, "prefix_projection": False},
    "ptuning": {"name": "ptuning", "num_virtual_tokens": 3, "encoder": "none"},
    "ptuning_v2": {"name": "ptuning_v2", "num_virtual_tokens": 3},
    # 4-bit NF4 base (double quantisation) from the row's load_base: the `base` fixture
    "qlora": {"name": "qlora", "r": 4, "alpha": 8, "targets": "all-linear", "bits": 4},
    "adapter": {"name": "adapter", "placement": "houlsby", "reduction_factor": 8},
    "bitfit": {"name": "bitfit"},
    # a seeded random mask: the Fisher mask needs data first (tests/methods/test_fishmask.py)
    "fishmask": {"name": "fishmask", "keep_ratio": 0.05, "mask": "random"},
    "said": {"name": "said", "d": 100},
}
