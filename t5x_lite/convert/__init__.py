"""Checkpoint conversion between t5x_lite and other libraries (convert/hf/: Hugging Face)."""
