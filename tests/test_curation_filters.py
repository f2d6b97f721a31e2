"""Curation rules: each rule on crafted documents (kept/removed, reason and measured value), and
the vectorised rules equal a line-by-line transcription of datatrove 0.10's definitions."""

import random
import re
import types
from collections import Counter

import numpy as np
import pytest

from t5x_lite.curation import filters, settings
from t5x_lite.curation.text import mask_pii, normalize, split_words

CONFIG = settings.load("curate.py:web_en")


def section(name, **overrides):
  values = CONFIG[name].to_dict()
  values.update(overrides)
  return types.SimpleNamespace(**values)


GOOD_LINES = [
  "The committee met on a rainy Tuesday to review the annual budget of the town library.",
  "Several members argued that the reading room needed new chairs and better lighting.",
  "Others wanted to spend the money on digital books and a faster internet connection.",
  "After a long discussion, they agreed to split the funds between both projects.",
  "The librarian thanked everyone and promised to report on the progress by spring.",
  "Local families have already started to borrow more books than in previous years.",
  "Volunteers with free time will help to move the shelves during the summer break.",
]
GOOD = "\n".join(GOOD_LINES)


def test_good_document_passes_every_rule():
  assert filters.gopher_repetition(GOOD, section("gopher_repetition")) is None
  assert filters.gopher_quality(GOOD, section("gopher_quality")) is None
  failure, text, dropped = filters.c4(GOOD, section("c4"))
  assert failure is None and text == GOOD and dropped == 0
  assert filters.fineweb(GOOD, section("fineweb")) is None


# ---------------------------------------------------------------------------------------------
# Gopher quality.

LONG_WORDS = " ".join(["internationalization", "counterrevolutionaries", "the", "and"] * 15)
NO_STOP = "Bright stars shine over quiet hills while gentle rivers flow toward distant seas"


@pytest.mark.parametrize(
  "text,overrides,rule,value",
  [
    ("The cat sat on the mat.", {}, "min_doc_words", 6),
    (GOOD, {"max_doc_words": 80}, "max_doc_words", 96),
    (" ".join(["a", "an", "ox", "is"] * 15) + ".", {}, "min_avg_word_length", 1.75),
    (LONG_WORDS, {}, "max_avg_word_length", 12.0),
    (GOOD + " #tag" * 30, {}, "max_symbol_word_ratio", 30 / 164),  # 104 words + 30 # + 30 tag
    (GOOD + " ..." * 20, {}, "max_symbol_word_ratio", 20 / 124),
    (
      "\n".join(
        f"- item {i} of the list is the best one of them all with the rest" for i in range(10)
      ),
      {},
      "max_bullet_lines_ratio",
      1.0,
    ),
    (
      GOOD + "\n" + "\n".join(f"And then the story goes on and on {i}…" for i in range(4)),
      {},
      "max_ellipsis_lines_ratio",
      4 / 11,
    ),
    (GOOD + " " + " ".join(str(i) for i in range(40)), {}, "min_alpha_words_ratio", 96 / 144),
    ((NO_STOP + ". ") * 5, {}, "min_stop_words", 0),
  ],
)
def test_gopher_quality_rule(text, overrides, rule, value):
  failure = filters.gopher_quality(text, section("gopher_quality", **overrides))
  assert failure is not None and failure[0] == f"gopher_quality.{rule}"
  assert failure[1] == pytest.approx(value)
  # The same text with that one rule switched off is not removed by it.
  off = section("gopher_quality", **{**overrides, rule: 0})
  again = filters.gopher_quality(text, off)
  assert again is None or again[0] != f"gopher_quality.{rule}"


# ---------------------------------------------------------------------------------------------
# Gopher repetition.

WORDS = [
  "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
  "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
]  # fmt: skip


def distinct_sentences(count, seed=0):
  rng = random.Random(seed)
  return [" ".join(rng.sample(WORDS, 8)) + f" {i}." for i in range(count)]


LONG = " ".join(distinct_sentences(6, seed=1))
REPEATED = " apple grape lemon mango peach melon berry guava olive prune "


@pytest.mark.parametrize(
  "text,rule",
  [
    ("\n\n".join(["same paragraph here."] * 3 + ["another one."]), "dup_para_frac"),
    ("\n\n".join([LONG, LONG] + distinct_sentences(4)), "dup_para_char_frac"),
    ("\n".join(["same line here."] * 3 + ["another one."]), "dup_line_frac"),
    ("\n".join([LONG, LONG] + distinct_sentences(4)), "dup_line_char_frac"),
    (" ".join(f"the cat {w}{i}" for i, w in enumerate(WORDS)), "top_2_gram"),
    (
      " ".join(
        f"{w}{i} aaaaaaaa bbbbbbbb cccccccc p{i}{'p' * 20}"
        if i % 2
        else f"{w}{i} aaaaaaaa zz{i} q{i}{'q' * 20}"
        for i, w in enumerate(WORDS * 2)
      ),
      "top_3_gram",
    ),
    (
      " ".join(distinct_sentences(3, seed=5))
      + REPEATED
      + " ".join(distinct_sentences(2, seed=6))
      + REPEATED
      + " ".join(distinct_sentences(2, seed=7))
      + REPEATED,
      "duplicated_5_n_grams",
    ),
  ],
)
def test_gopher_repetition_rule(text, rule):
  cfg = section("gopher_repetition")
  failure = filters.gopher_repetition(text, cfg)
  assert failure is not None and failure[0] == f"gopher_repetition.{rule}", failure
  assert failure == reference_gopher_repetition(text, cfg)


# ---------------------------------------------------------------------------------------------
# C4 and FineWeb.


@pytest.mark.parametrize(
  "extra,rule,value",
  [
    ("Lorem ipsum dolor sit amet, consectetur adipiscing.", "filter_lorem_ipsum", 1.0),
    ("The function returns {x} to the caller.", "filter_curly_bracket", 1.0),
  ],
)
def test_c4_document_rules(extra, rule, value):
  failure, _, _ = filters.c4(GOOD + "\n" + extra, section("c4"))
  assert failure == (f"c4.{rule}", value)


def test_c4_min_sentences_and_line_rules():
  failure, _, _ = filters.c4("\n".join(GOOD_LINES[:3]), section("c4"))
  assert failure == ("c4.min_num_sentences", 3.0)
  noisy = "\n".join(
    [
      GOOD_LINES[0].replace("met", "met[1]"),
      "Please enable JavaScript to view the comments below.",
      "This site uses cookies to improve your experience.",
      "A line without any final mark",
      "Too short.",
      "A " + "x" * 1001 + " word.",
      *GOOD_LINES[1:],
    ]
  )
  failure, text, dropped = filters.c4(noisy, section("c4"))
  assert failure is None and dropped == 5
  assert text == GOOD  # the citation [1] is gone too


@pytest.mark.parametrize(
  "text,rule,value",
  [
    ("\n".join(f"a line with no final mark number {i}" for i in range(10)), "line_punct_thr", 0.0),
    (
      "\n".join([f"Short line {i}." for i in range(10)] + GOOD_LINES[:2]),
      "short_line_thr",
      10 / 12,
    ),
    (
      GOOD + "\n" + GOOD_LINES[0],
      "char_duplicates_ratio",
      len(GOOD_LINES[0]) / (len(GOOD) + len(GOOD_LINES[0]) - 6),  # characters without newlines
    ),
    ("\n".join(f"Extraordinarily comprehensive{i}." for i in range(20)), "new_line_ratio", 19 / 60),
  ],
)
def test_fineweb_rule(text, rule, value):
  failure = filters.fineweb(text, section("fineweb"))
  assert failure[0] == f"fineweb.{rule}"
  assert failure[1] == pytest.approx(value)
  assert failure == reference_fineweb(text, section("fineweb"))


# ---------------------------------------------------------------------------------------------
# Normalisation and PII.


def test_normalize_changes_only_invisible_things():
  cfg = CONFIG.normalize
  assert normalize("Cafe\u0301 cr\u00e8me", cfg) == "Café crème"  # NFC
  assert normalize("The cafÃ© is open.", cfg) == "The café is open."  # mojibake (ftfy)
  assert normalize("a\x00b\x07c\ufeff\r\nnext  line \t\n\n\n\nend", cfg) == "abc\nnext line\n\nend"
  assert normalize("non\u00a0breaking", cfg) == "non breaking"
  assert normalize("“Curly quotes” stay.", cfg) == "“Curly quotes” stay."
  assert normalize(" \n\t\n", cfg) == ""


def test_pii_masking_counts_and_keeps_private_addresses():
  text = (
    "Mail jane.doe@example.org or admin@uni.edu; server 8.8.8.8, router 192.168.1.1, 127.0.0.1."
  )
  masked, emails, ips = mask_pii(text, CONFIG.pii)
  assert (emails, ips) == (2, 1)
  assert masked == (
    "Mail email@example.com or email@example.com; server 192.0.2.1, router 192.168.1.1, 127.0.0.1."
  )


# ---------------------------------------------------------------------------------------------
# Equality with datatrove's definitions on a random corpus with repetition of every kind.


def find_duplicates(x):
  unique_x, duplicate_chars, duplicate_elements = set(), 0, 0
  for element in x:
    if element in unique_x:
      duplicate_chars += len(element)
      duplicate_elements += 1
    else:
      unique_x.add(element)
  return duplicate_elements, duplicate_chars


def reference_gopher_repetition(text, cfg):
  """datatrove GopherRepetitionFilter.filter, transcribed (words from our tokenizer)."""

  def get_n_grams(words, n):
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]

  def find_top_duplicate(x):
    top = Counter(x).most_common(1)[0]
    return len(top[0]) * top[1]

  def find_all_duplicate(words, n):
    unique, repeated_chars, idx = set(), 0, 0
    while idx < len(words) - n + 1:
      n_gram = "".join(words[idx : idx + n])
      if n_gram in unique:
        repeated_chars += len(n_gram)
        idx += n
      else:
        unique.add(n_gram)
        idx += 1
    return repeated_chars

  paragraphs = re.split(r"\n{2,}", text.strip())
  dup, chars = find_duplicates(paragraphs)
  if dup / len(paragraphs) > cfg.dup_para_frac:
    return ("gopher_repetition.dup_para_frac", dup / len(paragraphs))
  if chars / len(text) > cfg.dup_para_char_frac:
    return ("gopher_repetition.dup_para_char_frac", chars / len(text))
  lines = re.split("\n+", text)
  dup, chars = find_duplicates(lines)
  if dup / len(lines) > cfg.dup_line_frac:
    return ("gopher_repetition.dup_line_frac", dup / len(lines))
  if chars / len(text) > cfg.dup_line_char_frac:
    return ("gopher_repetition.dup_line_char_frac", chars / len(text))
  words = split_words(text)
  for n, frac in cfg.top_n_grams:
    grams = get_n_grams(words, n)
    if grams and find_top_duplicate(grams) / len(text) > frac:
      return (f"gopher_repetition.top_{n}_gram", find_top_duplicate(grams) / len(text))
  for n, frac in cfg.dup_n_grams:
    if find_all_duplicate(words, n) / len(text) > frac:
      return (f"gopher_repetition.duplicated_{n}_n_grams", find_all_duplicate(words, n) / len(text))
  return None


def reference_gopher_quality(text, cfg):
  """datatrove GopherQualityFilter.filter, transcribed (punctuation = non-word tokens)."""
  words = split_words(text)
  n_words = len(words)
  non_symbol = [w for w in words if re.search(r"\w", w)]
  if len(non_symbol) < cfg.min_doc_words:
    return ("gopher_quality.min_doc_words", len(non_symbol))
  if len(non_symbol) > cfg.max_doc_words:
    return ("gopher_quality.max_doc_words", len(non_symbol))
  avg = np.mean([len(w) for w in non_symbol])
  if avg < cfg.min_avg_word_length:
    return ("gopher_quality.min_avg_word_length", avg)
  if avg > cfg.max_avg_word_length:
    return ("gopher_quality.max_avg_word_length", avg)
  if text.count("#") / n_words > cfg.max_symbol_word_ratio:
    return ("gopher_quality.max_symbol_word_ratio", text.count("#") / n_words)
  if (text.count("...") + text.count("…")) / n_words > cfg.max_symbol_word_ratio:
    return ("gopher_quality.max_symbol_word_ratio", (text.count("...") + text.count("…")) / n_words)
  lines = text.splitlines()
  bullets = sum(s.lstrip().startswith("•") or s.lstrip().startswith("-") for s in lines)
  if bullets / len(lines) > cfg.max_bullet_lines_ratio:
    return ("gopher_quality.max_bullet_lines_ratio", bullets / len(lines))
  ellipsis = sum(s.rstrip().endswith("...") or s.rstrip().endswith("…") for s in lines)
  if ellipsis / len(lines) > cfg.max_ellipsis_lines_ratio:
    return ("gopher_quality.max_ellipsis_lines_ratio", ellipsis / len(lines))
  alpha = sum([any(c.isalpha() for c in w) for w in words]) / n_words
  if alpha < cfg.min_alpha_words_ratio:
    return ("gopher_quality.min_alpha_words_ratio", alpha)
  found = len(set(cfg.stop_words).intersection(set(words)))
  if found < cfg.min_stop_words:
    return ("gopher_quality.min_stop_words", found)
  return None


def reference_fineweb(text, cfg):
  """datatrove FineWebQualityFilter.filter, transcribed."""
  lines = [line for line in text.split("\n") if line.strip() != ""]
  if not lines:
    return ("fineweb.empty", 0.0)
  ratio = sum(1 for line in lines if line.endswith(filters.terminal_punctuation())) / len(lines)
  if ratio < cfg.line_punct_thr and not (ratio == 0 and cfg.line_punct_exclude_zero):
    return ("fineweb.line_punct_thr", ratio)
  ratio = sum(1 for line in lines if len(line) <= cfg.short_line_length) / len(lines)
  if ratio > cfg.short_line_thr:
    return ("fineweb.short_line_thr", ratio)
  ratio = find_duplicates(lines)[1] / len(text.replace("\n", ""))
  if ratio > cfg.char_duplicates_ratio:
    return ("fineweb.char_duplicates_ratio", ratio)
  ratio = text.count("\n") / len(split_words(text))
  if ratio > cfg.new_line_ratio:
    return ("fineweb.new_line_ratio", ratio)
  return None


def random_document(rng):
  """Prose with repeated words, phrases, lines, paragraphs, bullets, numbers and ellipses."""
  vocab = [f"{w}{'s' * rng.randint(0, 1)}" for w in WORDS] + list(CONFIG.gopher_quality.stop_words)
  lines = []
  for _ in range(rng.randint(1, 30)):
    kind = rng.random()
    if kind < 0.15 and lines:
      lines.append(rng.choice(lines))  # a repeated line
    elif kind < 0.25:
      lines.append("- " + " ".join(rng.choices(vocab, k=rng.randint(2, 8))))
    elif kind < 0.3:
      lines.append("")
    else:
      words = rng.choices(vocab, k=rng.randint(3, 25))
      if rng.random() < 0.3:
        words += words[: rng.randint(5, 12)]  # a repeated phrase
      if rng.random() < 0.1:
        words.append(str(rng.randint(0, 999)))
      lines.append(" ".join(words) + rng.choice([".", ".", "!", "?", "...", "", ","]))
  return "\n".join(lines).strip() or "empty."


def test_rules_equal_datatrove_definitions_on_random_documents():
  rng = random.Random(0)
  rep, quality, fine = section("gopher_repetition"), section("gopher_quality"), section("fineweb")
  reasons = Counter()
  for _ in range(400):
    text = random_document(rng)
    ours = filters.gopher_repetition(text, rep)
    theirs = reference_gopher_repetition(text, rep)
    assert (ours and (ours[0], pytest.approx(ours[1]))) == (theirs and (theirs[0], theirs[1]))
    ours = filters.gopher_quality(text, quality)
    theirs = reference_gopher_quality(text, quality)
    assert (ours and (ours[0], pytest.approx(ours[1]))) == (theirs and (theirs[0], theirs[1]))
    ours_f = filters.fineweb(text, fine)
    assert ours_f == reference_fineweb(text, fine)
    reasons.update(r[0] for r in (ours, ours_f, filters.gopher_repetition(text, rep)) if r)
  # The corpus exercises many rules, not just one.
  assert len(reasons) >= 8, reasons


@pytest.mark.parametrize("variant", ["web_en", "books", "code_docs"])
def test_every_shipped_curation_variant_loads_and_validates(variant):
  config = settings.load(f"curate.py:{variant}")
  assert config.variant == variant
  assert (config.dedup.bands, config.dedup.rows, config.dedup.ngram) == (14, 8, 5)  # datatrove's
