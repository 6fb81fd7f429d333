"""Subspace similarity (LoRA paper §7.2): the φ maths, peft checkpoint reading, and comparing two checkpoints."""
