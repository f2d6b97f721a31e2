"""Decontamination: drop documents that share a word n-gram (13 by default, as GPT-3) with the
evaluation splits of registered tasks.

`eval_texts` is the one place that knows how tasks are looked up in the registry, so it can be
re-pointed when the registry moves. Texts are compared in the same simplified form as MinHash
(lower case, no punctuation, digits -> 0), so formatting does not hide an overlap. An eval
text shorter than n words has no n-gram and protects nothing (short texts would otherwise
match common phrases).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from t5x_lite.curation import CurationError
from t5x_lite.curation.dedup import ngram_hashes, word_hashes
from t5x_lite.curation.text import simplify
from t5x_lite.data import pipeline, registry


def eval_texts(
  tasks: Sequence[str], splits: Sequence[str], task_modules: Sequence[str] = ()
) -> Iterator[tuple[str, str]]:
  """(task name, text) of every document in `splits` of each registered task that has them."""
  pipeline.import_tasks(tuple(task_modules))  # the built-in tasks and the config's files
  for name in tasks:
    try:
      task = registry.TaskRegistry.get(name)
    except registry.RegistryError as e:
      raise CurationError(f"config.decontamination.tasks: {e}") from None
    found = [s for s in splits if s in task.source.splits]
    if not found:
      raise CurationError(
        f"config.decontamination.tasks: task {name!r} has none of the splits {tuple(splits)} "
        f"(it has {task.source.splits})"
      )
    for split in found:
      documents = task.source.split(split)
      for i in range(len(documents)):
        yield name, documents[i]["text"]


def text_ngrams(text: str, n: int) -> np.ndarray:
  """[windows] uint64 hashes of the word n-grams of `text` (simplified)."""
  return ngram_hashes(word_hashes(simplify(text)), n)


class Contamination:
  """A sorted set of eval n-gram hashes; `overlaps(text)` counts a document's shared n-grams."""

  def __init__(self, ngrams: np.ndarray, n: int, sources: dict[str, int]):
    self.ngrams = np.unique(ngrams)
    self.n = n
    self.sources = sources  # task -> eval documents read

  @classmethod
  def from_texts(cls, texts: Iterator[tuple[str, str]], n: int) -> Contamination:
    parts, sources = [], {}
    for task, text in texts:
      sources[task] = sources.get(task, 0) + 1
      parts.append(text_ngrams(text, n))
    ngrams = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    return cls(ngrams, n, sources)

  @classmethod
  def from_config(cls, config) -> Contamination | None:
    d = config.decontamination
    if not d.tasks:
      return None
    return cls.from_texts(eval_texts(d.tasks, d.splits, d.task_modules), d.ngram)

  def overlaps(self, simplified_words: np.ndarray) -> int:
    """Number of the document's n-grams found in the eval set ([words] uint64 word hashes)."""
    if len(self.ngrams) == 0:
      return 0
    grams = ngram_hashes(simplified_words, self.n)
    if len(grams) == 0:
      return 0
    at = np.searchsorted(self.ngrams, grams)
    at[at == len(self.ngrams)] = 0
    return int(np.count_nonzero(self.ngrams[at] == grams))
