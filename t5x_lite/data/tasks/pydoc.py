"""Tasks on the default corpus (Python's bundled documentation), one per objective.

Feature lengths come from config.data.feature_lengths:
  pydoc_causal_lm        {'targets': L}                    GPT
  pydoc_prefix_lm        {'inputs': Li, 'targets': Lt}     decoder prefix LM or T5
  pydoc_span_corruption  {'inputs': 512, 'targets': 114}   T5 (targets from span_corruption_lengths)
  pydoc_mlm              {'inputs': L}                     BERT (MLM + NSP)
  pydoc_mlm_whole_word   {'inputs': L}                     the same, whole-word masking
  pydoc_bart             {'inputs': Li, 'targets': Lt}     BART-style denoising (encoder-decoder)
  pydoc_roberta_mlm      {'inputs': L}                     RoBERTa (FULL-SENTENCES, MLM, no NSP)
  pydoc_albert           {'inputs': L}                     ALBERT (MLM + sentence-order prediction)
"""

import functools

from t5x_lite.data import denoising, objectives, preprocessors
from t5x_lite.data.registry import Feature, Task, TaskRegistry
from t5x_lite.data.sources import PydocSource

SOURCE = PydocSource()
TARGETS = {"targets": Feature(add_eos=True)}
INPUTS_AND_TARGETS = {"inputs": Feature(add_eos=False), "targets": Feature(add_eos=True)}


TaskRegistry.add(
  Task(
    "pydoc_causal_lm",
    source=SOURCE,
    preprocessors=[
      preprocessors.tokenize,
      preprocessors.append_eos,
      objectives.causal_lm,
    ],
    output_features=TARGETS,
  )
)

TaskRegistry.add(
  Task(
    "pydoc_prefix_lm",
    source=SOURCE,
    preprocessors=[
      preprocessors.tokenize,
      objectives.prefix_lm,
      preprocessors.append_eos,  # targets only (inputs: add_eos=False)
    ],
    output_features=INPUTS_AND_TARGETS,
  )
)

TaskRegistry.add(
  Task(
    "pydoc_span_corruption",
    source=SOURCE,
    preprocessors=[
      preprocessors.tokenize,
      functools.partial(objectives.span_corruption, noise_density=0.15, mean_noise_span_length=3.0),
    ],
    output_features={"inputs": Feature(add_eos=True), "targets": Feature(add_eos=True)},
  )
)

TaskRegistry.add(
  Task(
    "pydoc_mlm",
    source=SOURCE,
    preprocessors=[
      preprocessors.tokenize,
      objectives.nsp_pairs,
      functools.partial(objectives.mlm, mask_rate=0.15),
    ],
    output_features={
      "inputs": Feature(add_eos=False),
      "targets": Feature(add_eos=False),
      "token_type_ids": Feature(add_eos=False),
    },
  )
)

TaskRegistry.add(
  Task(
    "pydoc_mlm_whole_word",  # BERT's whole-word masking: all pieces of a word, or none
    source=SOURCE,
    preprocessors=[
      preprocessors.tokenize,
      objectives.nsp_pairs,
      functools.partial(objectives.mlm, mask_rate=0.15, whole_word=True),
    ],
    output_features={
      "inputs": Feature(add_eos=False),
      "targets": Feature(add_eos=False),
      "token_type_ids": Feature(add_eos=False),
    },
  )
)

TaskRegistry.add(
  Task(
    "pydoc_bart",
    source=SOURCE,
    preprocessors=[
      preprocessors.tokenize,
      functools.partial(denoising.bart_denoise, mask_ratio=0.3, poisson_lambda=3.0),
    ],
    output_features=INPUTS_AND_TARGETS,
  )
)

# RoBERTa: FULL-SENTENCES rows (may cross documents), MLM without NSP, a new mask every epoch.
TaskRegistry.add(
  Task(
    "pydoc_roberta_mlm",
    source=SOURCE,
    preprocessors=[
      preprocessors.tokenize,
      objectives.full_sentences,
      functools.partial(objectives.mlm, mask_rate=0.15),
    ],
    output_features={"inputs": Feature(add_eos=False), "targets": Feature(add_eos=False)},
  )
)

# ALBERT: MLM + sentence-order prediction (two consecutive segments, in order or swapped).
TaskRegistry.add(
  Task(
    "pydoc_albert",
    source=SOURCE,
    preprocessors=[
      preprocessors.tokenize,
      objectives.sop_pairs,
      functools.partial(objectives.mlm, mask_rate=0.15),
    ],
    output_features={
      "inputs": Feature(add_eos=False),
      "targets": Feature(add_eos=False),
      "token_type_ids": Feature(add_eos=False),
    },
  )
)
