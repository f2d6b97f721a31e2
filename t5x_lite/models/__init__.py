"""Model families: `build_model(config.model) -> BaseModel` (see models/base.py for the API).

'decoder'          GPT-style causal LM           (models/decoder.py)
'encoder'          BERT-style MLM (+ NSP)        (models/encoder.py)
'encoder_decoder'  T5-style text-to-text         (models/encoder_decoder.py)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from t5x_lite.models.base import BaseModel
from t5x_lite.models.config import ModelConfig


def _families() -> dict[str, type[BaseModel]]:
  from t5x_lite.models.decoder import DecoderModel

  families: dict[str, type[BaseModel]] = {"decoder": DecoderModel}
  try:
    from t5x_lite.models.encoder import EncoderModel

    families["encoder"] = EncoderModel
  except ImportError:
    pass
  try:
    from t5x_lite.models.encoder_decoder import EncoderDecoderModel

    families["encoder_decoder"] = EncoderDecoderModel
  except ImportError:
    pass
  return families


def to_model_config(model_config: ModelConfig | Mapping[str, Any]) -> ModelConfig:
  """A ModelConfig from a ModelConfig, a `config.model` ConfigDict or a plain dict."""
  if isinstance(model_config, ModelConfig):
    return model_config
  values = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  known = {field.name for field in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"model config: unknown fields {unknown} (known: {sorted(known)})")
  return ModelConfig(**values)


def build_model(model_config: ModelConfig | Mapping[str, Any]) -> BaseModel:
  """The model of `config.model.family`, holding the frozen ModelConfig."""
  config = to_model_config(model_config)
  if config.head:  # a fine-tuning head on the family's backbone (models/classifiers.py)
    from t5x_lite.models.classifiers import ClassifierModel  # noqa: PLC0415

    return ClassifierModel(config)
  families = _families()
  if config.family not in families:
    raise ValueError(
      f"model.family={config.family!r}: expected one of {', '.join(sorted(families))}"
    )
  return families[config.family](config)


__all__ = ["BaseModel", "ModelConfig", "build_model", "to_model_config"]
