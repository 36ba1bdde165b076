"""Fine-tuning methods: one folder per method (config + layer), `registry.METHODS` lists them,
`core` applies, counts, merges, saves, loads and hot-swaps them.

    from deltatune.methods.core import apply_method, save_adapter, load_adapter
"""
