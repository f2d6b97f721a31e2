"""Outputs: shards, the manifest and the yield report of a curated directory.

  DIR/part-NNNNN.array_record   one JSON record per document (`encode_record`)
  DIR/part-NNNNN.jsonl          the same records as JSON lines (output.jsonl)
  DIR/index/part-NNNNN.ids      document ids, one a line (CuratedSource's split hash uses them)
  DIR/index/part-NNNNN.exact.npy, .bands.npy   dedup keys, to dedup a later corpus against this
  DIR/report.json, report.md, funnel.png       the yield report
  DIR/manifest.json             written last: the config, inputs, shards and totals

Every file is a pure function of the input and the config (no times, no host names), so a
rerun, a resumed run, another worker count or the Beam runner gives the same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from t5x_lite.curation import CurationError
from t5x_lite.curation.pipeline import STAGES, Stats, encode_record

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def shard_name(unit: int) -> str:
  return f"part-{unit:05d}"


def atomic_write_bytes(path: str, data: bytes) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def atomic_write_json(path: str, data: Any) -> None:
  atomic_write_bytes(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode())


def atomic_save_npy(path: str, array: np.ndarray) -> None:
  tmp = path + ".tmp.npy"
  np.save(tmp, array)
  os.replace(tmp, path)


def write_shard(
  out_dir: str,
  unit: int,
  records: Iterable[tuple[int, dict]],
  keys: tuple[np.ndarray, np.ndarray],
  config: Any,
) -> dict[str, Any]:
  """Writes one unit's kept records; returns its manifest entry (JSON-able).

  records: (position in the unit, record) of the kept documents, in order.
  keys: (exact [n, 2], bands [n, B]) uint64 of every document of the unit (kept ones stored).
  The ArrayRecord file is renamed into place last, so its presence marks the shard done.
  """
  from array_record.python import array_record_module

  name = shard_name(unit)
  index_dir = os.path.join(out_dir, "index")
  os.makedirs(index_dir, exist_ok=True)
  final = os.path.join(out_dir, name + ".array_record")
  tmp = final + ".tmp"
  writer = (
    array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    if config.output.array_record
    else None
  )
  jsonl = open(os.path.join(out_dir, name + ".jsonl.tmp"), "wb") if config.output.jsonl else None
  ids, positions, size = [], [], 0
  for position, record in records:
    data = encode_record(record)
    size += len(record["text"].encode("utf-8"))
    if writer:
      writer.write(data)
    if jsonl:
      jsonl.write(data + b"\n")
    ids.append(record["id"].replace("\n", " "))
    positions.append(position)
  if jsonl:
    jsonl.close()
    os.replace(jsonl.name, os.path.join(out_dir, name + ".jsonl"))
  exact, bands = keys
  kept = np.array(positions, np.int64)
  atomic_write_bytes(
    os.path.join(index_dir, name + ".ids"), "".join(i + "\n" for i in ids).encode()
  )
  atomic_save_npy(os.path.join(index_dir, name + ".exact.npy"), exact[kept].reshape(-1, 2))
  atomic_save_npy(
    os.path.join(index_dir, name + ".bands.npy"), bands[kept].reshape(-1, config.dedup.bands)
  )
  if writer:
    writer.close()
    os.replace(tmp, final)
  if not ids:  # nothing kept: no shard
    for path in (final, os.path.join(out_dir, name + ".jsonl")) + tuple(
      os.path.join(index_dir, name + suffix) for suffix in (".ids", ".exact.npy", ".bands.npy")
    ):
      if os.path.exists(path):
        os.remove(path)
  entry = {"name": name, "unit": unit, "documents": len(ids), "text_bytes": size}
  atomic_write_json(os.path.join(index_dir, name + ".json"), entry)
  return entry


def shard_done(out_dir: str, unit: int) -> dict[str, Any] | None:
  """The manifest entry of a finished shard, or None."""
  path = os.path.join(out_dir, "index", shard_name(unit) + ".json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


# ---------------------------------------------------------------------------------------------
# Report.


def report_json(stats: Stats) -> dict[str, Any]:
  """The yield report: per-stage funnel, removals per rule with examples, bad input, PII."""
  data = stats.to_json()
  funnel = []
  for stage in STAGES:
    s = data["stages"][stage]
    if s["docs_in"] == 0 and stage != "read":
      continue
    funnel.append({"stage": stage, **s})
  data["funnel"] = funnel
  read = data["stages"]["read"]
  last = funnel[-1] if funnel else {"docs_out": 0, "bytes_out": 0, "words_out": 0}
  data["totals"] = {
    "documents_in": read["docs_in"],
    "documents_out": last["docs_out"],
    "bytes_in": read["bytes_in"],
    "bytes_out": last["bytes_out"],
    "words_in": read["words_in"],
    "words_out": last["words_out"],
    "document_yield": round(last["docs_out"] / read["docs_in"], 6) if read["docs_in"] else 0.0,
    "word_yield": round(last["words_out"] / read["words_in"], 6) if read["words_in"] else 0.0,
    "bad_input": sum(data["bad_input"].values()),
  }
  return data


def report_markdown(report: dict[str, Any]) -> str:
  lines = ["# Curation yield report", ""]
  t = report["totals"]
  lines += [
    f"Documents: {t['documents_in']:,} in, {t['documents_out']:,} out "
    f"({100 * t['document_yield']:.2f}%); words (whitespace tokens): {t['words_in']:,} in, "
    f"{t['words_out']:,} out ({100 * t['word_yield']:.2f}%); bad input records skipped: "
    f"{t['bad_input']:,}.",
    "",
    "| stage | docs in | docs out | kept | MB in | MB out | words in | words out |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ]
  for s in report["funnel"]:
    kept = s["docs_out"] / s["docs_in"] if s["docs_in"] else 0.0
    lines.append(
      f"| {s['stage']} | {s['docs_in']:,} | {s['docs_out']:,} | {100 * kept:.1f}% | "
      f"{s['bytes_in'] / 1e6:.2f} | {s['bytes_out'] / 1e6:.2f} | {s['words_in']:,} | "
      f"{s['words_out']:,} |"
    )
  lines += ["", "## Removed, by rule", "", "| rule | documents |", "| --- | ---: |"]
  for rule, count in report["removed"].items():
    lines.append(f"| `{rule}` | {count:,} |")
  if report["bad_input"]:
    lines += ["", "## Bad input (skipped)", "", "| reason | records |", "| --- | ---: |"]
    for reason, count in report["bad_input"].items():
      lines.append(f"| {reason} | {count:,} |")
  p = report["pii"]
  lines += [
    "",
    f"PII: {p['emails']:,} e-mail and {p['ips']:,} IP addresses masked in "
    f"{p['documents']:,} documents. C4 line rules dropped {report['c4_lines_dropped']:,} lines.",
    "",
    "## Removed examples",
  ]
  for rule, examples in report["examples"].items():
    lines += ["", f"### `{rule}`", ""]
    for e in examples:
      note = f" ({e['note']})" if e.get("note") else ""
      text = e["text"].replace("\n", " ⏎ ").replace("|", "\\|")
      lines.append(f"- `{e['id']}` value {e['value']:g}{note}: {text}")
  return "\n".join(lines) + "\n"


def funnel_png(report: dict[str, Any], path: str) -> None:
  """A horizontal bar chart of documents and words left after each stage."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  funnel = report["funnel"]
  stages = [s["stage"] for s in funnel]
  first = funnel[0] if funnel else {"docs_in": 1, "words_in": 1}
  docs = [s["docs_out"] / max(first["docs_in"], 1) for s in funnel]
  words = [s["words_out"] / max(first["words_in"], 1) for s in funnel]
  fig, ax = plt.subplots(figsize=(7, 0.45 * len(stages) + 1.2), dpi=100)
  y = np.arange(len(stages))
  ax.barh(y - 0.2, docs, height=0.4, label="documents", color="#4C72B0")
  ax.barh(y + 0.2, words, height=0.4, label="words", color="#DD8452")
  for i, s in enumerate(funnel):
    ax.text(docs[i] + 0.01, y[i] - 0.2, f"{s['docs_out']:,}", va="center", fontsize=7)
  ax.set_yticks(y, stages)
  ax.invert_yaxis()
  ax.set_xlim(0, 1.15)
  ax.set_xlabel("fraction of the input left after the stage")
  ax.set_title("Curation funnel")
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", metadata={"Software": None})
  plt.close(fig)
  os.replace(path + ".tmp.png", path)


def write_report(out_dir: str, stats: Stats) -> dict[str, Any]:
  report = report_json(stats)
  atomic_write_json(os.path.join(out_dir, "report.json"), report)
  atomic_write_bytes(os.path.join(out_dir, "report.md"), report_markdown(report).encode())
  funnel_png(report, os.path.join(out_dir, "funnel.png"))
  return report


def write_manifest(
  out_dir: str,
  config: Any,
  inputs: Sequence[str],
  shards: Sequence[dict[str, Any]],
  report: dict[str, Any],
) -> dict[str, Any]:
  manifest = {
    "format": "t5x_lite.curated",
    "version": FORMAT_VERSION,
    "record_format": "json",
    "text_field": "text",
    "inputs": list(inputs),
    "shards": [s for s in shards if s["documents"]],
    "documents": sum(s["documents"] for s in shards),
    "text_bytes": sum(s["text_bytes"] for s in shards),
    "totals": report["totals"],
    "dedup": {
      "ngram": config.dedup.ngram,
      "bands": config.dedup.bands,
      "rows": config.dedup.rows,
      "seed": config.dedup.seed,
    },
    "config": json.loads(config.to_json()),
  }
  atomic_write_json(os.path.join(out_dir, MANIFEST), manifest)
  return manifest


def read_manifest(out_dir: str) -> dict[str, Any]:
  with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as f:
    return json.load(f)


def load_reference_keys(reference: str, config: Any) -> tuple[np.ndarray, np.ndarray]:
  """(exact [n, 2], bands [n, B]) of an already curated corpus, checked to be compatible."""
  manifest = read_manifest(reference)
  want = {k: config.dedup[k] for k in ("ngram", "bands", "rows", "seed")}
  if manifest["dedup"] != want:
    raise CurationError(
      f"config.dedup.reference={reference!r}: it was deduplicated with {manifest['dedup']}, "
      f"this run uses {want}; MinHash keys are only comparable with the same settings"
    )
  exact, bands = [], []
  for shard in manifest["shards"]:
    base = os.path.join(reference, "index", shard["name"])
    exact.append(np.load(base + ".exact.npy"))
    bands.append(np.load(base + ".bands.npy"))
  if not exact:
    return np.zeros((0, 2), np.uint64), np.zeros((0, config.dedup.bands), np.uint64)
  return np.concatenate(exact), np.concatenate(bands)
