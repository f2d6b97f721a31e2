"""Readers: text modes, stable ids, and each kind of bad input counted under its reason."""

import gzip
import io
import json
import types
from collections import Counter

import pytest
import zstandard

from t5x_lite.curation.documents import Reader, bounded_lines, detect_format


def reader(**overrides):
  values = dict(
    format="auto",
    text_field="text",
    id_field="id",
    url_field="url",
    text_mode="file",
    max_document_bytes=1000,
    html_include_tables=False,
  )
  values.update(overrides)
  return Reader(types.SimpleNamespace(**values))


def read(path, **overrides):
  bad = Counter()
  docs = list(reader(**overrides).read(str(path), bad))
  return docs, dict(bad)


def test_text_modes_and_stable_ids(tmp_path):
  path = tmp_path / "notes.txt.gz"
  path.write_bytes(gzip.compress(b"first para line one\nline two\n\n\nsecond para\n\nthird\n"))
  docs, bad = read(path, text_mode="paragraph")
  assert [(d["id"], d["text"]) for d in docs] == [
    ("notes.txt.gz:0", "first para line one\nline two"),
    ("notes.txt.gz:1", "second para"),
    ("notes.txt.gz:2", "third"),
  ]
  assert bad == {}
  docs, _ = read(path, text_mode="line")
  assert [d["id"] for d in docs] == [
    "notes.txt.gz:0",
    "notes.txt.gz:1",
    "notes.txt.gz:4",
    "notes.txt.gz:6",
  ]
  docs, _ = read(path)
  assert len(docs) == 1 and docs[0]["id"] == "notes.txt.gz" and docs[0]["source"] == str(path)


def test_jsonl_fields_metadata_and_bad_records(tmp_path):
  lines = [
    json.dumps({"id": 7, "text": "hello", "url": "https://a.example", "lang": "en", "n": [1, 2]}),
    json.dumps({"text": "no id here"}),
    '{"id": "s", "text": "\\ud800 lone surrogate"}',
    json.dumps({"id": "null", "text": None}),
    json.dumps({"id": "blank", "text": "   \n "}),
    json.dumps(["not", "an", "object"]),
    json.dumps({"id": "long", "text": "x" * 2000}),
  ]
  path = tmp_path / "d.jsonl.zst"
  path.write_bytes(zstandard.ZstdCompressor().compress("\n".join(lines).encode()))
  docs, bad = read(path)
  assert [(d["id"], d["text"], d["url"], d["metadata"]) for d in docs] == [
    ("7", "hello", "https://a.example", {"lang": "en", "n": [1, 2]}),
    ("d.jsonl.zst:1", "no id here", None, {}),
  ]
  assert bad == {
    "invalid_utf8": 1,
    "text_not_a_string": 1,
    "empty_document": 1,
    "invalid_json": 1,
    "document_too_long": 1,
  }


def test_truncated_zstd_keeps_what_came_before(tmp_path):
  data = zstandard.ZstdCompressor().compress(
    b"".join(
      json.dumps({"id": str(i), "text": f"document {i}"}).encode() + b"\n" for i in range(20000)
    )
  )
  path = tmp_path / "t.jsonl.zst"
  path.write_bytes(data[: len(data) * 2 // 3])
  docs, bad = read(path)
  assert bad == {"truncated_zstd": 1}
  assert 0 < len(docs) < 20000 and [d["id"] for d in docs] == [str(i) for i in range(len(docs))]


def test_warc_conversion_records_and_format_detection(tmp_path):
  from warcio.warcwriter import WARCWriter

  path = tmp_path / "c.warc.wet.gz"
  with open(path, "wb") as f:
    writer = WARCWriter(f, gzip=True)
    record = writer.create_warc_record(
      "https://b.example/x",
      "conversion",
      payload=io.BytesIO(b"Plain text of the page."),
      warc_content_type="text/plain",
    )
    writer.write_record(record)
  docs, bad = read(path, format="warc")
  assert (
    bad == {}
    and docs[0]["text"] == "Plain text of the page."
    and docs[0]["url"] == "https://b.example/x"
  )
  assert [
    detect_format(p)
    for p in ("a.jsonl.gz", "b.json.zst", "c.parquet", "d.warc.gz", "e.htm", "f.txt")
  ] == ["jsonl", "jsonl", "parquet", "warc", "html", "text"]


@pytest.mark.parametrize("limit", [5, 10])
def test_bounded_lines_skip_long_lines_without_holding_them(limit):
  stream = io.BufferedReader(io.BytesIO(b"short\n" + b"y" * 100 + b"\nok\nlast"), buffer_size=8)
  assert list(bounded_lines(stream, limit)) == [b"short", None, b"ok", b"last"]
