"""Curation: raw crawled text -> a clean, deduplicated, language-identified corpus.

Stages (each a pure function of its input shard and the config, so the local runner and the
Apache Beam pipeline give byte-identical output):

  read (txt, JSONL(.gz/.zst), Parquet, WARC/HTML) -> normalise (NFC, ftfy, control characters,
  whitespace) -> language ID -> quality rules (Gopher, C4, FineWeb) -> PII masking ->
  decontamination (13-grams of eval splits) -> exact dedup -> MinHash-LSH near dedup ->
  ArrayRecord shards + manifest + yield report.

`t5x-lite curate --input 'crawl/*.warc.gz' --out corpus/ --config curate.py:web_en`; the output
directory is a Task source (`t5x_lite.data.curated_source.CuratedSource`). See docs/curation.md.
"""


class CurationError(ValueError):
  """A curation problem the user can fix (bad config field, unusable output directory)."""
