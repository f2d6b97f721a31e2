"""TFDS task definitions for TPU VM users: c4/en and wikipedia, span corruption and causal LM.

The datasets must already be prepared (`tfds build` or a GCS `data_dir`); reading uses
`tfds.data_source` (ArrayRecord, no TensorFlow). Set the directory with the environment variable
TFDS_DATA_DIR or edit `DATA_DIR`. Nothing is opened until a task is used.
"""

import functools
import os

from t5x_lite.data import objectives, preprocessors
from t5x_lite.data.registry import Feature, Task, TaskRegistry
from t5x_lite.data.sources import TfdsSource

DATA_DIR = os.environ.get("TFDS_DATA_DIR") or None

DATASETS = {
  # name: (TFDS name, text field, our split -> TFDS split)
  "c4": ("c4/en:3.1.0", "text", {"train": "train", "validation": "validation"}),
  "wikipedia": ("wikipedia/20230601.en:1.0.0", "text", {"train": "train", "validation": ""}),
}


for short_name, (tfds_name, text_field, split_names) in DATASETS.items():
  source = TfdsSource(
    tfds_name,
    data_dir=DATA_DIR,
    text_field=text_field,
    split_names=split_names,
    validation_fraction=0.001,
  )
  TaskRegistry.add(
    Task(
      f"{short_name}_span_corruption",
      source=source,
      preprocessors=[
        preprocessors.tokenize,
        functools.partial(
          objectives.span_corruption, noise_density=0.15, mean_noise_span_length=3.0
        ),
      ],
      output_features={"inputs": Feature(), "targets": Feature()},
    )
  )
  TaskRegistry.add(
    Task(
      f"{short_name}_causal_lm",
      source=source,
      preprocessors=[preprocessors.tokenize, preprocessors.append_eos, objectives.causal_lm],
      output_features={"targets": Feature()},
    )
  )
