"""Evaluation: `evaluator.py` (held-out metrics and task metrics, shared with the training loop)
and `checkpoint.py` (`t5x-lite eval`: a saved checkpoint on a task's validation split)."""
