"""The curation stages as pure functions, shared by the local runner and the Beam pipeline.

  stage 1, per input file ("unit"): read -> normalise -> language ID -> Gopher repetition ->
    Gopher quality -> C4 -> FineWeb -> PII masking -> decontamination; for each survivor its
    record and dedup keys (exact key [2] uint64, LSH band keys [bands] uint64);
  stage 2, global: `dedup.clusters` over the keys of every unit, in unit order;
  stage 3, per unit: drop duplicates, add cluster attributes, write the shard.

`Stats` counts documents, bytes and words into and out of every stage, removals per rule with
a few examples, bad input per reason and PII replacements; stats of units merge in unit order,
so the report does not depend on how units were spread over workers.
"""

from __future__ import annotations

import json
import logging
import time
import types
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from t5x_lite.curation import filters, langid
from t5x_lite.curation.decontam import Contamination
from t5x_lite.curation.dedup import NO_SHINGLES, MinHasher, exact_key, ngram_hashes, word_hashes
from t5x_lite.curation.documents import Reader
from t5x_lite.curation.text import exact_key_text, mask_pii, normalize, simplify, split_words

STAGES = (
  "read",
  "normalize",
  "langid",
  "gopher_repetition",
  "gopher_quality",
  "c4",
  "fineweb",
  "pii",
  "decontamination",
  "exact_dedup",
  "near_dedup",
)
_FIELDS = ("docs_in", "bytes_in", "words_in", "docs_out", "bytes_out", "words_out")
EXAMPLE_CHARS = 300


class Stats:
  """Funnel counts, removals per rule (+ examples), bad input, PII counts of some units."""

  def __init__(self, examples_per_rule: int = 3):
    self.examples_per_rule = examples_per_rule
    self.stages = {s: dict.fromkeys(_FIELDS, 0) for s in STAGES}
    self.removed: dict[str, int] = {}
    self.examples: dict[str, list[dict[str, Any]]] = {}
    self.bad_input: Counter = Counter()
    self.pii = {"documents": 0, "emails": 0, "ips": 0}
    self.c4_lines_dropped = 0

  def passed(self, stage: str, before: tuple[int, int], after: tuple[int, int]) -> None:
    s = self.stages[stage]
    s["docs_in"] += 1
    s["bytes_in"] += before[0]
    s["words_in"] += before[1]
    s["docs_out"] += 1
    s["bytes_out"] += after[0]
    s["words_out"] += after[1]

  def removed_by(
    self, stage: str, rule: str, value: float, size: tuple[int, int], doc: dict, note: str = ""
  ) -> None:
    s = self.stages[stage]
    s["docs_in"] += 1
    s["bytes_in"] += size[0]
    s["words_in"] += size[1]
    self.removed[rule] = self.removed.get(rule, 0) + 1
    examples = self.examples.setdefault(rule, [])
    if len(examples) < self.examples_per_rule:
      example = {
        "id": doc["id"],
        "value": round(float(value), 6),
        "text": doc["text"][:EXAMPLE_CHARS],
      }
      if note:
        example["note"] = note
      examples.append(example)

  def merge(self, other: Stats) -> None:
    """Adds `other` (a later unit) to these counts; examples fill up in unit order."""
    for stage, fields in other.stages.items():
      for field, value in fields.items():
        self.stages[stage][field] += value
    for rule, count in other.removed.items():
      self.removed[rule] = self.removed.get(rule, 0) + count
    for rule, examples in other.examples.items():
      mine = self.examples.setdefault(rule, [])
      mine.extend(examples[: max(0, self.examples_per_rule - len(mine))])
    self.bad_input.update(other.bad_input)
    for key, value in other.pii.items():
      self.pii[key] += value
    self.c4_lines_dropped += other.c4_lines_dropped

  def to_json(self) -> dict[str, Any]:
    return {
      "stages": self.stages,
      "removed": dict(sorted(self.removed.items())),
      "examples": dict(sorted(self.examples.items())),
      "bad_input": dict(sorted(self.bad_input.items())),
      "pii": self.pii,
      "c4_lines_dropped": self.c4_lines_dropped,
    }

  @classmethod
  def from_json(cls, data: dict[str, Any], examples_per_rule: int) -> Stats:
    stats = cls(examples_per_rule)
    for stage, fields in data["stages"].items():
      stats.stages[stage].update(fields)
    stats.removed = dict(data["removed"])
    stats.examples = {k: list(v) for k, v in data["examples"].items()}
    stats.bad_input = Counter(data["bad_input"])
    stats.pii = dict(data["pii"])
    stats.c4_lines_dropped = data["c4_lines_dropped"]
    return stats


def _size(text: str) -> tuple[int, int]:
  return len(text.encode("utf-8")), len(text.split())


def _namespace(config: Any) -> Any:
  """Plain attribute access for the hot loop (ConfigDict lookups cost ~1 us each)."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if isinstance(config, dict):
    return types.SimpleNamespace(**{k: _namespace(v) for k, v in config.items()})
  return config


class Curator:
  """Stage 1 for one document at a time; built once per worker from the config."""

  def __init__(
    self,
    config: Any,
    contamination: Contamination | None = None,
    timings: dict[str, float] | None = None,
  ):
    """`timings`: when given, CPU seconds spent in each stage are added to it (benchmarks)."""
    self.timings = timings
    self._clock = 0.0
    self.config = config = _namespace(config)
    self.reader = Reader(config.reader)
    self.languages = set(config.langid.languages)
    self.predict = langid.identifier(config.langid.model) if config.langid.enabled else None
    d = config.dedup
    self.minhasher = MinHasher(d.ngram, d.bands, d.rows, d.seed)
    self.contamination = contamination

  def unit(self, path: str, stats: Stats) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """(record, exact key [2], band keys [bands]) of each surviving document of one file."""
    bad: Counter = Counter()
    self._tick(None)
    for doc in self.reader.read(path, bad):
      self._tick("read")
      try:
        result = self.document(doc, stats)
      except Exception:  # noqa: BLE001 - one odd document must not stop a long run
        logging.exception("curation: document %r of %s failed; skipped", doc.get("id"), path)
        bad["processing_error"] += 1
        continue
      if result is not None:
        yield result
    stats.bad_input.update(bad)

  def _tick(self, stage: str | None) -> None:
    """Charges the CPU time since the last tick to `stage` (when timing)."""
    if self.timings is not None:
      now = time.process_time()
      if stage is not None:
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._clock
      self._clock = now

  def document(self, doc: dict, stats: Stats) -> tuple[dict, np.ndarray, np.ndarray] | None:
    try:
      return self._document(doc, stats)
    finally:
      self._tick("other")

  def _document(self, doc: dict, stats: Stats) -> tuple[dict, np.ndarray, np.ndarray] | None:
    c = self.config
    tick = self._tick

    def removed(stage, *args, **kwargs):
      tick(stage)
      stats.removed_by(stage, *args, **kwargs)

    text = doc["text"]
    size = _size(text)
    stats.passed("read", size, size)

    text = normalize(text, c.normalize)
    if not text:
      removed("normalize", "normalize.empty", 0.0, size, doc)
      return None
    new_size = _size(text) if text is not doc["text"] else size
    stats.passed("normalize", size, new_size)
    tick("normalize")
    size = new_size
    doc = {**doc, "text": text}
    attributes: dict[str, Any] = {}

    if self.predict is not None:
      language, score = self.predict(text)
      attributes["language"], attributes["language_score"] = language, round(score, 4)
      if self.languages and language not in self.languages:
        removed("langid", "langid.languages", score, size, doc, note=language)
        return None
      if score < c.langid.threshold:
        removed("langid", "langid.threshold", score, size, doc, note=language)
        return None
      stats.passed("langid", size, size)
      tick("langid")

    words = None
    if c.gopher_repetition.enabled or c.gopher_quality.enabled:
      words = split_words(text)
    if c.gopher_repetition.enabled:
      failure = filters.gopher_repetition(text, c.gopher_repetition, words)
      if failure:
        removed("gopher_repetition", failure[0], failure[1], size, doc)
        return None
      stats.passed("gopher_repetition", size, size)
      tick("gopher_repetition")

    if c.gopher_quality.enabled:
      failure = filters.gopher_quality(text, c.gopher_quality, words)
      if failure:
        removed("gopher_quality", failure[0], failure[1], size, doc)
        return None
      stats.passed("gopher_quality", size, size)
      tick("gopher_quality")

    if c.c4.enabled:
      failure, new_text, dropped = filters.c4(text, c.c4)
      if failure:
        removed("c4", failure[0], failure[1], size, doc)
        return None
      stats.c4_lines_dropped += dropped
      attributes["c4_lines_dropped"] = dropped
      if new_text != text:
        text, words = new_text, None
        doc["text"] = text
        new_size = _size(text)
        stats.passed("c4", size, new_size)
        size = new_size
      else:
        stats.passed("c4", size, size)

    tick("c4")
    if c.fineweb.enabled:
      failure = filters.fineweb(text, c.fineweb, words)
      if failure:
        removed("fineweb", failure[0], failure[1], size, doc)
        return None
      stats.passed("fineweb", size, size)
      tick("fineweb")

    if c.pii.enabled:
      text, emails, ips = mask_pii(text, c.pii)
      if emails or ips:
        stats.pii["documents"] += 1
        stats.pii["emails"] += emails
        stats.pii["ips"] += ips
        attributes["pii_emails"], attributes["pii_ips"] = emails, ips
        doc["text"] = text
        new_size = _size(text)
        stats.passed("pii", size, new_size)
        size = new_size
      else:
        stats.passed("pii", size, size)

    tick("pii")
    hashes = word_hashes(simplify(text))
    if self.contamination is not None:
      overlaps = self.contamination.overlaps(hashes)
      if overlaps:
        removed("decontamination", "decontamination.ngram", overlaps, size, doc)
        return None
      stats.passed("decontamination", size, size)
      tick("decontamination")

    attributes["words"] = size[1]
    shingles = ngram_hashes(hashes, c.dedup.ngram)
    if len(shingles):
      bands = self.minhasher.band_keys(self.minhasher.signature(shingles)[None])[0]
    else:
      bands = np.full(c.dedup.bands, NO_SHINGLES, np.uint64)
    exact = np.array(exact_key(exact_key_text(text)), np.uint64)
    tick("dedup_signature")
    record = {
      "id": doc["id"],
      "text": text,
      "source": doc["source"],
      "url": doc["url"],
      "metadata": doc["metadata"],
      "attributes": attributes,
    }
    return record, exact, bands


def dedup_unit(
  records: Iterator[dict],
  decision: np.ndarray,
  representative: np.ndarray,
  cluster_size: np.ndarray,
  stats: Stats,
) -> Iterator[dict]:
  """Stage 3 for one unit: the records that stay, with `cluster_id` and `cluster_size`.

  decision/representative/cluster_size: this unit's slice of `dedup.clusters` (representative
  is a global position; -1 when it is a document of the reference corpus).
  """
  for k, record in enumerate(records):
    size = _size(record["text"])
    if decision[k] == 1:
      stats.removed_by("exact_dedup", "exact_dedup", cluster_size[k], size, record)
      continue
    stats.passed("exact_dedup", size, size)
    if decision[k] == 2:
      note = "duplicate of the reference corpus" if representative[k] < 0 else ""
      stats.removed_by("near_dedup", "near_dedup", cluster_size[k], size, record, note=note)
      continue
    stats.passed("near_dedup", size, size)
    record["attributes"]["cluster_id"] = int(representative[k])
    record["attributes"]["cluster_size"] = int(cluster_size[k])
    yield record


def encode_record(record: dict) -> bytes:
  """The JSON bytes of a record as stored in the shards (stable key order, UTF-8)."""
  return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
