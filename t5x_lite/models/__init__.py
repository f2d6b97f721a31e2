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
from t5x_lite.models.classifiers import ClassifierModel
from t5x_lite.models.config import ModelConfig
from t5x_lite.models.decoder import DecoderModel
from t5x_lite.models.encoder import EncoderModel
from t5x_lite.models.encoder_decoder import EncoderDecoderModel

FAMILIES: dict[str, type[BaseModel]] = {
  "decoder": DecoderModel,
  "encoder": EncoderModel,
  "encoder_decoder": EncoderDecoderModel,
}


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
  if config.family not in FAMILIES:
    raise ValueError(
      f"model.family={config.family!r}: expected one of {', '.join(sorted(FAMILIES))}"
    )
  if config.head:  # a fine-tuning head on the family's backbone (models/classifiers.py)
    backbone = FAMILIES[config.family](dataclasses.replace(config, head=""))
    return ClassifierModel(config, backbone)
  return FAMILIES[config.family](config)


__all__ = ["FAMILIES", "BaseModel", "ModelConfig", "build_model", "to_model_config"]
