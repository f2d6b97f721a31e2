"""Tokenizers in and out of Hugging Face folders, with the weights (`t5x-lite convert`).

import_tokenizer(hf_dir, embedding_rows) -> Vocabulary
    The tokenizer of an HF model folder (tokenizer.json, vocab.txt, vocab.json + merges.txt or
    spiece.model), checked against the embedding: a folder without one, or one whose ids do not
    fit the embedding rows, is a ConversionError naming the file.
record_tokenizer(vocabulary, workdir) -> folder
    Writes it into the run (`workdir/vocab/`), where every command on the run finds it.
export_tokenizer(vocabulary, out_dir, family) -> files
    Writes the run's vocabulary so that `AutoTokenizer.from_pretrained(out_dir)(text)` gives
    the ids the model saw in training: [CLS] text [SEP] for an encoder, text </s> for T5,
    the text alone (after the decoder start token, if the run has one) for a decoder.
"""

from __future__ import annotations

import os
import tempfile

import tokenizers
from tokenizers import processors

from t5x_lite.convert.hf.rules import ConversionError
from t5x_lite.data import DataError
from t5x_lite.data.hf_vocabulary import (
  TOKENIZER_FILES,
  HuggingFaceVocabulary,
  has_tokenizer,
  load_vocabulary,
  save_vocabulary,
  sentencepiece_model_type,
)
from t5x_lite.data.vocabularies import SentencePieceVocabulary, Vocabulary

RUN_VOCAB_DIR = "vocab"  # a run's tokenizer folder, beside checkpoints/
PAD_MULTIPLE_LIMIT = 128  # embeddings are padded by less than this (T5: 32100 ids, 32128 rows)


def import_tokenizer(hf_dir: str, embedding_rows: int) -> Vocabulary:
  """The vocabulary of `hf_dir`, checked to fit an embedding of `embedding_rows` rows."""
  if not has_tokenizer(hf_dir):
    raise ConversionError(
      f"{hf_dir} has no tokenizer (expected one of {', '.join(TOKENIZER_FILES)}): the weights "
      "alone would be read with a different vocabulary"
    )
  try:
    vocabulary = load_vocabulary(hf_dir)
  except DataError as e:
    raise ConversionError(str(e)) from None
  ids = vocabulary.vocab_size
  if not ids <= embedding_rows < ids + PAD_MULTIPLE_LIMIT:
    raise ConversionError(
      f"{hf_dir}: the tokenizer has {ids} ids but the embedding in config.json / the "
      f"safetensors has {embedding_rows} rows (expected {ids} to {ids + PAD_MULTIPLE_LIMIT - 1})"
    )
  return vocabulary


def record_tokenizer(vocabulary: Vocabulary, workdir: str) -> str:
  """Saves `vocabulary` as `workdir/vocab/` (a tokenizer folder); returns the folder."""
  folder = os.path.join(workdir, RUN_VOCAB_DIR)
  save_vocabulary(vocabulary, folder)
  return folder


def _framing(vocabulary: Vocabulary, family: str, start_id: int | None) -> list[int] | None:
  """The ids a family puts around text A ('$A' = -1): how `tokenizer(text)` must frame it."""
  if family == "encoder":
    return [vocabulary.cls_id, -1, vocabulary.sep_id]
  if family == "encoder_decoder":
    return [-1, vocabulary.eos_id]
  return None if start_id is None else [start_id, -1]


def _with_framing(
  tokenizer: tokenizers.Tokenizer, vocabulary: Vocabulary, family: str, start_id: int | None
) -> tokenizers.Tokenizer:
  """A copy of `tokenizer` whose post-processor frames text as `family` (see `_framing`)."""
  copy = tokenizers.Tokenizer.from_str(tokenizer.to_str())
  framing = _framing(vocabulary, family, start_id)
  if framing is None:
    copy.post_processor = processors.ByteLevel(trim_offsets=False)  # adds no token
    return copy
  names = {i: tokenizer.id_to_token(i) for i in framing if i >= 0}
  single = [names[i] if i >= 0 else "$A" for i in framing]
  # A pair: B after A's frame, without a second opening token (BERT: [CLS] A [SEP] B [SEP]).
  pair = single + [f"{t}:1" for t in (["$B"] + single[single.index("$A") + 1 :])]
  copy.post_processor = processors.TemplateProcessing(
    single=single, pair=pair, special_tokens=[(name, i) for i, name in names.items()]
  )
  return copy


def _sentencepiece_as_tokenizer(vocabulary: SentencePieceVocabulary) -> HuggingFaceVocabulary:
  """A SentencePiece unigram model as a `tokenizers` one, via `transformers`' exact converter."""
  import transformers  # optional (the `hf` extra); exporting for Hugging Face users needs it

  with tempfile.TemporaryDirectory() as folder:
    save_vocabulary(vocabulary, folder)
    converted = transformers.AutoTokenizer.from_pretrained(folder)
  tokenizer = converted.backend_tokenizer
  roles = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
  return HuggingFaceVocabulary(tokenizer, roles, source="spiece.model")


def export_tokenizer(
  vocabulary: Vocabulary, out_dir: str, family: str, start_id: int | None = None
) -> list[str]:
  """Writes the tokenizer files of an exported model into `out_dir`; returns their paths.

  `family` decides the framing `tokenizer(text)` adds ('encoder': [CLS] A [SEP]; 'encoder_decoder':
  A </s>; 'decoder': `start_id` then A, or A alone). A SentencePiece unigram model is written
  both as spiece.model (for SeqIO/T5) and, for encoders and decoders, as a tokenizer.json with the
  framing (T5Tokenizer would append </s>).
  """
  os.makedirs(out_dir, exist_ok=True)
  if isinstance(vocabulary, SentencePieceVocabulary):
    if family == "encoder_decoder" or sentencepiece_model_type(vocabulary.model_proto) != "unigram":
      return save_vocabulary(vocabulary, out_dir)  # T5Tokenizer / BertGenerationTokenizer
    converted = _sentencepiece_as_tokenizer(vocabulary)
    framed = HuggingFaceVocabulary(
      _with_framing(converted.tokenizer, vocabulary, family, start_id),
      converted.role_tokens,
      source="spiece.model",
    )
    written = framed.save(out_dir)
    spiece = os.path.join(out_dir, "spiece.model")
    with open(spiece, "wb") as f:
      f.write(vocabulary.model_proto)
    return [*written, spiece]
  if isinstance(vocabulary, HuggingFaceVocabulary):
    framed = HuggingFaceVocabulary(
      _with_framing(vocabulary.tokenizer, vocabulary, family, start_id),
      vocabulary.role_tokens,
      tokenizer_class="PreTrainedTokenizerFast",
      clean_up_tokenization_spaces=vocabulary.clean_up_tokenization_spaces,
      source=vocabulary.source,
    )
    return framed.save(out_dir)
  return save_vocabulary(vocabulary, out_dir)
