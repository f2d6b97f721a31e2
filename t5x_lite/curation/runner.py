"""The local runner: worker processes over input files, streaming, resumable, deterministic.

  out/_work/run.json            the inputs and config of the run (a rerun must match)
  out/_work/units/NNNNN/        stage 1 of input file NNNNN: docs.jsonl (survivors), exact.npy,
                                bands.npy, stats.json; written as NNNNN.tmp/ then renamed
  out/_work/dedup/              stage 2: decision.npy, representative.npy, size.npy
  out/_work/units/NNNNN/final.json   stage 3 of the unit done (its shard is in place)

A run killed at any point (even kill -9) and rerun with the same command redoes only the
unfinished units and ends with the same bytes. Memory: a document at a time in stage 1 and 3;
stage 2 holds (2 + bands) x 8 bytes per surviving document.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import shutil
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from tqdm import tqdm

from t5x_lite.curation import CurationError, outputs, settings
from t5x_lite.curation.decontam import Contamination
from t5x_lite.curation.dedup import NO_SHINGLES, clusters
from t5x_lite.curation.pipeline import Curator, Stats, dedup_unit, encode_record
from t5x_lite.data.sources import expand_patterns

WORK = "_work"


def input_files(patterns: Sequence[str]) -> list[str]:
  """Sorted files matching the patterns (each must match something)."""
  try:
    return expand_patterns(list(patterns))
  except FileNotFoundError as e:
    raise CurationError(f"--input: {e}") from None


def _unit_dir(out_dir: str, unit: int) -> str:
  return os.path.join(out_dir, WORK, "units", f"{unit:05d}")


# ---------------------------------------------------------------------------------------------
# Stage 1 (worker side).

_worker: dict[str, Any] = {}


def _init_worker(
  config: ml_collections.ConfigDict,
  contamination: Contamination | None,
  timings: dict[str, float] | None = None,
) -> None:
  _worker["curator"] = Curator(config, contamination, timings)
  _worker["config"] = config


def stage1_unit(out_dir: str, unit: int, path: str) -> dict[str, Any]:
  """Filters one input file into `_work/units/NNNNN/`; returns its stats as JSON."""
  curator: Curator = _worker["curator"]
  config = _worker["config"]
  final = _unit_dir(out_dir, unit)
  tmp = final + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  stats = Stats(config.output.examples_per_rule)
  exact, bands = [], []
  with open(os.path.join(tmp, "docs.jsonl"), "wb") as f:
    for record, e, b in curator.unit(path, stats):
      f.write(encode_record(record) + b"\n")
      exact.append(e)
      bands.append(b)
  np.save(os.path.join(tmp, "exact.npy"), np.array(exact, np.uint64).reshape(-1, 2))
  np.save(
    os.path.join(tmp, "bands.npy"), np.array(bands, np.uint64).reshape(-1, config.dedup.bands)
  )
  data = stats.to_json()
  outputs.atomic_write_json(os.path.join(tmp, "stats.json"), data)
  os.replace(tmp, final)
  return data


def _stage1_task(args: tuple[str, int, str]) -> tuple[int, int]:
  out_dir, unit, path = args
  data = stage1_unit(out_dir, unit, path)
  return unit, data["stages"]["read"]["docs_in"]


# ---------------------------------------------------------------------------------------------
# Stage 2.


def find_duplicates(
  exact: list[np.ndarray], bands: list[np.ndarray], config: Any, reference=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`dedup.clusters` over all units in order (after an optional reference corpus).

  Returns (decision, representative, cluster_size) for the new documents only; a
  representative from the reference corpus is -1.
  """
  d = config.dedup
  exact_all = np.concatenate(exact) if exact else np.zeros((0, 2), np.uint64)
  bands_all = np.concatenate(bands) if bands else np.zeros((0, d.bands), np.uint64)
  n_ref = 0
  if reference is not None:
    n_ref = len(reference[0])
    exact_all = np.concatenate([reference[0], exact_all])
    bands_all = np.concatenate([reference[1], bands_all])
  if not d.exact:  # every document its own exact key
    exact_all = np.stack([np.arange(len(exact_all), dtype=np.uint64)] * 2, axis=1)
  if not d.near:
    bands_all = np.full_like(bands_all, NO_SHINGLES)
  decision, representative, size = clusters(exact_all, bands_all, reference=n_ref)
  decision, representative, size = decision[n_ref:], representative[n_ref:] - n_ref, size[n_ref:]
  representative[representative < 0] = -1
  return decision, representative, size


# ---------------------------------------------------------------------------------------------
# Stage 3 (worker side).


def stage3_unit(out_dir: str, unit: int, offset: int) -> dict[str, Any]:
  """Writes the shard of one unit; returns {'entry': manifest entry, 'stats': ...}."""
  config = _worker["config"]
  work = os.path.join(out_dir, WORK)
  unit_dir = _unit_dir(out_dir, unit)
  decision = np.load(os.path.join(work, "dedup", "decision.npy"), mmap_mode="r")
  representative = np.load(os.path.join(work, "dedup", "representative.npy"), mmap_mode="r")
  size = np.load(os.path.join(work, "dedup", "size.npy"), mmap_mode="r")
  exact = np.load(os.path.join(unit_dir, "exact.npy"))
  bands = np.load(os.path.join(unit_dir, "bands.npy"))
  n = len(exact)
  stats = Stats(config.output.examples_per_rule)

  def numbered():
    with open(os.path.join(unit_dir, "docs.jsonl"), "rb") as f:
      for k, line in enumerate(f):
        record = json.loads(line)
        record["_position"] = k
        yield record

  def kept():
    for record in dedup_unit(
      numbered(),
      np.asarray(decision[offset : offset + n]),
      np.asarray(representative[offset : offset + n]),
      np.asarray(size[offset : offset + n]),
      stats,
    ):
      yield record.pop("_position"), record

  entry = outputs.write_shard(out_dir, unit, kept(), (exact, bands), config)
  result = {"entry": entry, "stats": stats.to_json()}
  outputs.atomic_write_json(os.path.join(unit_dir, "final.json"), result)
  return result


def _stage3_task(args: tuple[str, int, int]) -> int:
  out_dir, unit, offset = args
  stage3_unit(out_dir, unit, offset)
  return unit


# ---------------------------------------------------------------------------------------------


def run_state(files: Sequence[str], config: Any) -> dict[str, Any]:
  return {"inputs": list(files), "config": json.loads(config.to_json())}


def check_out_dir(out_dir: str, state: dict[str, Any]) -> str:
  """'fresh' | 'resume' | 'done'; raises if `out_dir` holds something else."""
  run_file = os.path.join(out_dir, WORK, "run.json")
  manifest = os.path.join(out_dir, outputs.MANIFEST)
  if os.path.exists(run_file):
    with open(run_file) as f:
      previous = json.load(f)
    if previous != state:
      raise CurationError(
        f"--out {out_dir}: holds an unfinished run with other inputs or config; rerun that "
        "command to finish it, or choose another --out"
      )
    return "done" if os.path.exists(manifest) else "resume"
  if os.path.exists(manifest):
    done = outputs.read_manifest(out_dir)
    if done.get("inputs") == state["inputs"] and done.get("config") == state["config"]:
      return "done"
    raise CurationError(f"--out {out_dir}: already holds a curated corpus of other inputs/config")
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    raise CurationError(f"--out {out_dir}: directory is not empty")
  return "fresh"


def _map(fn, tasks, workers: int, initargs, desc: str, progress: bool):
  """Runs fn over tasks in `workers` processes (in this process when 1); yields results."""
  bar = tqdm(total=len(tasks), desc=desc, unit="file", disable=not progress, file=sys.stderr)
  if workers <= 1 or len(tasks) <= 1:
    _init_worker(*initargs)
    for task in tasks:
      yield fn(task)
      bar.update()
  else:
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(tasks)), _init_worker, initargs) as pool:
      for result in pool.imap_unordered(fn, tasks):
        yield result
        bar.update()
  bar.close()


def curate(
  inputs: Sequence[str],
  out_dir: str,
  config: Any,
  workers: int | None = None,
  timings: dict[str, float] | None = None,
) -> dict[str, Any]:
  """Curates the files matching `inputs` into `out_dir`; returns the manifest.

  `config` must be validated (settings.load). `workers` overrides config.runner.workers.
  `timings` (benchmarks): CPU seconds per phase ('1_filter', '2_dedup', '3_write',
  '4_report', this process and its reaped workers) and, with one worker, per stage.
  """
  files = input_files(inputs)
  state = run_state(files, config)
  status = check_out_dir(out_dir, state)
  if status == "done" and not os.path.exists(os.path.join(out_dir, WORK)):
    logging.info("%s is already complete", out_dir)
    return outputs.read_manifest(out_dir)
  # Everything that can fail on the config fails here, before any input is read.
  settings.check_packages(config, files)
  contamination = Contamination.from_config(config)
  reference = None
  if config.dedup.reference:
    reference = outputs.load_reference_keys(config.dedup.reference, config)
  workers = workers or config.runner.workers or os.cpu_count() or 1
  progress = bool(config.runner.progress)
  work = os.path.join(out_dir, WORK)
  os.makedirs(os.path.join(work, "units"), exist_ok=True)
  outputs.atomic_write_json(os.path.join(work, "run.json"), state)
  initargs = (config, contamination, timings if workers <= 1 else None)
  clock = _CpuClock(timings)

  # Stage 1: filter each input file.
  todo = [
    (out_dir, u, path)
    for u, path in enumerate(files)
    if not os.path.exists(os.path.join(_unit_dir(out_dir, u), "stats.json"))
  ]
  for _ in _map(_stage1_task, todo, workers, initargs, "curate 1/3 filter", progress):
    pass
  clock.charge("1_filter")

  # Stage 2: exact + near duplicates over all units.
  dedup_dir = os.path.join(work, "dedup")
  counts = []
  if not os.path.exists(os.path.join(dedup_dir, "size.npy")):
    exact, bands = [], []
    for u in tqdm(range(len(files)), desc="curate 2/3 dedup", unit="file", disable=not progress):
      exact.append(np.load(os.path.join(_unit_dir(out_dir, u), "exact.npy")))
      bands.append(np.load(os.path.join(_unit_dir(out_dir, u), "bands.npy")))
    decision, representative, size = find_duplicates(exact, bands, config, reference)
    counts = [len(e) for e in exact]
    del exact, bands
    os.makedirs(dedup_dir, exist_ok=True)
    outputs.atomic_save_npy(os.path.join(dedup_dir, "decision.npy"), decision)
    outputs.atomic_save_npy(os.path.join(dedup_dir, "representative.npy"), representative)
    outputs.atomic_save_npy(os.path.join(dedup_dir, "size.npy"), size)
  else:
    for u in range(len(files)):
      counts.append(len(np.load(os.path.join(_unit_dir(out_dir, u), "exact.npy"), mmap_mode="r")))
  offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
  clock.charge("2_dedup")

  # Stage 3: write the shards.
  todo = [
    (out_dir, u, offsets[u])
    for u in range(len(files))
    if not os.path.exists(os.path.join(_unit_dir(out_dir, u), "final.json"))
  ]
  for _ in _map(_stage3_task, todo, workers, initargs, "curate 3/3 write", progress):
    pass
  clock.charge("3_write")

  # Report and manifest, from the per-unit stats in unit order.
  manifest = finalize(out_dir, files, config)
  clock.charge("4_report")
  return manifest


class _CpuClock:
  """CPU seconds (this process + reaped children) charged to named phases."""

  def __init__(self, timings: dict[str, float] | None):
    self.timings = timings
    self.last = self.now()

  @staticmethod
  def now() -> float:
    own, children = (
      resource.getrusage(resource.RUSAGE_SELF),
      resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

  def charge(self, phase: str) -> None:
    now = self.now()
    if self.timings is not None:
      self.timings[phase] = self.timings.get(phase, 0.0) + now - self.last
    self.last = now


def finalize(out_dir: str, files: Sequence[str], config: Any) -> dict[str, Any]:
  stats = Stats(config.output.examples_per_rule)
  entries = []
  for u in range(len(files)):
    unit_dir = _unit_dir(out_dir, u)
    with open(os.path.join(unit_dir, "stats.json")) as f:
      stats.merge(Stats.from_json(json.load(f), config.output.examples_per_rule))
    with open(os.path.join(unit_dir, "final.json")) as f:
      final = json.load(f)
    stats.merge(Stats.from_json(final["stats"], config.output.examples_per_rule))
    entries.append(final["entry"])
  report = outputs.write_report(out_dir, stats)
  manifest = outputs.write_manifest(out_dir, config, files, entries, report)
  if not config.output.keep_work:
    shutil.rmtree(os.path.join(out_dir, WORK), ignore_errors=True)
  return manifest
