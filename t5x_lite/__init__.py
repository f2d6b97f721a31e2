"""t5x_lite: pre-train, fine-tune, evaluate and run BERT-, GPT- and T5-style models in JAX."""


def load(workdir: str, step: int | None = None, batch_size: int = 32):
  """The model of a run's checkpoint, ready for inference (see t5x_lite/inference.py)."""
  from t5x_lite import inference  # noqa: PLC0415 - importing the package must not import jax

  return inference.load(workdir, step=step, batch_size=batch_size)


__all__ = ["load"]
