"""Whole-word masking for MLM (`mlm_whole_word`): which tokens belong to one word, and the words
to mask.

A word is a token that starts one plus the tokens that continue it. How a piece says so depends
on the tokenizer (`Vocabulary.word_boundary`): WordPiece marks continuations (`##ing`); byte-level
BPE (`Ġword`), SentencePiece (`▁word`) and bytes (a space) mark word starts, as fairseq's
`mask_whole_words` reads them. Special tokens, the first token of a row and the token after a
special token always start a word. Masking then selects each word with probability `mask_rate`
(all its tokens at once), so that `mask_rate` of the ordinary tokens are selected on average, as
token-level MLM does.
"""

from __future__ import annotations

import numpy as np

from t5x_lite.data.vocabularies import Vocabulary

_TABLES: dict[str, np.ndarray] = {}


def word_start_table(vocabulary: Vocabulary) -> np.ndarray:
  """bool [vocab_size]: whether each id starts a word on its own (cached per vocabulary)."""
  key = vocabulary.fingerprint
  table = _TABLES.get(key)
  if table is None:
    kind, marker = vocabulary.word_boundary
    pieces = vocabulary.pieces()
    marked = np.fromiter((p.startswith(marker) for p in pieces), bool, len(pieces))
    if kind == "continues":
      table = ~marked
    elif kind == "starts":
      table = marked
    else:
      raise ValueError(f"word_boundary kind {kind!r}: expected 'starts' or 'continues'")
    table[vocabulary.special_ids] = True
    _TABLES[key] = table
  return table


def word_ids(tokens: np.ndarray, lengths: np.ndarray, vocabulary: Vocabulary) -> np.ndarray:
  """Word index of every token of ragged rows -> int64 [total], increasing, unique across rows.

  tokens: int [total] (rows concatenated); lengths: int [rows] summing to total.
  """
  tokens = np.asarray(tokens)
  table = word_start_table(vocabulary)
  inside = (tokens >= 0) & (tokens < len(table))
  starts = np.where(inside, table[np.clip(tokens, 0, len(table) - 1)], True)
  special = vocabulary.special_mask(tokens)
  starts[1:] |= special[:-1]  # the token after [CLS] / <s> starts a word
  offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
  starts[offsets[np.asarray(lengths) > 0]] = True
  return np.cumsum(starts) - 1


def select_whole_words(
  word_index: np.ndarray, token_uniform: np.ndarray, special: np.ndarray, mask_rate: float
) -> np.ndarray:
  """bool [total]: tokens of the words selected for MLM.

  word_index: int64 [total] from `word_ids`; token_uniform: float [total] uniform draws (one per
  token; a word uses its first token's); special: bool [total], never selected.
  """
  first = np.flatnonzero(np.diff(word_index, prepend=-1) != 0)  # first token of each word
  word_draw = token_uniform[first][word_index - word_index[0]] if len(word_index) else token_uniform
  return (word_draw < mask_rate) & ~special
