"""Throughput of the data pipeline, in non-padding output tokens per CPU-second.

Two pipelines on a real corpus (default: ../shared/corpora/shakespeare/works.jsonl.gz):
  span_corruption  tokenize -> span corruption -> pack (EncDecFeatureConverter) -> batch,
                   inputs 512 / targets 114;
  causal_lm        tokenize -> EOS -> cut to 512 -> pack (DecoderFeatureConverter) -> batch.
Each runs for at least `min_tokens` output tokens after a warm-up batch, single-threaded
(num_workers 0); CPU time is the process time (all threads), so the figure is per core.

  python tools/benchmark_data.py [--corpus PATH] [--vocab-size 32000] [--json out.json]
Importable: `run(corpus=..., vocab_size=...) -> dict`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from t5x_lite.data import objectives, pipeline, preprocessors  # noqa: E402
from t5x_lite.data.feature_converters import (  # noqa: E402
  DecoderFeatureConverter,
  EncDecFeatureConverter,
)
from t5x_lite.data.hf_vocabulary import load_vocabulary_path  # noqa: E402
from t5x_lite.data.registry import Feature, Task  # noqa: E402
from t5x_lite.data.sources import JsonlSource  # noqa: E402
from t5x_lite.data.vocabularies import (  # noqa: E402
  SentencePieceVocabulary,
  cache_key,
  train_sentencepiece,
)

DEFAULT_CORPUS = os.path.join(
  os.path.dirname(os.path.dirname(HERE)), "shared", "corpora", "shakespeare", "works.jsonl.gz"
)


def _vocabulary(source, vocab_size: int, extra_ids: int, cache_dir: str, vocab_path: str):
  if vocab_path:  # a .model file or a tokenizer folder (`t5x-lite tokenizer train --type ...`)
    return load_vocabulary_path(vocab_path, extra_ids), 0.0
  key = cache_key(corpus=repr(source), vocab_size=vocab_size, extra_ids=extra_ids)
  path = os.path.join(cache_dir, f"spm_{vocab_size}_{key}.model")
  if os.path.exists(path):
    return SentencePieceVocabulary(path, extra_ids), 0.0
  start = time.perf_counter()
  split = source.split("train")
  texts = (split[i]["text"] for i in range(len(split)))
  vocabulary = train_sentencepiece(texts, vocab_size, extra_ids, path)
  return vocabulary, time.perf_counter() - start


def _measure(stream, batch_size: int, min_tokens: int, segment_keys) -> dict:
  iterator = pipeline.DataIterator([stream], [1.0], batch_size)
  next(iterator)  # warm-up: imports, first block
  tokens = batches = 0
  wall, cpu = time.perf_counter(), time.process_time()
  while tokens < min_tokens:
    batch = next(iterator)
    tokens += int(sum((batch[k] > 0).sum() for k in segment_keys))
    batches += 1
  cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
  capacity = batches * sum(batch[k].shape[0] * batch[k].shape[1] for k in segment_keys)
  return {
    "batches": batches,
    "tokens": tokens,
    "cpu_seconds": round(cpu, 3),
    "wall_seconds": round(wall, 3),
    "tokens_per_cpu_second": round(tokens / cpu),
    "packing_efficiency": round(tokens / capacity, 4),
  }


def _tokenize_only(source, vocabulary, documents: int = 16) -> dict:
  split = source.split("train")
  texts = [split[i]["text"] for i in range(min(documents, len(split)))]
  cpu = time.process_time()
  values, _ = vocabulary.encode_batch(texts)
  cpu = time.process_time() - cpu
  return {"tokens": len(values), "tokens_per_cpu_second": round(len(values) / cpu)}


def run(
  corpus: str = DEFAULT_CORPUS,
  vocab_size: int = 32000,
  extra_ids: int = 100,
  vocab_path: str = "",
  batch_size: int = 8,
  min_tokens: int = 4_000_000,
  cache_dir: str = "/tmp/t5x_lite_benchmark_data",
) -> dict:
  """Measures both pipelines; returns a JSON-serializable dict of results."""
  source = JsonlSource(corpus, text_field="text", id_field="id", validation_fraction=0.02)
  vocabulary, training_seconds = _vocabulary(source, vocab_size, extra_ids, cache_dir, vocab_path)
  span_task = Task(
    "benchmark_span_corruption",
    source,
    [preprocessors.tokenize, functools.partial(objectives.span_corruption)],
    {"inputs": Feature(), "targets": Feature()},
  )
  causal_task = Task(
    "benchmark_causal_lm",
    source,
    [preprocessors.tokenize, preprocessors.append_eos, objectives.causal_lm],
    {"targets": Feature()},
  )
  span_stream = pipeline.TaskStream(
    span_task,
    "train",
    vocabulary,
    EncDecFeatureConverter(pack=True),
    {"inputs": 512, "targets": 114},
    seed=0,
  )
  causal_stream = pipeline.TaskStream(
    causal_task, "train", vocabulary, DecoderFeatureConverter(pack=True), {"targets": 512}, seed=0
  )
  return {
    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    "corpus": corpus,
    "vocabulary": f"{type(vocabulary).__name__} {vocabulary.vocab_size} ids",
    "vocab_training_seconds": round(training_seconds, 1),
    "tokenize_only": _tokenize_only(source, vocabulary),
    "span_corruption": _measure(
      span_stream, batch_size, min_tokens, ["encoder_segment_ids", "decoder_segment_ids"]
    ),
    "causal_lm": _measure(causal_stream, batch_size, min_tokens, ["decoder_segment_ids"]),
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--corpus", default=DEFAULT_CORPUS)
  parser.add_argument("--vocab-size", type=int, default=32000)
  parser.add_argument("--vocab-path", default="")
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--min-tokens", type=int, default=4_000_000)
  parser.add_argument("--json", default="", help="write the results here")
  args = parser.parse_args(argv)
  if not os.path.exists(args.corpus):
    parser.error(f"corpus {args.corpus!r} does not exist")
  results = run(
    args.corpus,
    args.vocab_size,
    vocab_path=args.vocab_path,
    batch_size=args.batch_size,
    min_tokens=args.min_tokens,
  )
  print(f"{results['machine']}; {results['vocabulary']}; corpus {results['corpus']}")
  print(
    f"{'pipeline':<18}{'tokens/CPU-s':>14}{'CPU s':>9}{'wall s':>9}{'tokens':>12}{'packing':>9}"
  )
  for name in ("span_corruption", "causal_lm"):
    r = results[name]
    print(
      f"{name:<18}{r['tokens_per_cpu_second']:>14,}{r['cpu_seconds']:>9}{r['wall_seconds']:>9}"
      f"{r['tokens']:>12,}{r['packing_efficiency']:>9.1%}"
    )
  t = results["tokenize_only"]
  print(
    f"{'tokenize only':<18}{t['tokens_per_cpu_second']:>14,}  (vocabulary encode, input tokens)"
  )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
