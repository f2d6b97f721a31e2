"""Tokenization throughput per vocabulary type, in tokens per CPU-second (issue 11).

Trains one vocabulary of each type (SentencePiece unigram and BPE, byte-level BPE, WordPiece;
`t5x_lite.data.tokenizer_training`) on the same corpus, then encodes the same documents with each
through `Vocabulary.encode_batch` (the data pipeline's call), in batches of `batch_documents`.
CPU time is the process time (all threads: `tokenizers` encodes a batch on several threads), so
the figure is per CPU-second, not per wall-second; the wall figure is reported next to it.

  python tools/benchmark_tokenizers.py [--corpus PATH] [--vocab-size 32000] [--json out.json]
  python tools/benchmark_tokenizers.py --smoke     # a tiny run that checks the tool works
The span-corruption pipeline with one of the trained folders (the issue's >= 2x SeqIO figure):
  python tools/benchmark_tokenizers.py --cache-dir /tmp/toks --types byte-bpe
  python tools/benchmark_data.py --vocab-path /tmp/toks/byte-bpe_32000_100
Importable: `run(corpus=..., vocab_size=...) -> dict`. Do not time on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from t5x_lite.data import tokenizer_training  # noqa: E402
from t5x_lite.data.sources import JsonlSource  # noqa: E402

DEFAULT_CORPUS = os.path.join(
  os.path.dirname(os.path.dirname(HERE)), "shared", "corpora", "shakespeare", "works.jsonl.gz"
)
TRAINING_CHARS = 20_000_000  # as the first-use vocabulary (data/pipeline.py)


def _texts(corpus: str, max_documents: int) -> list[str]:
  source = JsonlSource(corpus, text_field="text", id_field="id", validation_fraction=0.02)
  split = source.split("train")
  return [split[i]["text"] for i in range(min(max_documents, len(split)))]


def _capped(texts: list[str], chars: int):
  total = 0
  for text in texts:
    if total >= chars:
      return
    total += len(text)
    yield text


def measure(vocabulary, texts: list[str], batch_documents: int, min_tokens: int) -> dict:
  """Encodes `texts` in batches (repeating them) until `min_tokens` tokens; returns figures."""
  vocabulary.encode_batch(texts[:batch_documents])  # warm-up
  tokens = characters = 0
  wall, cpu = time.perf_counter(), time.process_time()
  while tokens < min_tokens:
    for start in range(0, len(texts), batch_documents):
      batch = texts[start : start + batch_documents]
      values, _ = vocabulary.encode_batch(batch)
      tokens += len(values)
      characters += sum(map(len, batch))
    if tokens == 0:
      break
  cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
  return {
    "tokens": tokens,
    "characters_per_token": round(characters / max(tokens, 1), 3),
    "cpu_seconds": round(cpu, 3),
    "wall_seconds": round(wall, 3),
    "tokens_per_cpu_second": round(tokens / max(cpu, 1e-9)),
    "tokens_per_wall_second": round(tokens / max(wall, 1e-9)),
  }


def run(
  corpus: str = DEFAULT_CORPUS,
  vocab_size: int = 32000,
  extra_ids: int = 100,
  types: tuple[str, ...] = tokenizer_training.VOCAB_TYPES,
  max_documents: int = 100_000,
  batch_documents: int = 64,
  min_tokens: int = 4_000_000,
  training_chars: int = TRAINING_CHARS,
  cache_dir: str = "",
) -> dict:
  """Trains (or reuses, in `cache_dir`) one vocabulary per type and measures each."""
  texts = _texts(corpus, max_documents)
  cache_dir = cache_dir or tempfile.mkdtemp(prefix="t5x_lite_tokenizers_")
  results = {
    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    "corpus": corpus,
    "documents": len(texts),
    "vocab_size": vocab_size,
    "types": {},
  }
  for vocab_type in types:
    directory = os.path.join(cache_dir, f"{vocab_type}_{vocab_size}_{extra_ids}")
    start = time.perf_counter()
    vocabulary = tokenizer_training.train_vocabulary(
      _capped(texts, training_chars), vocab_type, vocab_size, extra_ids, directory
    )
    figures = measure(vocabulary, texts, batch_documents, min_tokens)
    figures["training_seconds"] = round(time.perf_counter() - start, 1)
    figures["vocabulary"] = f"{type(vocabulary).__name__}, {vocabulary.vocab_size} ids"
    results["types"][vocab_type] = figures
  return results


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--corpus", default=DEFAULT_CORPUS)
  parser.add_argument("--vocab-size", type=int, default=32000)
  parser.add_argument("--batch-documents", type=int, default=64)
  parser.add_argument("--min-tokens", type=int, default=4_000_000)
  parser.add_argument("--types", default=",".join(tokenizer_training.VOCAB_TYPES))
  parser.add_argument("--cache-dir", default="", help="keep the trained vocabularies here")
  parser.add_argument("--json", default="", help="write the results here")
  parser.add_argument("--smoke", action="store_true", help="tiny run: checks the tool works")
  args = parser.parse_args(argv)
  if not os.path.exists(args.corpus):
    parser.error(f"corpus {args.corpus!r} does not exist")
  kwargs = dict(vocab_size=args.vocab_size, min_tokens=args.min_tokens)
  if args.smoke:
    kwargs = dict(vocab_size=400, extra_ids=10, max_documents=3, min_tokens=1000,
                  training_chars=200_000)  # fmt: skip
  results = run(
    args.corpus,
    types=tuple(args.types.split(",")),
    batch_documents=args.batch_documents,
    cache_dir=args.cache_dir,
    **kwargs,
  )
  print(f"{results['machine']}; corpus {results['corpus']} ({results['documents']} documents)")
  print(f"{'type':<12}{'tokens/CPU-s':>14}{'tokens/wall-s':>15}{'chars/token':>13}{'tokens':>12}")
  for name, r in results["types"].items():
    print(
      f"{name:<12}{r['tokens_per_cpu_second']:>14,}{r['tokens_per_wall_second']:>15,}"
      f"{r['characters_per_token']:>13}{r['tokens']:>12,}"
    )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
