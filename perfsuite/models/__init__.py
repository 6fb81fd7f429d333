"""What is measured: the reference GPT-2, its adapters and attention, caches, decoding, checkpoints and weights."""
