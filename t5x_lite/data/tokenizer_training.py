"""Training tokenizers of every type on local text: `t5x-lite tokenizer train --type ...`.

| type        | library        | pieces                        | specials (ids)                                   |
|-------------|----------------|-------------------------------|--------------------------------------------------|
| `unigram`   | SentencePiece  | `▁` starts a word (T5)        | <pad> 0, </s> 1, <unk> 2                         |
| `bpe`       | SentencePiece  | `▁` starts a word             | <pad> 0, </s> 1, <unk> 2                         |
| `byte-bpe`  | tokenizers     | `Ġ` = a leading space (GPT-2) | <pad> 0, </s> 1, <unk> 2, <s> 3, <mask> 4         |
| `wordpiece` | tokenizers     | `##` continues a word (BERT)  | [PAD] 0, [SEP] 1, [UNK] 2, [CLS] 3, [MASK] 4      |

Every type keeps pad = 0, end-of-sequence = 1 and unknown = 2 (the layout the packed pipeline's
zero padding assumes) and puts `extra_ids` sentinels `<extra_id_0>` ... on top in SeqIO's order
(`<extra_id_0>` = vocab_size - 1), so one trained vocabulary serves causal LM, MLM (its own
[CLS]/[SEP]/[MASK] or <s>/</s>/<mask>) and span corruption. The folder written holds
`tokenizer.json` (or `spiece.model`), `tokenizer_config.json` and `special_tokens_map.json`:
`transformers.AutoTokenizer.from_pretrained(folder)` loads it, and so does `load_vocabulary`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from t5x_lite.data import DataError
from t5x_lite.data.hf_vocabulary import HuggingFaceVocabulary, save_vocabulary
from t5x_lite.data.sources import TextFileSource
from t5x_lite.data.vocabularies import Vocabulary, train_sentencepiece

logger = logging.getLogger(__name__)

VOCAB_TYPES = ("unigram", "bpe", "byte-bpe", "wordpiece")
SENTENCEPIECE_TYPES = ("unigram", "bpe")

# Role -> token, in id order from 0 (pad, eos, unk first, as SentencePieceVocabulary).
BYTE_BPE_SPECIALS = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>", "bos": "<s>", "mask": "<mask>"}
WORDPIECE_SPECIALS = {
  "pad": "[PAD]",
  "sep": "[SEP]",
  "unk": "[UNK]",
  "cls": "[CLS]",
  "mask": "[MASK]",
}


def _roles(vocab_type: str) -> dict[str, str]:
  if vocab_type == "byte-bpe":
    return {**BYTE_BPE_SPECIALS, "cls": "<s>", "sep": "</s>"}  # RoBERTa's framing tokens
  return {**WORDPIECE_SPECIALS, "eos": "[SEP]"}  # BERT ends a sequence with [SEP]


def build_untrained(vocab_type: str, lowercase: bool = False) -> tokenizers.Tokenizer:
  """The tokenizer pipeline of `vocab_type` (normalizer, pre-tokenizer, decoder), no vocabulary.

  byte-bpe is GPT-2's: byte-level pre-tokenization without a prefix space, so decoding gives
  back the text exactly. wordpiece is BERT's (cased unless `lowercase`, like bert-base-cased).
  """
  if vocab_type == "byte-bpe":
    tokenizer = tokenizers.Tokenizer(models.BPE())
    if lowercase:
      tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer
  if vocab_type == "wordpiece":
    tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token=WORDPIECE_SPECIALS["unk"]))
    tokenizer.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer
  raise ValueError(f"vocab_type={vocab_type!r}: expected 'byte-bpe' or 'wordpiece'")


def _check_base_size(vocab_type: str, vocab_size: int, extra_ids: int) -> list[str]:
  """The special tokens of a byte-bpe / wordpiece vocabulary; DataError when `vocab_size` leaves
  too few ids for them (and the 256 bytes) after the extra ids."""
  specials = list(dict.fromkeys((BYTE_BPE_SPECIALS if vocab_type == "byte-bpe" else
                                 WORDPIECE_SPECIALS).values()))  # fmt: skip
  base_size = vocab_size - extra_ids
  minimum = len(specials) + (256 if vocab_type == "byte-bpe" else 1)
  if base_size < minimum:
    raise DataError(
      f"vocab_size={vocab_size} leaves {base_size} ids after {extra_ids} extra ids; a "
      f"{vocab_type} vocabulary needs at least {minimum}"
    )
  return specials


def train_tokenizers_vocabulary(
  texts: Iterable[str],
  vocab_type: str,
  vocab_size: int,
  extra_ids: int,
  *,
  lowercase: bool = False,
  min_frequency: int = 2,
  show_progress: bool = False,
) -> HuggingFaceVocabulary:
  """Trains a byte-bpe or wordpiece tokenizer of at most `vocab_size` ids, sentinels included.

  A small corpus may give fewer ids than asked (the trainer runs out of merges).
  """
  roles = _roles(vocab_type)
  specials = _check_base_size(vocab_type, vocab_size, extra_ids)
  base_size = vocab_size - extra_ids
  tokenizer = build_untrained(vocab_type, lowercase)
  if vocab_type == "byte-bpe":
    trainer = trainers.BpeTrainer(
      vocab_size=base_size,
      min_frequency=min_frequency,
      special_tokens=specials,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: no unknown text
      show_progress=show_progress,
    )
  else:
    trainer = trainers.WordPieceTrainer(
      vocab_size=base_size,
      min_frequency=min_frequency,
      special_tokens=specials,
      continuing_subword_prefix="##",
      show_progress=show_progress,
    )
  tokenizer.train_from_iterator(_nonempty(texts), trainer=trainer)
  if vocab_type == "wordpiece":
    cls_id, sep_id = tokenizer.token_to_id(roles["cls"]), tokenizer.token_to_id(roles["sep"])
    tokenizer.post_processor = processors.TemplateProcessing(
      single=f"{roles['cls']} $A {roles['sep']}",
      pair=f"{roles['cls']} $A {roles['sep']} $B:1 {roles['sep']}:1",
      special_tokens=[(roles["cls"], cls_id), (roles["sep"], sep_id)],
    )
  # Sentinels on top, <extra_id_0> last (SeqIO order): added highest k first.
  tokenizer.add_special_tokens(
    [tokenizers.AddedToken(f"<extra_id_{k}>", special=True) for k in reversed(range(extra_ids))]
  )
  # The generic fast class: it runs tokenizer.json as written (BertTokenizer would rebuild the
  # normalizer from its own do_lower_case default).
  return HuggingFaceVocabulary(
    tokenizer, roles, tokenizer_class="PreTrainedTokenizerFast", source=f"trained {vocab_type}"
  )


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
  count = 0
  for text in texts:
    if text and text.strip():
      count += 1
      yield text
  if count == 0:
    raise DataError("no text to train a tokenizer on (every document is empty)")


def train_vocabulary(
  texts: Iterable[str],
  vocab_type: str,
  vocab_size: int,
  extra_ids: int,
  directory: str,
  *,
  lowercase: bool = False,
  show_progress: bool = False,
) -> Vocabulary:
  """Trains a `vocab_type` vocabulary on `texts` and writes it as a tokenizer folder.

  The folder is written next to `directory` and renamed into place, so a reader (another host
  waiting for the first-use vocabulary) never sees a partial one.
  """
  if vocab_type not in VOCAB_TYPES:
    raise DataError(f"vocab type {vocab_type!r}: expected one of {', '.join(VOCAB_TYPES)}")
  directory = os.path.abspath(directory)
  temporary = f"{directory}.tmp{os.getpid()}"
  shutil.rmtree(temporary, ignore_errors=True)
  os.makedirs(temporary)
  try:
    if vocab_type in SENTENCEPIECE_TYPES:
      if lowercase:
        raise DataError("lowercase: only the byte-bpe and wordpiece types support it")
      vocabulary = train_sentencepiece(
        texts, vocab_size, extra_ids, os.path.join(temporary, "spiece.model"), model_type=vocab_type
      )
      os.remove(os.path.join(temporary, "spiece.model"))  # save_vocabulary writes it again
    else:
      vocabulary = train_tokenizers_vocabulary(
        texts, vocab_type, vocab_size, extra_ids, lowercase=lowercase, show_progress=show_progress
      )
    save_vocabulary(vocabulary, temporary)
    if os.path.isdir(directory):
      shutil.rmtree(directory)
    os.rename(temporary, directory)
  finally:
    shutil.rmtree(temporary, ignore_errors=True)
  return vocabulary


def train_from_files(
  input_patterns: str | Sequence[str],
  out: str,
  vocab_type: str = "unigram",
  vocab_size: int = 32000,
  extra_ids: int = 100,
  lowercase: bool = False,
) -> tuple[str, Vocabulary]:
  """`t5x-lite tokenizer train`: trains on text files (globs, gzip ok); writes the folder `out`."""
  if vocab_type in ("byte-bpe", "wordpiece"):
    _check_base_size(vocab_type, vocab_size, extra_ids)  # before reading or logging anything
  source = TextFileSource(input_patterns, mode="file")
  count = source.num_documents()
  logger.info("Training a %d-id %s tokenizer on %d files -> %s", vocab_size, vocab_type, count, out)
  texts = (source.document(i)["text"] for i in range(count))
  vocabulary = train_vocabulary(
    texts, vocab_type, vocab_size, extra_ids, out, lowercase=lowercase,
    show_progress=sys.stderr.isatty(),
  )  # fmt: skip
  return out, vocabulary


def run_train_command(args) -> int:
  """The `t5x-lite tokenizer train` handler: prints the folder written and its specials."""
  vocab_type = args.type or args.model_type
  out = args.out[: -len(".model")] if args.out.endswith(".model") else args.out
  path, vocabulary = train_from_files(
    args.input, out, vocab_type, args.vocab_size, args.extra_ids, bool(args.lowercase)
  )
  names = vocabulary.special_token_names()
  shown = ", ".join(
    f"{names[i]}={i}" for i in sorted(names) if not names[i].startswith("<extra_id")
  )
  print(f"wrote {path} ({vocab_type}, {vocabulary.vocab_size} ids: {shown}, "
        f"{vocabulary.extra_ids} sentinels on top)")  # fmt: skip
  print(f"use it with --config.data.vocab_path={path}")
  return 0
