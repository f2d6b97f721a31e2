"""Quality rules: Gopher quality, Gopher repetition, C4 and FineWeb, as datatrove defines them.

Each rule is small and named `<group>.<field>`, where `<field>` is the config field holding its
threshold (e.g. `gopher_quality.min_doc_words`, `c4.min_num_sentences`), so a removal reason
points at the knob that caused it. A group checks its rules in datatrove's order and stops at
the first that fails; the result names the rule and the value it measured.

Definitions and defaults follow datatrove 0.10 (`pipeline/filters/*.py`), which follow the
papers: Gopher (Rae et al. 2021, Table A1 and section A.1.1), C4 (Raffel et al. 2020, and
TFDS's c4_utils), FineWeb (Penedo et al. 2024). Differences, all deliberate:
  * words come from one regex (letters/digits with inner apostrophes, or runs of punctuation)
    instead of spaCy's English tokenizer: the same split on ordinary prose, 20-50x faster;
  * C4 counts sentences by terminal punctuation instead of NLTK punkt;
  * n-gram statistics run on integer ids in numpy; the results equal datatrove's definitions
    (tests/test_curation_filters.py checks them against a transcription of datatrove's code).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import regex

from t5x_lite.curation.text import split_words

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
C4_POLICY_SUBSTRINGS = (
  "terms of use",
  "privacy policy",
  "cookie policy",
  "uses cookies",
  "use of cookies",
  "use cookies",
)
_C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
_C4_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_C4_POLICY = re.compile("|".join(map(re.escape, C4_POLICY_SUBSTRINGS)))
_C4_SENTENCE_END = re.compile(r"[.!?]+['\"”’)\]]*(?=\s|$)")
_WORD_TOKEN = re.compile(r"\w+(?:['’]\w+)*")
_PUNCT_TOKEN = re.compile(r"[^\w\s]+")
# A word token (letters/digits, inner apostrophes) without a letter: digits and underscores.
_NO_LETTER_TOKEN = re.compile(r"(?<!\w)(?<!\w['’])[\d_]+(?:['’][\d_]+)*(?!['’]?\w)")
_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")

Failure = tuple[str, float]  # (rule name, measured value)


@functools.cache
def terminal_punctuation() -> tuple[str, ...]:
  """Characters that end a sentence in any script (Unicode Sentence_Terminal; datatrove's
  TERMINAL_PUNCTUATION is this set plus three Khmer signs)."""
  every = "".join(map(chr, range(0x20000)))  # planes 0-1 hold every Sentence_Terminal
  return tuple(sorted(set(regex.findall(r"\p{Sentence_Terminal}", every)) | {"៖", "៙", "៚"}))


def find_duplicates(items: Sequence[str]) -> tuple[int, int]:
  """(elements seen before, their total characters): datatrove's `find_duplicates`."""
  seen: set[str] = set()
  elements = chars = 0
  for item in items:
    if item in seen:
      elements += 1
      chars += len(item)
    else:
      seen.add(item)
  return elements, chars


# ---------------------------------------------------------------------------------------------
# n-gram statistics on integer ids (Gopher repetition).

_P = np.uint64(0x100000001B3)  # FNV prime: odd, so the polynomial hash is a bijection per step


def _mix(values: np.ndarray) -> np.ndarray:
  z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


class _NGrams:
  """n-gram hashes of a word list, built incrementally n = 1, 2, ..."""

  def __init__(self, words: list[str]):
    first = {}
    ids = np.fromiter(map(first.setdefault, words, itertools.count()), np.int64, len(words))
    self.unigram = _mix(ids)
    self.lengths = np.fromiter(map(len, words), np.int64, len(words))
    self.cumlen = np.concatenate([[0], np.cumsum(self.lengths)])
    self.hashes = {1: self.unigram}

  def of(self, n: int) -> np.ndarray:
    """[len(words) - n + 1] uint64 hashes of the n-grams."""
    if n not in self.hashes:
      previous = self.of(n - 1)
      with np.errstate(over="ignore"):
        self.hashes[n] = previous[:-1] * _P + self.unigram[n - 1 :]
    return self.hashes[n]

  def chars(self, n: int) -> np.ndarray:
    """[len(words) - n + 1] characters of each n-gram's words, without separators."""
    return self.cumlen[n:] - self.cumlen[:-n]


def top_ngram_chars(grams: _NGrams, n: int) -> int:
  """Characters of the most frequent n-gram (joined by spaces) times its count; ties go to
  the earliest (datatrove's `find_top_duplicate`: Counter.most_common(1))."""
  h = grams.of(n)
  order = np.argsort(h, kind="stable")  # equal hashes stay in text order
  run_start = np.flatnonzero(np.concatenate([[True], h[order][1:] != h[order][:-1]]))
  counts = np.diff(np.append(run_start, len(h)))
  best = counts.max()
  first = order[run_start[counts == best]].min()
  return int(best) * (int(grams.chars(n)[first]) + n - 1)


def duplicated_ngram_chars(grams: _NGrams, n: int) -> int:
  """Characters of n-grams that repeat an earlier one, counting overlapping repeats once
  (datatrove's `find_all_duplicate`: a repeat jumps n words ahead)."""
  h = grams.of(n)
  values = h.tolist()
  m = len(values)
  if len(set(values)) == m:  # no n-gram repeats (the common case)
    return 0
  # Only positions whose n-gram occurred earlier can be repeats; between them every visited
  # position is a first sighting. Walk the candidates, adding the stretches between in bulk.
  _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
  candidates = np.flatnonzero(first[inverse.reshape(-1)] < np.arange(m)).tolist()
  chars = grams.chars(n)
  seen: set[int] = set()
  total = idx = 0
  for c in candidates:
    if c < idx:  # skipped by an earlier repeat
      continue
    seen.update(values[idx:c])
    if values[c] in seen:
      total += int(chars[c])
      idx = c + n
    else:
      seen.add(values[c])
      idx = c + 1
  return total


# ---------------------------------------------------------------------------------------------
# The four groups. Each takes the text (and config section) and returns None (keep) or the
# first failing (rule, value); C4 also returns the text with its line filters applied.


def gopher_repetition(text: str, cfg: Any, words: list[str] | None = None) -> Failure | None:
  """Gopher repetition rules (datatrove GopherRepetitionFilter)."""
  size = len(text)
  if size == 0:
    return ("gopher_repetition.empty", 0.0)
  paragraphs = _PARAGRAPHS.split(text.strip())
  dup, dup_chars = find_duplicates(paragraphs)
  if cfg.dup_para_frac and dup / len(paragraphs) > cfg.dup_para_frac:
    return ("gopher_repetition.dup_para_frac", dup / len(paragraphs))
  if cfg.dup_para_char_frac and dup_chars / size > cfg.dup_para_char_frac:
    return ("gopher_repetition.dup_para_char_frac", dup_chars / size)
  lines = _LINES.split(text)
  dup, dup_chars = find_duplicates(lines)
  if cfg.dup_line_frac and dup / len(lines) > cfg.dup_line_frac:
    return ("gopher_repetition.dup_line_frac", dup / len(lines))
  if cfg.dup_line_char_frac and dup_chars / size > cfg.dup_line_char_frac:
    return ("gopher_repetition.dup_line_char_frac", dup_chars / size)
  words = split_words(text) if words is None else words
  grams = _NGrams(words)
  for n, threshold in cfg.top_n_grams:
    if len(words) < n:
      continue
    frac = top_ngram_chars(grams, n) / size
    if frac > threshold:
      return (f"gopher_repetition.top_{n}_gram", frac)
  no_repeat_below = None  # no repeated n-gram means no repeated longer one
  for n, threshold in cfg.dup_n_grams:
    if len(words) < n or (no_repeat_below is not None and n > no_repeat_below):
      continue
    repeated = duplicated_ngram_chars(grams, n)
    if repeated == 0:
      no_repeat_below = n
    frac = repeated / size
    if frac > threshold:
      return (f"gopher_repetition.duplicated_{n}_n_grams", frac)
  return None


def gopher_quality(text: str, cfg: Any, words: list[str] | None = None) -> Failure | None:
  """Gopher quality rules (datatrove GopherQualityFilter); `words` = split_words(text)."""
  words = split_words(text) if words is None else words
  word_tokens = _WORD_TOKEN.findall(text)  # the words of `words` that are not punctuation
  n_words = len(words)
  n_content = len(word_tokens)
  if cfg.min_doc_words and n_content < cfg.min_doc_words:
    return ("gopher_quality.min_doc_words", float(n_content))
  if cfg.max_doc_words and n_content > cfg.max_doc_words:
    return ("gopher_quality.max_doc_words", float(n_content))
  if n_content == 0:
    return ("gopher_quality.min_doc_words", 0.0)
  mean_length = sum(map(len, word_tokens)) / n_content
  if cfg.min_avg_word_length and mean_length < cfg.min_avg_word_length:
    return ("gopher_quality.min_avg_word_length", mean_length)
  if cfg.max_avg_word_length and mean_length > cfg.max_avg_word_length:
    return ("gopher_quality.max_avg_word_length", mean_length)
  if cfg.max_symbol_word_ratio:
    ratio = text.count("#") / n_words
    if ratio > cfg.max_symbol_word_ratio:
      return ("gopher_quality.max_symbol_word_ratio", ratio)
    ratio = (text.count("...") + text.count("…")) / n_words
    if ratio > cfg.max_symbol_word_ratio:
      return ("gopher_quality.max_symbol_word_ratio", ratio)
  lines = text.splitlines()
  if cfg.max_bullet_lines_ratio:
    bullets = sum(1 for s in lines if s.lstrip().startswith(("•", "-")))
    if bullets / len(lines) > cfg.max_bullet_lines_ratio:
      return ("gopher_quality.max_bullet_lines_ratio", bullets / len(lines))
  if cfg.max_ellipsis_lines_ratio:
    ellipsis = sum(1 for s in lines if s.rstrip().endswith(("...", "…")))
    if ellipsis / len(lines) > cfg.max_ellipsis_lines_ratio:
      return ("gopher_quality.max_ellipsis_lines_ratio", ellipsis / len(lines))
  if cfg.min_alpha_words_ratio:
    ratio = (n_content - len(_NO_LETTER_TOKEN.findall(text))) / n_words
    if ratio < cfg.min_alpha_words_ratio:
      return ("gopher_quality.min_alpha_words_ratio", ratio)
  if cfg.min_stop_words:
    found = len(set(cfg.stop_words).intersection(words))
    if found < cfg.min_stop_words:
      return ("gopher_quality.min_stop_words", float(found))
  return None


def c4(text: str, cfg: Any) -> tuple[Failure | None, str, int]:
  """C4 rules (datatrove C4QualityFilter, lines split on newlines).

  Returns (failure or None, the text with the dropped lines removed, lines dropped). Line
  rules drop lines (no terminal punctuation, fewer than `min_words_per_line` words, a word
  over `max_word_length` characters, 'javascript', policy phrases); document rules drop the
  document ('lorem ipsum', a curly bracket, fewer than `min_num_sentences` sentences left).
  """
  kept: list[str] = []
  dropped = 0
  max_word = cfg.max_word_length
  for line in text.splitlines():
    line = line.strip()
    words = line.split()
    if max_word > 0 and len(line) > max_word and max(map(len, words)) > max_word:
      dropped += 1
      continue
    if cfg.remove_citations and "[" in line:
      line = _C4_CITATION.sub("", line)
    if cfg.filter_no_terminal_punct and (
      not line.endswith(_C4_END_PUNCTUATION) or line.endswith("...")
    ):
      dropped += 1
      continue
    if len(words) < cfg.min_words_per_line:
      dropped += 1
      continue
    lower = line.lower()
    if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
      return ("c4.filter_lorem_ipsum", 1.0), text, dropped
    if cfg.filter_javascript and "javascript" in lower:
      dropped += 1
      continue
    if cfg.filter_curly_bracket and "{" in line:
      return ("c4.filter_curly_bracket", 1.0), text, dropped
    if cfg.filter_policy and _C4_POLICY.search(lower):
      dropped += 1
      continue
    kept.append(line)
  joined = "\n".join(kept)
  if cfg.min_num_sentences > 0:
    # Sentences of each kept line, at least one per line (a line is a sentence or more).
    sentences = len(_C4_SENTENCE_END.findall(joined))
    if not cfg.filter_no_terminal_punct:
      sentences += sum(1 for line in kept if not _C4_SENTENCE_END.search(line))
    if sentences < cfg.min_num_sentences:
      return ("c4.min_num_sentences", float(sentences)), text, dropped
  return None, joined.strip(), dropped


def fineweb(text: str, cfg: Any, words: list[str] | None = None) -> Failure | None:
  """FineWeb's extra rules (datatrove FineWebQualityFilter)."""
  lines = [line for line in text.split("\n") if line.strip()]
  if not lines:
    return ("fineweb.empty", 0.0)
  terminal = terminal_punctuation()
  ends = sum(1 for line in lines if line.endswith(terminal)) / len(lines)
  if ends < cfg.line_punct_thr and not (ends == 0 and cfg.line_punct_exclude_zero):
    return ("fineweb.line_punct_thr", ends)
  short = sum(1 for line in lines if len(line) <= cfg.short_line_length) / len(lines)
  if short > cfg.short_line_thr:
    return ("fineweb.short_line_thr", short)
  chars = len(text) - text.count("\n")
  ratio = find_duplicates(lines)[1] / max(chars, 1)
  if ratio > cfg.char_duplicates_ratio:
    return ("fineweb.char_duplicates_ratio", ratio)
  n_words = len(split_words(text) if words is None else words)
  ratio = text.count("\n") / max(n_words, 1)
  if ratio > cfg.new_line_ratio:
    return ("fineweb.new_line_ratio", ratio)
  return None
