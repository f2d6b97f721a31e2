"""Hugging Face `tokenizers` vocabularies (WordPiece, byte-level BPE, ...) and tokenizer folders.

`HuggingFaceVocabulary` wraps a `tokenizers.Tokenizer` (the Rust library behind every
`transformers` fast tokenizer) behind the one `Vocabulary` interface: batch encoding in Rust,
special tokens read from the tokenizer and its folder's `tokenizer_config.json` /
`special_tokens_map.json` instead of fixed ids:

| family          | pad     | eos             | cls / sep     | mask     | sentinels            |
|-----------------|---------|-----------------|---------------|----------|----------------------|
| BERT (WordPiece)| [PAD]   | [SEP]           | [CLS] / [SEP] | [MASK]   | -                    |
| GPT-2 (byte BPE)| = eos   | <|endoftext|>   | -             | -        | -                    |
| RoBERTa / BART  | <pad>   | </s>            | <s> / </s>    | <mask>   | -                    |
| T5              | <pad>   | </s>            | lowest extras | (as cls) | <extra_id_N>         |

`load_vocabulary(directory)` reads any tokenizer folder (`tokenizer.json`, `spiece.model`,
`vocab.txt`, `vocab.json` + `merges.txt`, or a byte vocabulary's config) and
`save_vocabulary(vocabulary, directory)` writes one that `transformers.AutoTokenizer` loads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tokenizers
from tokenizers import implementations

from t5x_lite.data import DataError, fast_bpe
from t5x_lite.data.vocabularies import ByteVocabulary, SentencePieceVocabulary, Vocabulary

ROLES = ("pad", "eos", "unk", "bos", "cls", "sep", "mask")

# Token strings tried for a role the folder's configuration does not name, in order.
KNOWN_TOKENS: dict[str, tuple[str, ...]] = {
  "pad": ("[PAD]", "<pad>", "<|padding|>"),
  "eos": ("</s>", "<|endoftext|>", "[SEP]", "<eos>", "<|end_of_text|>"),
  "unk": ("[UNK]", "<unk>", "<|endoftext|>"),
  "bos": ("<s>", "[CLS]", "<|endoftext|>", "<bos>", "<|begin_of_text|>"),
  "cls": ("[CLS]",),  # RoBERTa's <s> / </s> only when tokenizer_config.json names them: T5's
  "sep": ("[SEP]",),  # </s> is not a separator
  "mask": ("[MASK]", "<mask>"),
}

_SENTINEL = re.compile(r"<extra_id_(\d+)>")

TOKENIZER_FILES = (
  "tokenizer.json",
  "spiece.model",
  "sentencepiece.bpe.model",
  "tokenizer.model",
  "vocab.txt",
  "vocab.json",
)


def clean_up_tokenization(text: str) -> str:
  """`transformers`' `clean_up_tokenization`: drops the space before punctuation and clitics."""
  for before, after in (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
    (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
  ):  # fmt: skip
    text = text.replace(before, after)
  return text


def _token_text(value: Any) -> str | None:
  """A special token as written in tokenizer_config.json: a string or {'content': ...}."""
  if isinstance(value, Mapping):
    value = value.get("content")
  return value if isinstance(value, str) and value else None


class HuggingFaceVocabulary(Vocabulary):
  """A `tokenizers.Tokenizer`; specials come from the tokenizer, none are hard-coded.

  `role_tokens` names the token string of each role in `ROLES` (from the folder's
  tokenizer_config.json); roles it leaves out are looked up among `KNOWN_TOKENS`. A vocabulary
  without a pad token pads with its EOS (the Hugging Face convention for GPT-2). Sentinels are
  the `<extra_id_N>` tokens the tokenizer holds (T5); `extra_ids` is their count.
  """

  def __init__(
    self,
    tokenizer: tokenizers.Tokenizer,
    role_tokens: Mapping[str, str | None] | None = None,
    *,
    tokenizer_class: str = "PreTrainedTokenizerFast",
    clean_up_tokenization_spaces: bool = False,
    source: str = "",
  ):
    self.tokenizer = tokenizer
    self.tokenizer_class = tokenizer_class
    self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
    self.source = source or "tokenizer"
    self._size = tokenizer.get_vocab_size(with_added_tokens=True)
    sentinels: dict[int, int] = {}
    for token, i in tokenizer.get_vocab(with_added_tokens=True).items():
      match = _SENTINEL.fullmatch(token)
      if match:
        sentinels[int(match.group(1))] = i
    if sentinels and sorted(sentinels) != list(range(len(sentinels))):
      raise DataError(
        f"{self.source}: <extra_id_N> tokens are not numbered 0..{len(sentinels) - 1}"
      )
    super().__init__(len(sentinels))
    self._sentinels = np.array([sentinels[k] for k in range(len(sentinels))], np.int64)
    self.role_tokens: dict[str, str] = {}
    self._roles: dict[str, int] = {}
    given = dict(role_tokens or {})
    for role in ROLES:
      token = _token_text(given.get(role))
      if token is not None and tokenizer.token_to_id(token) is None:
        raise DataError(f"{self.source}: {role}_token {token!r} is not in the vocabulary")
      if token is None:  # not named: the first known token of the role that the vocabulary has
        known = [t for t in KNOWN_TOKENS[role] if tokenizer.token_to_id(t) is not None]
        token = known[0] if known else None
      if token is not None:
        self.role_tokens[role], self._roles[role] = token, int(tokenizer.token_to_id(token))
    if "eos" not in self._roles:
      raise DataError(
        f"{self.source}: no end-of-sequence token (eos_token in tokenizer_config.json, or one of "
        f"{', '.join(KNOWN_TOKENS['eos'])} in the vocabulary)"
      )
    added = tokenizer.get_added_tokens_decoder()
    special = {i for i, t in added.items() if t.special}
    special |= set(self._roles.values()) | set(self._sentinels.tolist())
    self._special = np.array(sorted(special), np.int64)

  # --- construction ----------------------------------------------------------------------

  @classmethod
  def from_file(cls, path: str, role_tokens: Mapping[str, str] | None = None, **kwargs):
    """From a `tokenizer.json`."""
    try:
      tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 -- the Rust error names the JSON problem
      raise DataError(f"{path}: not a readable tokenizer.json ({str(e).splitlines()[0]})") from e
    return cls(tokenizer, role_tokens, source=str(path), **kwargs)

  # --- the Vocabulary interface ------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self._size

  @property
  def base_vocab_size(self) -> int:
    """Ids below are not sentinels: all ids, less the `<extra_id_N>` block if it is on top."""
    top = self._size - 1 - np.arange(self.extra_ids)
    return self._size - self.extra_ids if np.array_equal(self._sentinels, top) else self._size

  def _role(self, role: str) -> int:
    if role in self._roles:
      return self._roles[role]
    raise ValueError(
      f"{self.source} has no {role} token (tried {', '.join(KNOWN_TOKENS[role])}; name it as "
      f"{role}_token in tokenizer_config.json)"
    )

  @property
  def pad_id(self) -> int:
    return self._roles.get("pad", self._roles["eos"])

  @property
  def eos_id(self) -> int:
    return self._roles["eos"]

  @property
  def unk_id(self) -> int:
    return self._roles.get("unk", self.pad_id)

  @property
  def bos_id(self) -> int | None:
    return self._roles.get("bos")

  def _bert_special(self, role: str, offset: int) -> int:
    if role in self._roles:
      return self._roles[role]
    if self.extra_ids >= 3:  # T5-style: the three lowest sentinels, as SentencePieceVocabulary
      return int(self._sentinels[self.extra_ids - 1 - offset])
    return self._role(role)

  @property
  def cls_id(self) -> int:
    return self._bert_special("cls", 0)

  @property
  def sep_id(self) -> int:
    return self._bert_special("sep", 1)

  @property
  def mask_id(self) -> int:
    return self._bert_special("mask", 2)

  def sentinel_id(self, k: int) -> int:
    if not 0 <= k < self.extra_ids:
      raise ValueError(f"<extra_id_{k}> does not exist: {self.source} has {self.extra_ids}")
    return int(self._sentinels[k])

  @property
  def sentinel_ids(self) -> np.ndarray:
    return self._sentinels

  @property
  def special_ids(self) -> np.ndarray:
    return self._special

  @property
  def first_ordinary_id(self) -> int:
    return int(self.ordinary_ids[0])

  @functools.cached_property
  def tiktoken_encoding(self) -> Any:
    """The same encoder through `tiktoken` (7x faster) for GPT-2-style byte-level BPE, else None."""
    if os.environ.get("T5X_LITE_TIKTOKEN", "1") == "0":
      return None
    return fast_bpe.tiktoken_encoder(self.tokenizer)[0]

  def _encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    if self.tiktoken_encoding is not None:
      encode = self.tiktoken_encoding.encode
      return [encode(text, allowed_special="all") for text in texts]
    encodings = self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    return [e.ids for e in encodings]

  def _decode_base(self, ids: list[int]) -> str:
    text = self.tokenizer.decode(ids, skip_special_tokens=False)
    return clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

  def decode(self, ids: Iterable[int], show_eos: bool = False) -> str:
    """Text of `ids` as the `transformers` tokenizer decodes it (special tokens such as [CLS] or
    `<extra_id_0>` by name), with pad dropped, EOS shown only if `show_eos`, and ids past the
    tokenizer (a padded embedding) as `<id_N>`."""
    out, run = [], []
    for i in (int(x) for x in ids):
      if i == self.pad_id and i != self.eos_id:
        continue
      if i == self.eos_id or not 0 <= i < self._size:
        if run:
          out.append(self._decode_base(run))
          run = []
        if i != self.eos_id:
          out.append(f"<id_{i}>")
        elif show_eos:
          out.append(self.role_tokens["eos"])
        continue
      run.append(i)
    if run:
      out.append(self._decode_base(run))
    return "".join(out)

  def special_token_names(self) -> dict[int, str]:
    names = {i: self.tokenizer.id_to_token(i) for i in self._special.tolist()}
    if self.extra_ids >= 3 and "cls" not in self._roles:
      names.update({self.cls_id: "[CLS]", self.sep_id: "[SEP]", self.mask_id: "[MASK]"})
    return names

  def pieces(self) -> list[str]:
    return [self.tokenizer.id_to_token(i) or "" for i in range(self._size)]

  @property
  def word_boundary(self) -> tuple[str, str]:
    model = self.tokenizer.model
    prefix = getattr(model, "continuing_subword_prefix", None)
    if isinstance(model, tokenizers.models.WordPiece) or prefix:
      return ("continues", prefix or "##")
    return ("starts", _word_start_marker(self.tokenizer))

  @functools.cached_property
  def fingerprint(self) -> str:
    state = self.tokenizer.to_str() + json.dumps(self.role_tokens, sort_keys=True)
    return "tokenizers:" + hashlib.sha256(state.encode()).hexdigest()[:16]

  def save(self, directory: str) -> list[str]:
    """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json; returns them."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "tokenizer.json")
    self.tokenizer.save(path)
    tokens = {f"{role}_token": token for role, token in self.role_tokens.items()}
    extra = [self.tokenizer.id_to_token(int(i)) for i in self._sentinels]
    config = {
      "tokenizer_class": self.tokenizer_class,
      "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
      "model_max_length": 1_000_000_000_000_000_019_884_624_838_656,
      **tokens,
    }
    if extra:
      config["extra_ids"] = 0  # the <extra_id_N> tokens are already in tokenizer.json
      config["additional_special_tokens"] = extra
    return [path, *_write_configs(directory, config, tokens, extra)]


def _word_start_marker(tokenizer: tokenizers.Tokenizer) -> str:
  """The word-start marker its pieces carry: 'Ġ' (byte-level), or Metaspace's ('▁')."""
  state = json.loads(tokenizer.to_str())
  text = json.dumps(state.get("pre_tokenizer")) + json.dumps(state.get("decoder"))
  if "ByteLevel" in text:
    return "Ġ"
  match = re.search(r'"replacement": "(.)"', text)
  return match.group(1) if match else "▁"


def _write_configs(
  directory: str, config: dict[str, Any], tokens: dict[str, str], extra: list[str]
) -> list[str]:
  special_map: dict[str, Any] = dict(tokens)
  if extra:
    special_map["additional_special_tokens"] = extra
  written = []
  for name, content in (
    ("tokenizer_config.json", config),
    ("special_tokens_map.json", special_map),
  ):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(content, f, indent=2, ensure_ascii=False)
      f.write("\n")
    written.append(path)
  return written


# --- folders ---------------------------------------------------------------------------------


def _read_json(path: str) -> dict[str, Any]:
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      content = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(content, dict):
    raise DataError(f"{path}: expected a JSON object, found {type(content).__name__}")
  return content


def folder_role_tokens(directory: str) -> tuple[dict[str, str], dict[str, Any]]:
  """(role -> token string, tokenizer_config) from a folder's tokenizer_config.json and
  special_tokens_map.json (the latter wins, as in `transformers`)."""
  config = _read_json(os.path.join(directory, "tokenizer_config.json"))
  special_map = _read_json(os.path.join(directory, "special_tokens_map.json"))
  roles = {}
  for role in ROLES:
    token = _token_text(special_map.get(f"{role}_token")) or _token_text(
      config.get(f"{role}_token")
    )
    if token is not None:
      roles[role] = token
  return roles, config


def has_tokenizer(directory: str) -> bool:
  """Whether `directory` holds tokenizer files `load_vocabulary` can read."""
  if any(os.path.exists(os.path.join(directory, name)) for name in TOKENIZER_FILES):
    return True
  config = _read_json(os.path.join(directory, "tokenizer_config.json"))
  return config.get("tokenizer_class") == "ByT5Tokenizer"


def _extra_ids(config: Mapping[str, Any], roles: Mapping[str, str]) -> int:
  if "extra_ids" in config and config["extra_ids"]:
    return int(config["extra_ids"])
  names = config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
  return sum(1 for t in names if _SENTINEL.fullmatch(_token_text(t) or ""))


def load_vocabulary(directory: str) -> Vocabulary:
  """The vocabulary of a tokenizer folder (a Hugging Face model folder or a run's `vocab/`).

  Reads, in order: `spiece.model` (SentencePiece, T5/ALBERT; `extra_ids` from
  tokenizer_config.json), `tokenizer.json`, `vocab.txt` (WordPiece; `do_lower_case`),
  `vocab.json` + `merges.txt` (byte-level BPE; `add_prefix_space`), or a ByT5 config (bytes).
  """
  directory = str(directory)
  if not os.path.isdir(directory):
    raise DataError(f"tokenizer folder {directory} does not exist")
  roles, config = folder_role_tokens(directory)
  tokenizer_class = str(config.get("tokenizer_class") or "PreTrainedTokenizerFast")
  clean_up = bool(config.get("clean_up_tokenization_spaces", False))
  path = lambda name: os.path.join(directory, name)  # noqa: E731
  has_json = os.path.exists(path("tokenizer.json"))
  for name in ("spiece.model", "sentencepiece.bpe.model", "tokenizer.model"):
    if os.path.exists(path(name)):
      try:
        return SentencePieceVocabulary(path(name), _extra_ids(config, roles))
      except (ValueError, RuntimeError, OSError) as e:
        if not has_json:  # e.g. an ALBERT/Llama layout: its tokenizer.json is read instead
          raise DataError(f"{path(name)}: {str(e).splitlines()[0]}") from e
  kwargs = dict(tokenizer_class=tokenizer_class, clean_up_tokenization_spaces=clean_up)
  if has_json:
    return HuggingFaceVocabulary.from_file(path("tokenizer.json"), roles, **kwargs)
  if os.path.exists(path("vocab.txt")):
    built = implementations.BertWordPieceTokenizer(
      path("vocab.txt"),
      lowercase=bool(config.get("do_lower_case", True)),
      strip_accents=config.get("strip_accents"),
      handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
      **{f"{r}_token": roles[r] for r in ("unk", "sep", "cls", "pad", "mask") if r in roles},
    )
    tokenizer = tokenizers.Tokenizer.from_str(built.to_str())
    vocabulary = HuggingFaceVocabulary(tokenizer, roles, source=path("vocab.txt"), **kwargs)
    _mark_special(tokenizer, vocabulary.role_tokens)
    return vocabulary
  if os.path.exists(path("vocab.json")):
    if not os.path.exists(path("merges.txt")):
      raise DataError(f"{directory}: vocab.json without merges.txt (a byte-level BPE needs both)")
    built = implementations.ByteLevelBPETokenizer(
      path("vocab.json"),
      path("merges.txt"),
      add_prefix_space=bool(config.get("add_prefix_space", False)),
    )
    tokenizer = tokenizers.Tokenizer.from_str(built.to_str())
    vocabulary = HuggingFaceVocabulary(tokenizer, roles, source=path("vocab.json"), **kwargs)
    _mark_special(tokenizer, vocabulary.role_tokens)
    return vocabulary
  if tokenizer_class == "ByT5Tokenizer":
    return ByteVocabulary(int(config.get("extra_ids", 125)))
  raise DataError(
    f"{directory} has no tokenizer: expected tokenizer.json, spiece.model, vocab.txt, or "
    "vocab.json + merges.txt"
  )


def load_vocabulary_path(path: str, extra_ids: int = 100) -> Vocabulary:
  """A `data.vocab_path`: a tokenizer folder (any `load_vocabulary` layout) or a SentencePiece
  .model file with `extra_ids` sentinels."""
  if os.path.isdir(path):
    return load_vocabulary(path)
  return SentencePieceVocabulary(path, extra_ids)


def _mark_special(tokenizer: tokenizers.Tokenizer, roles: Mapping[str, str]) -> None:
  """Registers the folder's role tokens as special (matched whole in text, as `transformers`)."""
  present = [t for t in dict.fromkeys(roles.values()) if tokenizer.token_to_id(t) is not None]
  tokenizer.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in present])


_SENTENCEPIECE_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}  # TrainerSpec.ModelType


def _varint(buf: bytes, i: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = buf[i]
    i += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, i
    shift += 7


def _proto_fields(buf: bytes):
  """(field number, wire type, value) of a serialized protobuf message, top level only."""
  i = 0
  while i < len(buf):
    key, i = _varint(buf, i)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, i = _varint(buf, i)
    elif wire == 2:
      size, i = _varint(buf, i)
      value, i = buf[i : i + size], i + size
    elif wire in (1, 5):
      value, i = None, i + (8 if wire == 1 else 4)
    else:
      raise ValueError(f"not a SentencePiece model (protobuf wire type {wire})")
    yield field, wire, value


def sentencepiece_model_type(model_proto: bytes) -> str:
  """'unigram', 'bpe', 'word' or 'char': the trainer type a SentencePiece model records
  (ModelProto.trainer_spec = field 2, TrainerSpec.model_type = field 3, default unigram).

  Read from the wire format rather than through `sentencepiece_model_pb2`: that module is
  generated for protobuf 7 and refuses to load under protobuf 6, which Apache Beam pins."""
  buf = memoryview(model_proto)
  for field, wire, value in _proto_fields(buf):
    if field == 2 and wire == 2:
      for inner, inner_wire, model_type in _proto_fields(value):
        if inner == 3 and inner_wire == 0:
          return _SENTENCEPIECE_TYPES.get(model_type, "unigram")
      return "unigram"
  return "unigram"


def save_vocabulary(vocabulary: Vocabulary, directory: str) -> list[str]:
  """Writes `vocabulary` as a tokenizer folder `transformers.AutoTokenizer` loads; returns paths.

  SentencePiece -> spiece.model + a T5Tokenizer config (extra ids on top); bytes -> a
  ByT5Tokenizer config; `tokenizers` -> tokenizer.json + its config.
  """
  os.makedirs(directory, exist_ok=True)
  if isinstance(vocabulary, HuggingFaceVocabulary):
    return vocabulary.save(directory)
  tokens = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
  extra = [f"<extra_id_{k}>" for k in range(vocabulary.extra_ids)]
  written = []
  config: dict[str, Any] = {}
  if isinstance(vocabulary, SentencePieceVocabulary):
    path = os.path.join(directory, "spiece.model")
    with open(path, "wb") as f:
      f.write(vocabulary.model_proto)
    written.append(path)
    if sentencepiece_model_type(vocabulary.model_proto) == "bpe":
      # T5Tokenizer would rebuild a BPE model as a Unigram one and cut some strings differently;
      # BertGenerationTokenizer runs the SentencePiece model as it is. Its added tokens take ids
      # in list order, so the sentinels are listed from the highest k down.
      extra = extra[::-1]
      config = {"tokenizer_class": "BertGenerationTokenizer", "bos_token": None, "sep_token": None}
    else:
      config = {"tokenizer_class": "T5Tokenizer", "extra_ids": vocabulary.extra_ids}
  elif isinstance(vocabulary, ByteVocabulary):
    config = {"tokenizer_class": "ByT5Tokenizer", "extra_ids": vocabulary.extra_ids}
  else:
    raise DataError(f"cannot save a {type(vocabulary).__name__} as a tokenizer folder")
  config.update(model_max_length=1_000_000_000_000_000_019_884_624_838_656, **tokens)
  if extra and "extra_ids" not in config:
    config["additional_special_tokens"] = extra
  return written + _write_configs(directory, config, tokens, extra)
