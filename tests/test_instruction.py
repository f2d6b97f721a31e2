"""Instruction tuning: the loss covers exactly the assistant tokens (+ their EOS), conversations
pack, and a tiny GPT fine-tuned through `t5x-lite train` follows held-out instructions
(`t5x-lite chat`)."""

import json
import os
import random

import numpy as np
import pytest

from t5x_lite import cli
from t5x_lite.data import DataError, pipeline
from t5x_lite.data.feature_converters import DecoderFeatureConverter
from t5x_lite.data.tasks.instruction import instruction_task, normalize_messages
from t5x_lite.data.vocabularies import ByteVocabulary

VOCAB = ByteVocabulary(extra_ids=100)
CONVERSATIONS = [
  [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
   {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name?"},
   {"role": "assistant", "content": "Tiny."}],
  [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
  [{"role": "user", "content": "Say x"}, {"role": "assistant", "content": "x"}],
]  # fmt: skip


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def test_loss_weights_cover_exactly_the_assistant_tokens(tmp_path):
  train = _write(tmp_path / "train.jsonl", [{"messages": c} for c in CONVERSATIONS * 4])
  task = instruction_task("chat_weights_test", train, train, system_prompt="Default.")
  stream = pipeline.TaskStream(
    task, "validation", VOCAB, DecoderFeatureConverter(pack=True), {"targets": 256}, seed=0
  )
  block = stream.block(0)
  seen = 0
  for row in range(len(block["decoder_target_tokens"])):
    tokens, weights = block["decoder_target_tokens"][row], block["decoder_loss_weights"][row]
    segments = block["decoder_segment_ids"][row]
    for segment in set(segments.tolist()) - {0}:
      here = segments == segment
      text = VOCAB.decode(tokens[here].tolist(), show_eos=True)
      (conversation,) = [c for c in CONVERSATIONS if text.endswith(c[-1]["content"] + "</s>")]
      turns = list(conversation)
      if turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": "Default."})
      expected = "".join(
        f"<|im_start|>{t['role']}\n{t['content']}"
        + ("</s>" if t["role"] == "assistant" else "<|im_end|>\n")
        for t in turns
      )
      assert text == expected
      weighted = VOCAB.decode(tokens[here & (weights > 0)].tolist(), show_eos=True)
      assert weighted == "".join(t["content"] + "</s>" for t in turns if t["role"] == "assistant")
      assert set(weights[here].tolist()) <= {0.0, 1.0}
      seen += 1
  assert seen >= 3  # several conversations packed per row (256 tokens)
  assert (block["decoder_segment_ids"].max(axis=1) > 1).any()


def test_bad_record_is_one_line_error():
  with pytest.raises(DataError, match="expected a 'messages' list or instruction/response"):
    normalize_messages({"question": "q"})
  with pytest.raises(DataError, match="expected role in"):
    normalize_messages({"messages": [{"role": "bot", "content": "x"}]})
  assert normalize_messages({"instruction": "q", "response": "a"})[1] == {
    "role": "assistant", "content": "a",
  }  # fmt: skip


@pytest.mark.slow
def test_tiny_gpt_follows_held_out_instructions(capsys, tmp_path):
  """Synthetic instructions "Repeat: w" -> "w": after fine-tuning, exact match on held-out words
  (never seen in training) beats the untrained model's (0%)."""
  rng = random.Random(0)
  words = sorted({"".join(rng.choice("abcdefghij") for _ in range(3)) for _ in range(400)})
  held_out, train_words = words[:12], words[12:]
  record = lambda w: {"instruction": f"Repeat: {w}", "response": w}  # noqa: E731
  _write(tmp_path / "train.jsonl", [record(w) for w in train_words])
  _write(tmp_path / "val.jsonl", [record(w) for w in held_out])
  module = tmp_path / "chat_tasks.py"
  module.write_text(
    "from t5x_lite.data.tasks.instruction import instruction_task\n"
    f"instruction_task('repeat_chat', {str(tmp_path / 'train.jsonl')!r}, "
    f"{str(tmp_path / 'val.jsonl')!r}, fields=('instruction', 'response'))\n"
  )
  workdir = str(tmp_path / "run")
  args = [
    "train", "--config", "gpt.py:tiny", "--workdir", workdir, "--config.data.vocab=byte",
    "--config.data.task=repeat_chat", f"--config.data.task_modules=('{module}',)",
    "--config.data.feature_lengths={'targets': 128}", "--config.train.steps=400",
    "--config.train.batch_size=16", "--config.train.log_every=50", "--config.train.eval_every=0",
    "--config.train.checkpoint_every=400", "--config.train.sample_tokens=0",
    "--config.optimizer.warmup_steps=20",
  ]  # fmt: skip
  assert cli.main(args) == 0, capsys.readouterr().err[-2000:]
  capsys.readouterr()
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("".join(f"Repeat: {w}\n" for w in held_out))
  assert cli.main(["chat", "--workdir", workdir, "--prompt-file", str(prompts),
                   "--max-new-tokens", "8"]) == 0  # fmt: skip
  out = capsys.readouterr().out
  replies = [
    line[len("assistant: ") :] for line in out.splitlines() if line.startswith("assistant")
  ]
  assert len(replies) == len(held_out)
  accuracy = np.mean([r == w for r, w in zip(replies, held_out)])
  assert accuracy >= 0.5, list(zip(held_out, replies))
  assert os.path.exists(os.path.join(workdir, "checkpoints", "400"))
