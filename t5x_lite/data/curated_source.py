"""`CuratedSource(dir)`: the output directory of `t5x-lite curate` as a Task source.

The directory's manifest lists its ArrayRecord shards (one JSON record per document, with
`text` and per-document attributes) and `index/part-NNNNN.ids` holds the document ids, so the
train/validation split is the stable hash of each document's own id and needs no text read.
Reads are random access (grain's ArrayRecordDataSource), so the corpus may exceed memory.

  from t5x_lite.data.curated_source import CuratedSource
  registry.TaskRegistry.add(Task("my_corpus", CuratedSource("corpus/"), [...], {...}))
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from t5x_lite.data import DataError
from t5x_lite.data.sources import DocumentSource

MANIFEST = "manifest.json"


class CuratedSource(DocumentSource):
  """Documents of a curated directory; `document(i)` also returns its `attributes`."""

  def __init__(self, directory: str, validation_fraction: float = 0.05):
    super().__init__(validation_fraction)
    self.directory = directory
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
      raise DataError(
        f"CuratedSource({directory!r}): no {MANIFEST} (not a finished `t5x-lite curate` output)"
      )
    with open(path, encoding="utf-8") as f:
      self.manifest = json.load(f)
    if self.manifest.get("format") != "t5x_lite.curated":
      raise DataError(f"CuratedSource({directory!r}): {path} is not a curated-corpus manifest")
    self.shards = [s["name"] for s in self.manifest["shards"]]
    counts = [int(s["documents"]) for s in self.manifest["shards"]]
    self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    missing = [
      s for s in self.shards if not os.path.exists(os.path.join(directory, s + ".array_record"))
    ]
    if missing:
      raise DataError(
        f"CuratedSource({directory!r}): shard {missing[0]}.array_record is missing (the "
        "corpus was curated with output.array_record=false, or files were removed)"
      )
    self._records = None
    self._id_list: list[str] | None = None

  def _ids(self) -> list[str]:
    if self._id_list is None:
      ids: list[str] = []
      for shard in self.shards:
        with open(os.path.join(self.directory, "index", shard + ".ids"), encoding="utf-8") as f:
          ids.extend(line.rstrip("\n") for line in f)
      if len(ids) != self._offsets[-1]:
        raise DataError(
          f"CuratedSource({self.directory!r}): {len(ids)} ids for {self._offsets[-1]} documents"
        )
      self._id_list = ids
    return self._id_list

  def num_documents(self) -> int:
    return int(self._offsets[-1])

  def record(self, index: int) -> dict[str, Any]:
    """The full stored record of document `index`: id, text, source, url, metadata, attributes."""
    if self._records is None:
      import grain

      paths = [os.path.join(self.directory, s + ".array_record") for s in self.shards]
      self._records = grain.sources.ArrayRecordDataSource(paths)
    return json.loads(self._records[index])

  def _read(self, index: int) -> dict[str, str]:
    record = self.record(index)
    return {"id": record["id"], "text": record["text"]}

  def __repr__(self) -> str:
    return f"CuratedSource({self.directory!r})"
