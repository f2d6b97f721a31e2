"""GPT-2-style byte-level BPE encoded by `tiktoken`, id for id what `tokenizers` gives.

The `tokenizers` BPE model encodes about 0.4 M tokens per CPU-second on one core; `tiktoken`'s
encoder of the same merges runs about 7x faster, which decides the speed of a span-corruption
pipeline over a GPT-2, RoBERTa or BART vocabulary. `tiktoken_encoder(tokenizer)` returns a
`tiktoken.Encoding` when the two are provably the same function of the text, and `None` (with
the reason) otherwise, so `HuggingFaceVocabulary` keeps `tokenizers` for everything else
(WordPiece, Metaspace, normalizers, GPT-4/Llama-3 split regexes, added-token flags).

Same function of the text requires:
- a `BPE` model over the 256 byte-level characters, without dropout, unknown-token fusing,
  byte fallback or subword affixes;
- merge priority equal to id order (a trained vocabulary assigns each merge the next id), with
  one merge per result token: tiktoken ranks a merge by the id of the token it makes;
- every token reachable by its own merges, or `ignore_merges` set: tiktoken takes a whole
  pre-token that is in the vocabulary as one token, `tokenizers` does only with `ignore_merges`;
- no normalizer, and the `ByteLevel` pre-tokenizer with GPT-2's regex and no prefix space;
- added tokens without strip/word flags; they are split out of the text first (longest first,
  as the `tokenizers` matcher does) and take their ids, as `encode(add_special_tokens=False)`.
"""

from __future__ import annotations

import json
from typing import Any

import tiktoken
import tokenizers

# GPT-2's pre-tokenizer regex, which `tokenizers`' ByteLevel(use_regex=True) applies.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def unicode_to_byte() -> dict[str, int]:
  """GPT-2's bytes_to_unicode, inverted: the printable character each byte is written as."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
  printable += range(ord("®"), ord("ÿ") + 1)
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[chr(b)] = b
    else:
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


def why_not_tiktoken(state: dict[str, Any]) -> str | None:
  """Why a tokenizer.json (parsed) is not GPT-2-style byte-level BPE; None if it is."""
  model, pre = state.get("model") or {}, state.get("pre_tokenizer") or {}
  if model.get("type") != "BPE":
    return f"model is {model.get('type')}, not BPE"
  for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
    if model.get(key):
      return f"BPE {key}={model[key]!r}"
  if model.get("byte_fallback") or model.get("fuse_unk"):
    return "BPE byte_fallback/fuse_unk"
  if state.get("normalizer"):
    return f"normalizer {state['normalizer'].get('type')}"
  if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
    return f"pre-tokenizer {pre.get('type')}, not ByteLevel with GPT-2's regex"
  if pre.get("add_prefix_space"):
    return "ByteLevel add_prefix_space"
  for added in state.get("added_tokens") or []:
    if added.get("lstrip") or added.get("rstrip") or added.get("single_word"):
      return f"added token {added.get('content')!r} strips or matches single words"
  return None


def tiktoken_encoder(tokenizer: tokenizers.Tokenizer) -> tuple[Any, str | None]:
  """(`tiktoken.Encoding` equal to `tokenizer` without post-processing, None) or (None, why)."""
  state = json.loads(tokenizer.to_str())
  why = why_not_tiktoken(state)
  if why:
    return None, why
  model = state["model"]
  vocab: dict[str, int] = model["vocab"]
  added = {t["content"]: t["id"] for t in state.get("added_tokens") or []}
  to_byte = unicode_to_byte()
  ranks: dict[bytes, int] = {}
  for token, i in vocab.items():
    if token in added:
      continue
    if any(c not in to_byte for c in token):
      return None, f"token {token!r} is not byte-level"
    ranks[bytes(to_byte[c] for c in token)] = i
  if any(bytes([b]) not in ranks for b in range(256)):
    return None, "not every byte is in the vocabulary"
  previous, made = -1, set()
  for merge in model.get("merges") or []:
    left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
    i = vocab.get(left + right)
    if i is None or i <= previous or i in made:
      return None, "merge order is not id order"
    previous = i
    made.add(i)
  if not model.get("ignore_merges"):
    for token in vocab:
      if token not in added and len(token) > 1 and len(tokenizer.model.tokenize(token)) != 1:
        return None, f"token {token!r} is not reachable by its merges"
  # tiktoken splits specials by a regex alternation (first match): longest first = leftmost longest
  specials = dict(sorted(added.items(), key=lambda kv: -len(kv[0])))
  encoding = tiktoken.Encoding(
    "t5x_lite", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
  )
  return encoding, None
