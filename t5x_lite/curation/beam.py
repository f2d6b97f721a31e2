"""The curation stages as an Apache Beam pipeline (DirectRunner, Dataflow, Flink, Spark).

Same stage functions as the local runner, same output bytes:

  Create(input files) -> ParDo(stage 1: Curator over one file)   per document: record + keys
    signatures -> buckets:  (band, band key) and (exact key) -> GroupByKey -> edges
    buckets -> clusters:    all edges -> one union-find (connected components) -> decisions
  CoGroupByKey(file, documents, decisions) -> ParDo(stage 3: write the file's shard)
  then, in the launching process, the report and manifest from the per-file stats.

Documents are ordered by (file index, index in file) everywhere, which is the local runner's
input order, so "keep the first document of a cluster" picks the same document. Pipeline
options come from config.runner.beam_options (e.g. `--runner=DataflowRunner --project=...`);
`--out` must be a filesystem path the workers and the launcher share (docs/curation.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections
import numpy as np

from t5x_lite.curation import outputs, runner, settings
from t5x_lite.curation.decontam import Contamination
from t5x_lite.curation.dedup import NO_SHINGLES
from t5x_lite.curation.pipeline import Curator, Stats, dedup_unit

try:
  import apache_beam as beam
except ImportError as e:  # an optional extra
  raise ImportError("the Beam runner needs Apache Beam: pip install 't5x-lite[beam]'") from e

REFERENCE_UNIT = -1  # documents of the reference corpus sort before every input file


def _signed(keys: np.ndarray) -> tuple[int, ...]:
  """uint64 keys as int64 values: Beam's integer coder is limited to signed 64 bits."""
  return tuple(np.asarray(keys, np.uint64).view(np.int64).tolist())


def _unsigned(keys: Sequence[int]) -> np.ndarray:
  return np.array(keys, np.int64).view(np.uint64)


def _config(config_json: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads(config_json))


class FilterFile(beam.DoFn):
  """Stage 1 over one input file: emits (unit, k, record, exact, bands) per survivor and writes
  the file's stats to out/_work/units/NNNNN/stats.json (the local runner's layout)."""

  def __init__(self, out_dir: str, config_json: str, contamination: Contamination | None):
    self.out_dir, self.config_json, self.contamination = out_dir, config_json, contamination

  def setup(self):
    self.config = _config(self.config_json)
    self.curator = Curator(self.config, self.contamination)

  def process(self, element):
    unit, path = element
    stats = Stats(self.config.output.examples_per_rule)
    for k, (record, exact, bands) in enumerate(self.curator.unit(path, stats)):
      yield unit, k, record, _signed(exact), _signed(bands)
    unit_dir = os.path.join(self.out_dir, runner.WORK, "units", f"{unit:05d}")
    os.makedirs(unit_dir, exist_ok=True)
    outputs.atomic_write_json(os.path.join(unit_dir, "stats.json"), stats.to_json())


def bucket_keys(element) -> Iterable[tuple[tuple, tuple[int, int]]]:
  """Signatures -> bucket keys: one per band (unless too short to shingle) and the exact key."""
  unit, k, _, exact, bands = element
  yield ("exact", *exact), (unit, k)
  for b, key in enumerate(bands):
    if key != int(NO_SHINGLES):
      yield ("band", b, key), (unit, k)


def bucket_edges(group) -> Iterable[tuple[str, tuple, tuple]]:
  """A bucket's members -> edges from its first member (in input order) to each other one;
  exact buckets also mark their non-first members as exact duplicates."""
  (kind, *_), members = group
  members = sorted(members)
  for other in members[1:]:
    yield kind, members[0], other


class Clusters(beam.DoFn):
  """Buckets -> clusters: union-find over all edges (one worker; edges are few). Emits
  (position, (decision, representative position, cluster size)) for clustered documents."""

  def process(self, edges: list[tuple[str, tuple, tuple]]):
    nodes = sorted({p for _, a, b in edges for p in (a, b)})
    index = {p: i for i, p in enumerate(nodes)}
    parent = list(range(len(nodes)))

    def find(i):
      while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
      return i

    exact_duplicate = set()
    for kind, a, b in edges:
      if kind == "exact":
        exact_duplicate.add(b)
      ra, rb = find(index[a]), find(index[b])
      if ra != rb:  # the smaller (earlier) root wins, so a root is its cluster's first member
        parent[max(ra, rb)] = min(ra, rb)
    roots = [find(i) for i in range(len(nodes))]
    sizes = np.bincount(roots, minlength=len(nodes))
    for i, p in enumerate(nodes):
      if p[0] == REFERENCE_UNIT:
        continue
      root = nodes[roots[i]]
      if p in exact_duplicate:
        decision = 1
      elif root != p:
        decision = 2
      else:
        decision = 0
      yield p, (decision, root, int(sizes[roots[i]]))


class WriteShard(beam.DoFn):
  """Stage 3 for one file: drops duplicates, writes the shard and final.json."""

  def __init__(self, out_dir: str, config_json: str):
    self.out_dir, self.config_json = out_dir, config_json

  def setup(self):
    self.config = _config(self.config_json)

  def process(self, element, offsets: dict[int, int]):
    unit, grouped = element
    documents = sorted(grouped["documents"], key=lambda d: d[0])
    info = dict(grouped["clusters"])
    n = len(documents)
    decision = np.zeros(n, np.int8)
    representative = np.arange(offsets.get(unit, 0), offsets.get(unit, 0) + n, dtype=np.int64)
    size = np.ones(n, np.int64)
    for k, (position, _) in enumerate(documents):
      if position in info:
        d, (root_unit, root_k), s = info[position]
        decision[k], size[k] = d, s
        representative[k] = -1 if root_unit == REFERENCE_UNIT else offsets[root_unit] + root_k
    stats = Stats(self.config.output.examples_per_rule)
    records = [record for _, (record, _, _) in documents]
    for k, record in enumerate(records):
      record["_position"] = k
    exact = _unsigned([e for _, (_, e, _) in documents]).reshape(-1, 2)
    bands = _unsigned([b for _, (_, _, b) in documents]).reshape(-1, self.config.dedup.bands)

    def kept():
      for record in dedup_unit(iter(records), decision, representative, size, stats):
        yield record.pop("_position"), record

    entry = outputs.write_shard(self.out_dir, unit, kept(), (exact, bands), self.config)
    unit_dir = os.path.join(self.out_dir, runner.WORK, "units", f"{unit:05d}")
    outputs.atomic_write_json(
      os.path.join(unit_dir, "final.json"), {"entry": entry, "stats": stats.to_json()}
    )
    yield unit


def _offsets(counts: Iterable[tuple[int, int]], num_units: int) -> dict[int, int]:
  per_unit = dict(counts)
  offsets, total = {}, 0
  for unit in range(num_units):
    offsets[unit] = total
    total += per_unit.get(unit, 0)
  return offsets


def build(
  pipeline,
  files: Sequence[str],
  out_dir: str,
  config: Any,
  contamination: Contamination | None,
  reference: tuple[np.ndarray, np.ndarray] | None,
):
  """Adds the curation stages to `pipeline`; returns the PCollection of written units."""
  config_json = config.to_json()
  units = pipeline | "Files" >> beam.Create(list(enumerate(files)))
  docs = units | "1 Filter" >> beam.ParDo(FilterFile(out_dir, config_json, contamination))
  signatures = docs
  if reference is not None:
    ref = [
      (REFERENCE_UNIT, i, None, _signed(e), _signed(b)) for i, (e, b) in enumerate(zip(*reference))
    ]
    signatures = (docs, pipeline | "Reference" >> beam.Create(ref)) | beam.Flatten()
  enabled = {"exact": bool(config.dedup.exact), "band": bool(config.dedup.near)}
  buckets = (
    signatures
    | "2a Buckets" >> beam.FlatMap(bucket_keys)
    | "2b Keep enabled" >> beam.Filter(lambda kv: enabled[kv[0][0]])
    | "2c Group buckets" >> beam.GroupByKey()
    | "2d Edges" >> beam.FlatMap(bucket_edges)
  )
  clusters = (
    buckets | "2e All edges" >> beam.combiners.ToList() | "2f Union-find" >> beam.ParDo(Clusters())
  )
  counts = (
    docs
    | "Unit of doc" >> beam.Map(lambda x: (x[0], 1))
    | "Count per unit" >> beam.CombinePerKey(sum)
  )
  offsets = (
    counts | "All counts" >> beam.combiners.ToList() | "Offsets" >> beam.Map(_offsets, len(files))
  )
  by_unit_docs = docs | "Key docs" >> beam.Map(lambda x: (x[0], ((x[0], x[1]), (x[2], x[3], x[4]))))
  by_unit_clusters = clusters | "Key clusters" >> beam.Map(lambda kv: (kv[0][0], kv))
  return (
    {"documents": by_unit_docs, "clusters": by_unit_clusters, "unit": units}
    | "3a Join per file" >> beam.CoGroupByKey()
    | "3b Write shards"
    >> beam.ParDo(WriteShard(out_dir, config_json), offsets=beam.pvalue.AsSingleton(offsets))
  )


def curate(inputs: Sequence[str], out_dir: str, config: Any) -> dict[str, Any]:
  """Runs the pipeline with config.runner.beam_options; returns the manifest."""
  from apache_beam.options.pipeline_options import PipelineOptions

  files = runner.input_files(inputs)
  state = runner.run_state(files, config)
  status = runner.check_out_dir(out_dir, state)
  if status == "done" and not os.path.exists(os.path.join(out_dir, runner.WORK)):
    return outputs.read_manifest(out_dir)
  settings.check_packages(config, files)
  contamination = Contamination.from_config(config)
  reference = None
  if config.dedup.reference:
    reference = outputs.load_reference_keys(config.dedup.reference, config)
  os.makedirs(os.path.join(out_dir, runner.WORK, "units"), exist_ok=True)
  outputs.atomic_write_json(os.path.join(out_dir, runner.WORK, "run.json"), state)
  options = PipelineOptions(list(config.runner.beam_options) or ["--runner=DirectRunner"])
  with beam.Pipeline(options=options) as pipeline:
    build(pipeline, files, out_dir, config, contamination, reference)
  return runner.finalize(out_dir, files, config)
