"""`t5x-lite curate`: raw files -> a curated corpus directory (a Task source).

  t5x-lite curate --input 'crawl/*.warc.gz' --out corpus/ --config curate.py:web_en \\
      [--workers 8] [--runner beam] [--config.langid.languages="('en','de')"]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from t5x_lite import config as config_lib
from t5x_lite.curation import CurationError, runner, settings


def add_parser(subparsers) -> argparse.ArgumentParser:
  """Adds the `curate` subcommand to the `t5x-lite` subparsers; its handler is `run`."""
  parser = subparsers.add_parser(
    "curate",
    help="clean, filter and deduplicate raw text into a corpus a Task can read",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
    "--input",
    action="append",
    required=True,
    help="input files (glob; repeatable): .txt, .jsonl(.gz/.zst), .parquet, .warc(.gz), .html",
  )
  parser.add_argument("--out", required=True, help="output directory (resumable: rerun to finish)")
  parser.add_argument(
    "--config", default=settings.DEFAULT_CONFIG, help="curation config file[:variant]"
  )
  parser.add_argument("--workers", type=int, default=0, help="processes (default: config)")
  parser.add_argument(
    "--runner", choices=("local", "beam"), default=None, help="default: config.runner.name"
  )
  parser.set_defaults(func=run)
  return parser


def run(args: argparse.Namespace, overrides: Sequence[str]) -> int:
  """Loads and validates the config (before reading any input), then runs the pipeline."""
  try:
    parsed = config_lib.parse_overrides(overrides)
  except config_lib.ConfigError as e:
    raise CurationError(str(e)) from None
  config = settings.load(args.config, parsed)
  name = args.runner or config.runner.name
  if name == "beam":
    from t5x_lite.curation import beam  # noqa: PLC0415 - needs the optional apache-beam

    manifest = beam.curate(args.input, args.out, config)
  else:
    manifest = runner.curate(args.input, args.out, config, workers=args.workers or None)
  totals = manifest["totals"]
  logging.info("report: %s/report.md", args.out)
  print(
    f"curated {totals['documents_in']:,} documents -> {manifest['documents']:,} "
    f"({100 * totals['document_yield']:.1f}%), {manifest['text_bytes'] / 1e6:.2f} MB in "
    f"{len(manifest['shards'])} shards; bad input skipped: {totals['bad_input']:,}; "
    f"outputs in {args.out}",
    flush=True,
  )
  return 0
