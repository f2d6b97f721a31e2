"""Curation throughput: documents and MB per CPU-second, per stage and in total, with peak
memory, side by side with datatrove running the same stages with the same thresholds.

  python tools/benchmark_curation.py [--corpus shakespeare|synthetic|both] [--synthetic-mb 200]
                                     [--workers 2] [--work /tmp/curation_bench] [--smoke]

Corpora:
  shakespeare  ../shared/corpora/shakespeare/works.jsonl.gz (77 plays and poems, 9.5 MB; the
               folio copies are near duplicates of the modern ones)
  synthetic    a web-like corpus generated here (t5x_lite.curation.synthetic): English pages,
               ~30% junk of eight kinds, 5% exact and 5% near duplicates, in 16 JSONL files
Runs, in this order, each on the same JSONL folder:
  ours_dt_stages   t5x-lite curate with exactly datatrove's stages (Gopher repetition, Gopher
                   quality, C4, FineWeb, MinHash 5-grams 14x8); language ID, PII, exact dedup
                   and normalisation off
  datatrove        ../shared/peers/peer_datatrove.py in its venv (PEERBENCH_DIR, default
                   /tmp/peerbench; set it up with ../shared/peers/setup_venvs.sh datatrove)
  ours_full        t5x-lite curate, config web_en (all stages)
  ours_stages      one worker, in-process, with CPU seconds charged to each stage
Also the dedup recall on the synthetic corpus: the fraction of injected exact and near
duplicates each tool removed.

CPU seconds are this process + its reaped children (rusage) for ours, machine-wide /proc/stat
for datatrove (its pool workers are not reaped children): run on an otherwise idle machine.
datatrove 0.10.1's MinHash passes str to xxhash, which xxhash 4 rejects: its venv needs
`pip install 'xxhash<4'` (setup_venvs.sh installs the newest).
Prints a JSON line per run and a Markdown table; `--smoke` runs everything on a tiny input.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from t5x_lite.curation import runner, settings, synthetic  # noqa: E402

SHARED = os.path.join(os.path.dirname(REPO), "shared")
SHAKESPEARE = os.path.join(SHARED, "corpora", "shakespeare", "works.jsonl.gz")
PEER = os.path.join(SHARED, "peers", "peer_datatrove.py")
if not os.path.exists(PEER):  # a worktree beside /work/main
  PEER = "/work/shared/peers/peer_datatrove.py"
  SHAKESPEARE = "/work/shared/corpora/shakespeare/works.jsonl.gz"


def cpu_seconds() -> float:
  own, children = (
    resource.getrusage(resource.RUSAGE_SELF),
    resource.getrusage(resource.RUSAGE_CHILDREN),
  )
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
  own, children = (
    resource.getrusage(resource.RUSAGE_SELF),
    resource.getrusage(resource.RUSAGE_CHILDREN),
  )
  return max(own.ru_maxrss, children.ru_maxrss) / 1024


def corpus_size(folder: str) -> tuple[int, int]:
  docs = size = 0
  for path in sorted(glob.glob(os.path.join(folder, "*.jsonl*"))):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
      for line in f:
        docs += 1
        size += len(json.loads(line)["text"].encode("utf-8"))
  return docs, size


def make_synthetic(folder: str, megabytes: float, files: int = 16) -> dict[str, tuple]:
  """Writes the synthetic corpus; returns {id: (kind, id of the page it duplicates)}."""
  os.makedirs(folder, exist_ok=True)
  kinds, written, k = {}, 0, 0
  handles = [
    open(os.path.join(folder, f"web-{i:03d}.jsonl"), "w", encoding="utf-8") for i in range(files)
  ]
  seed = 0
  while written < megabytes * 1e6:
    for record in synthetic.documents(2000, seed=seed):
      kinds[record["id"]] = (record["kind"], record["duplicate_of"])
      handles[k % files].write(json.dumps({"id": record["id"], "text": record["text"]}) + "\n")
      written += len(record["text"].encode("utf-8"))
      k += 1
    seed += 1
  for h in handles:
    h.close()
  return kinds


def shakespeare(folder: str, smoke: bool) -> None:
  os.makedirs(folder, exist_ok=True)
  with (
    gzip.open(SHAKESPEARE, "rt", encoding="utf-8") as f,
    open(os.path.join(folder, "works.jsonl"), "w", encoding="utf-8") as out,
  ):
    for i, line in enumerate(f):
      if smoke and i >= 4:
        break
      record = json.loads(line)
      out.write(json.dumps({"id": record["id"], "text": record["text"]}) + "\n")


DT_STAGES = [  # datatrove's peer runs exactly these
  ("langid.enabled", "false"),
  ("pii.enabled", "false"),
  ("dedup.exact", "false"),
  ("normalize.ftfy", "false"),
  ("normalize.nfc", "false"),
  ("normalize.control_characters", "false"),
  ("normalize.whitespace", "false"),
  ("reader.max_document_bytes", "100000000"),
]


def run_ours(name, folder, out, overrides, workers, docs, size, stage_timings=False):
  config = settings.load("curate.py:web_en", [("runner.progress", "false"), *overrides])
  shutil.rmtree(out, ignore_errors=True)
  timings = {} if stage_timings else None
  t0, c0 = time.perf_counter(), cpu_seconds()
  manifest = runner.curate(
    [os.path.join(folder, "*.jsonl")], out, config, workers=workers, timings=timings
  )
  wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
  result = {
    "bench": name,
    "docs_in": docs,
    "mb_in": round(size / 1e6, 2),
    "docs_out": manifest["documents"],
    "mb_out": round(manifest["text_bytes"] / 1e6, 2),
    "wall_s": round(wall, 2),
    "cpu_s": round(cpu, 2),
    "docs_per_cpu_s": round(docs / cpu, 1),
    "mb_per_cpu_s": round(size / 1e6 / cpu, 3),
    "workers": workers,
    "peak_rss_mb": round(peak_rss_mb(), 1),
  }
  if timings is not None:
    result["stage_cpu_s"] = {k: round(v, 3) for k, v in timings.items()}
    result["stage_mb_per_cpu_s"] = {
      k: round(size / 1e6 / v, 2) for k, v in timings.items() if v > 0 and not k[0].isdigit()
    }
  return result


def run_datatrove(folder, work, workers):
  python = os.path.join(
    os.environ.get("PEERBENCH_DIR", "/tmp/peerbench"), "venv_datatrove", "bin", "python"
  )
  if not os.path.exists(python):
    return {
      "bench": "peer_datatrove",
      "skipped": f"no {python}: run ../shared/peers/setup_venvs.sh datatrove",
    }
  proc = subprocess.run(
    [
      python,
      PEER,
      "--input",
      folder,
      "--work",
      work,
      "--tasks",
      str(max(workers, 2)),
      "--workers",
      str(workers),
    ],
    capture_output=True,
    text=True,
  )
  if proc.returncode != 0:
    error = proc.stderr[-2000:]
    if "Strings must be encoded" in error:  # datatrove 0.10.1 hashes str; xxhash 4 refuses
      error = f"datatrove needs xxhash<4: {os.path.dirname(python)}/pip install 'xxhash<4'"
    return {"bench": "peer_datatrove", "error": error}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def kept_ids_ours(out):
  ids = set()
  for path in glob.glob(os.path.join(out, "index", "*.ids")):
    with open(path, encoding="utf-8") as f:
      ids.update(line.rstrip("\n") for line in f)
  return ids


def kept_ids_datatrove(work):
  ids = set()
  for path in glob.glob(os.path.join(work, "out", "**", "*.jsonl*"), recursive=True):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
      ids.update(json.loads(line)["id"] for line in f)
  return ids


def duplicate_recall(kinds, kept):
  """Fraction of injected (duplicate, original) pairs of which at most one survived."""
  out = {}
  for kind in ("exact_duplicate", "near_duplicate"):
    pairs = [(i, source) for i, (k, source) in kinds.items() if k == kind]
    found = sum(not (i in kept and source in kept) for i, source in pairs)
    out[kind] = round(found / max(len(pairs), 1), 4)
  return out


def table(results):
  lines = [
    "| corpus | run | docs in | MB in | docs out | wall s | CPU s | docs / CPU s | MB / CPU s "
    "| peak RSS MB |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ]
  for corpus, r in results:
    if "cpu_s" not in r:
      lines.append(f"| {corpus} | {r['bench']} | {r.get('skipped') or r.get('error', '')[:80]} |")
      continue
    lines.append(
      f"| {corpus} | {r['bench']} | {r['docs_in']:,} | {r['mb_in']} | {r.get('docs_out', '')} | "
      f"{r['wall_s']} | {r['cpu_s']} | {r['docs_per_cpu_s']} | {r['mb_per_cpu_s']} | {r.get('peak_rss_mb', '')} |"
    )
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--corpus", choices=("shakespeare", "synthetic", "both"), default="both")
  p.add_argument("--synthetic-mb", type=float, default=200.0)
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--work", default="/tmp/curation_bench")
  p.add_argument("--smoke", action="store_true", help="tiny inputs: check the tool runs")
  a = p.parse_args()
  if a.smoke:
    a.synthetic_mb = 0.5
  shutil.rmtree(a.work, ignore_errors=True)
  results = []
  corpora = ["shakespeare", "synthetic"] if a.corpus == "both" else [a.corpus]
  for corpus in corpora:
    folder = os.path.join(a.work, corpus, "input")
    kinds = None
    if corpus == "shakespeare":
      shakespeare(folder, a.smoke)
    else:
      kinds = make_synthetic(folder, a.synthetic_mb, files=4 if a.smoke else 16)
    docs, size = corpus_size(folder)
    runs = [
      run_ours(
        "ours_dt_stages",
        folder,
        os.path.join(a.work, corpus, "ours_dt"),
        DT_STAGES,
        a.workers,
        docs,
        size,
      ),
      run_datatrove(folder, os.path.join(a.work, corpus, "datatrove"), a.workers),
      run_ours(
        "ours_full", folder, os.path.join(a.work, corpus, "ours_full"), [], a.workers, docs, size
      ),
      run_ours(
        "ours_stages", folder, os.path.join(a.work, corpus, "ours_stages"), [], 1, docs, size, True
      ),
    ]
    if kinds is not None:
      runs[0]["duplicates_removed"] = duplicate_recall(
        kinds, kept_ids_ours(os.path.join(a.work, corpus, "ours_dt"))
      )
      runs[2]["duplicates_removed"] = duplicate_recall(
        kinds, kept_ids_ours(os.path.join(a.work, corpus, "ours_full"))
      )
      if "cpu_s" in runs[1]:
        runs[1]["duplicates_removed"] = duplicate_recall(
          kinds, kept_ids_datatrove(os.path.join(a.work, corpus, "datatrove"))
        )
    for r in runs:
      r["corpus"] = corpus
      print(json.dumps(r), flush=True)
      results.append((corpus, r))
    if "cpu_s" in runs[1]:
      print(
        json.dumps(
          {"corpus": corpus, "speedup_per_cpu_s": round(runs[1]["cpu_s"] / runs[0]["cpu_s"], 2)}
        )
      )
  print(table(results))


if __name__ == "__main__":
  main()
