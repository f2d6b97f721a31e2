"""An example registry file: a user's own corpus as a causal-LM task, a custom preprocessor and a
mixture with the built-in pydoc task.

Use it with
  t5x-lite train --config configs/gpt.py:tiny --config.data.task=my_mixture \
      --config.data.task_modules=docs/examples/my_tasks.py
The corpus is every `*.txt` file under $MY_CORPUS_DIR (default: ./my_corpus), one document per
blank-line-separated paragraph.
"""

import functools
import os

import numpy as np

from t5x_lite.data import objectives, preprocessors, ragged, sources
from t5x_lite.data.registry import Feature, Mixture, MixtureRegistry, Task, TaskRegistry

CORPUS_DIR = os.environ.get("MY_CORPUS_DIR", "my_corpus")


def drop_short_documents(examples, context, *, min_tokens: int = 8):
  """A custom preprocessor: the same explicit signature as the built-in ones.

  `examples` is a dict of columns over a block of examples (token features are `Ragged`);
  return the examples to keep. Work on whole columns with numpy, not per example.
  """
  del context  # unused: no vocabulary or lengths needed here
  keep = np.flatnonzero(examples["targets"].lengths >= min_tokens)
  return ragged.take_examples(examples, keep)


TaskRegistry.add(
  Task(
    "my_causal_lm",
    source=sources.TextFileSource(
      os.path.join(CORPUS_DIR, "**", "*.txt"), mode="paragraph", validation_fraction=0.1
    ),
    preprocessors=[
      preprocessors.tokenize,  # 'text' -> 'targets' with the run's vocabulary
      functools.partial(drop_short_documents, min_tokens=8),
      preprocessors.append_eos,  # on the output features with add_eos=True
      objectives.causal_lm,  # cut into pieces of data.feature_lengths['targets']
    ],
    output_features={"targets": Feature(add_eos=True)},
  )
)

MixtureRegistry.add(
  Mixture(
    "my_mixture",
    ["my_causal_lm", "pydoc_causal_lm"],
    rates={
      "my_causal_lm": 3.0,
      "pydoc_causal_lm": 1.0,
    },
  )
)
