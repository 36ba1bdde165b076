"""Model and tokenizer loading: embedded defaults, local HF folders, hub ids."""
