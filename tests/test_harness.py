"""Few-shot harness: lm-eval's prompts and metric definitions, by hand and against lm-eval itself;
end to end on a tiny trained run (our harness, `t5x-lite eval --harness`, the lm-eval adapter)."""

import json
import math
import os
import random

import numpy as np
import pytest

from t5x_lite import cli
from t5x_lite.evaluation import harness

# A small multiple-choice set. Choices differ in length (characters) and in bytes per character.
MC_DOCS = [
  {"question": "Capital of France?", "choices": ["Paris", "Lyon", "Marseille"], "label": 0},
  {"question": "2 + 2?", "choices": ["four", "22", "fourteen"], "label": 0},
  {"question": "Color of the sky?", "choices": ["blue", "green"], "label": 0},
  {"question": "Café in English?", "choices": ["coffee", "thé é"], "label": 0},
]
# Stub log-likelihoods of each continuation (" " + choice), whatever the context.
STUB_LL = {
  " Paris": -6.0, " Lyon": -5.0, " Marseille": -12.0,  # acc: Lyon wins (wrong); /chars: Paris 1.2 < Lyon 1.25 -> right
  " four": -4.0, " 22": -3.0, " fourteen": -7.5,  # acc wrong; /chars: four 1.0, 22 1.5, fourteen 0.94 -> wrong
  " blue": -1.0, " green": -2.0,  # right either way
  " coffee": -6.5, " thé é": -6.0,  # acc wrong; /chars: 1.083 vs 1.2 -> right; /bytes: 1.083 vs 0.857 -> wrong
}  # fmt: skip
MC_YAML = """
tasks:
  - name: mc
    type: multiple_choice
    data: mc.jsonl
    num_fewshot: {shots}
    seed: 1234
    doc_to_text: "Question: {{question}}\\nAnswer:"
    doc_to_choice: choices
    doc_to_target: label
"""


class StubLM:
  """Known log-likelihoods; records every request."""

  def __init__(self):
    self.requests = []

  def loglikelihood(self, requests):
    self.requests += list(requests)
    return [(STUB_LL[continuation], False) for _, continuation in requests]

  def generate_until(self, requests):
    self.requests += list(requests)
    answers = {"Who wrote Hamlet?": "William Shakespeare.\nMore text", "Largest planet?": "Saturn"}
    return [answers[context.split("Q: ")[-1].split("\n")[0]] for context, _, _ in requests]


def write_task(tmp_path, docs=MC_DOCS, yaml_text=None, shots=0):
  with open(tmp_path / "mc.jsonl", "w", encoding="utf-8") as f:
    for doc in docs:
      f.write(json.dumps(doc, ensure_ascii=False) + "\n")
  path = tmp_path / "tasks.yaml"
  path.write_text(yaml_text or MC_YAML.format(shots=shots), encoding="utf-8")
  return str(path)


def test_multiple_choice_accuracy_by_hand(tmp_path):
  specs = harness.load_tasks(write_task(tmp_path))
  stub = StubLM()
  results = harness.evaluate(stub, specs)
  # By hand (STUB_LL comments): acc right only on the sky; acc_norm (÷ characters of the choice,
  # delimiter excluded) right on Paris, sky, coffee; acc_bytes (÷ UTF-8 bytes) on Paris and sky.
  assert results["mc/acc"] == 1 / 4
  assert results["mc/acc_norm"] == 3 / 4
  assert results["mc/acc_bytes"] == 2 / 4
  assert results["mc/num_examples"] == 4
  # Zero-shot requests: (question text, target delimiter + choice).
  assert stub.requests[:3] == [
    ("Question: Capital of France?\nAnswer:", " Paris"),
    ("Question: Capital of France?\nAnswer:", " Lyon"),
    ("Question: Capital of France?\nAnswer:", " Marseille"),
  ]


def test_fewshot_prompts_are_lm_evals(tmp_path):
  specs = harness.load_tasks(write_task(tmp_path, shots=2))
  stub = StubLM()
  harness.evaluate(stub, specs)
  contexts = [context for context, _ in stub.requests[::1]]
  # lm-eval's ContextSampler: one Random(seed), k + 1 drawn per document, the document removed.
  rng = random.Random(1234)
  expected = []
  for doc in MC_DOCS:
    shots = [d for d in rng.sample(MC_DOCS, 3) if d != doc][:2]
    prefix = "".join(
      f"Question: {s['question']}\nAnswer: {s['choices'][s['label']]}\n\n" for s in shots
    )
    expected += [prefix + f"Question: {doc['question']}\nAnswer:"] * len(doc["choices"])
  assert contexts == expected
  assert all(
    doc["question"] not in c.rsplit("\n\n", 1)[0] for doc, c in zip(MC_DOCS, expected[::3])
  )


def test_generative_exact_match_and_f1(tmp_path):
  docs = [
    {"q": "Who wrote Hamlet?", "answers": ["Shakespeare", "William Shakespeare"]},
    {"q": "Largest planet?", "answers": ["Jupiter"]},
  ]
  with open(tmp_path / "qa.jsonl", "w") as f:
    f.writelines(json.dumps(d) + "\n" for d in docs)
  (tmp_path / "qa.yaml").write_text(
    'tasks:\n  - {name: qa, type: generate_until, data: qa.jsonl, doc_to_text: "Q: {q}\\nA:",\n'
    '     doc_to_target: answers, until: ["\\n"], max_new_tokens: 8}\n'
  )
  stub = StubLM()
  results = harness.evaluate(stub, harness.load_tasks(str(tmp_path / "qa.yaml")))
  # "William Shakespeare." (cut at the newline) = "william shakespeare" after normalisation: EM 1,
  # F1 1; "Saturn" vs "Jupiter": 0, 0.
  assert results["qa/exact_match"] == 0.5
  assert results["qa/f1"] == 0.5
  assert stub.requests[0] == ("Q: Who wrote Hamlet?\nA:", ("\n",), 8)


def test_squad_normalisation_and_f1():
  assert harness.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
  assert harness.f1_score("the brown fox jumped", ["quick brown fox"]) == pytest.approx(
    2 * (2 / 3) * (2 / 3) / (4 / 3)
  )
  assert harness.exact_match_score("An apple.", ["apple", "pear"]) == 1.0


def test_task_file_errors_are_one_line(tmp_path):
  (tmp_path / "bad.yaml").write_text("tasks:\n  - {name: x, type: mc, data: a.jsonl}\n")
  with pytest.raises(harness.HarnessError, match=r"tasks\[0\]: missing doc_to_text, doc_to_target"):
    harness.load_tasks(str(tmp_path / "bad.yaml"))
  path = write_task(tmp_path, yaml_text=MC_YAML.format(shots=0).replace("{question}", "{query}"))
  with pytest.raises(harness.HarnessError, match="names field 'query'"):
    harness.evaluate(StubLM(), harness.load_tasks(path))


@pytest.mark.slow
def test_same_accuracy_and_prompts_as_lm_eval(tmp_path):
  """lm-evaluation-harness itself, on the same local file, with a stub LM of the same numbers:
  the same acc / acc_norm and the same requests (2-shot, fewshot seed 1234)."""
  pytest.importorskip("lm_eval")
  os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
  import lm_eval
  from lm_eval.api.model import LM
  from lm_eval.tasks import TaskManager

  path = write_task(tmp_path, shots=2)
  ours_stub = StubLM()
  ours = harness.evaluate(ours_stub, harness.load_tasks(path))

  seen = []

  class Stub(LM):
    def loglikelihood(self, requests):
      seen.extend(r.args for r in requests)
      return [(STUB_LL[r.args[1]], False) for r in requests]

    def loglikelihood_rolling(self, requests):
      raise NotImplementedError

    def generate_until(self, requests):
      raise NotImplementedError

  task_dir = tmp_path / "lm_eval_tasks"
  task_dir.mkdir()
  (task_dir / "mc_lm_eval.yaml").write_text(
    f"""task: mc_lm_eval
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tmp_path / "mc.jsonl"}
test_split: test
fewshot_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: label
num_fewshot: 2
metric_list:
  - metric: acc
  - metric: acc_norm
"""
  )
  output = lm_eval.simple_evaluate(
    model=Stub(),
    tasks=["mc_lm_eval"],
    task_manager=TaskManager(include_path=str(task_dir)),
    fewshot_random_seed=1234,
    bootstrap_iters=0,
  )
  theirs = output["results"]["mc_lm_eval"]
  assert theirs["acc,none"] == ours["mc/acc"] == 0.25
  assert theirs["acc_norm,none"] == ours["mc/acc_norm"] == 0.75
  assert sorted(seen) == sorted(ours_stub.requests)


# ---------------------------------------------------------------------------------------------
# End to end on a trained run.


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_vocab_workdir):
  from t5x_lite import config as config_lib
  from t5x_lite.training import loop

  workdir = shared_vocab_workdir(str(tmp_path_factory.mktemp("harness_run")))
  overrides = {
    "train.steps": "30",
    "train.batch_size": "8",
    "train.eval_every": "0",
    "train.eval_steps": "1",
    "train.checkpoint_every": "30",
    "train.sample_prompt": "",
    "data.feature_lengths": "{'targets': 64}",
    "model.max_length": "64",
  }
  config = config_lib.get_config("gpt.py:tiny", list(overrides.items()))
  loop.train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.slow
def test_harness_end_to_end_on_a_trained_run(tiny_run, tmp_path, capsys):
  import t5x_lite

  path = write_task(tmp_path, shots=1)
  loaded = t5x_lite.load(tiny_run)
  lm = harness.ModelLM.from_loaded(loaded)
  # Token scoring agrees with LoadedModel.score on the same ids (score encodes the prompt and
  # the target separately and appends EOS).
  context, continuation = "Question: Capital of France?\nAnswer:", " Paris"
  vocabulary = lm.vocabulary
  pair = (vocabulary.encode(context), vocabulary.encode("Paris") + [vocabulary.eos_id])
  (ll_ids, _), = lm.score_tokens([pair])  # fmt: skip
  assert ll_ids == pytest.approx(float(loaded.score([context], ["Paris"])[0]), abs=1e-3)
  # A text pair: encoded whole, the continuation being what follows the context's encoding.
  ids_context, ids_continuation = lm.encode_pair(context, continuation)
  assert ids_context + ids_continuation == vocabulary.encode(context + continuation)
  (ll, greedy), = lm.loglikelihood([(context, continuation)])  # fmt: skip
  assert ll == pytest.approx(lm.score_tokens([(ids_context, ids_continuation)])[0][0])
  assert ll < 0 and isinstance(greedy, bool)
  # Accuracy through the CLI equals the harness's own numbers on the same model.
  expected = harness.evaluate(lm, harness.load_tasks(path))
  capsys.readouterr()
  assert cli.main(["eval", "--workdir", tiny_run, "--harness", path]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed["step"] == 30
  for key in ("mc/acc", "mc/acc_norm", "mc/acc_bytes"):
    assert printed[key] == expected[key]
    assert printed[key] in (0.0, 0.25, 0.5, 0.75, 1.0)
  assert os.path.exists(os.path.join(tiny_run, "eval", "harness_step_30.json"))


@pytest.mark.slow
def test_lm_eval_adapter_runs_local_tasks_end_to_end(tiny_run, tmp_path):
  pytest.importorskip("lm_eval")
  os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
  import lm_eval
  from lm_eval.tasks import TaskManager

  from t5x_lite.evaluation import lm_eval_adapter

  write_task(tmp_path)
  with open(tmp_path / "text.jsonl", "w") as f:
    for text in ("The Python tutorial explains classes.", "A module is a file of definitions."):
      f.write(json.dumps({"text": text}) + "\n")
  task_dir = tmp_path / "tasks"
  task_dir.mkdir()
  common = "dataset_path: json\ntest_split: test\n"
  (task_dir / "mc.yaml").write_text(
    f"task: t5x_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'mc.jsonl'}\n"
    'output_type: multiple_choice\ndoc_to_text: "Question: {{question}}\\nAnswer:"\n'
    "doc_to_choice: choices\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n"
  )
  (task_dir / "ppl.yaml").write_text(
    f"task: t5x_ppl\n{common}dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'text.jsonl'}\n"
    'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
    "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n"
  )
  (task_dir / "gen.yaml").write_text(
    f"task: t5x_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'mc.jsonl'}\n"
    'output_type: generate_until\ndoc_to_text: "Question: {{question}}\\nAnswer:"\n'
    'doc_to_target: "{{choices[label]}}"\ngeneration_kwargs:\n  until: ["\\n"]\n'
    "  max_gen_toks: 4\nmetric_list:\n  - metric: exact_match\n"
  )
  model = lm_eval_adapter.T5xLiteLM(workdir=tiny_run, batch_size=8)
  output = lm_eval.simple_evaluate(
    model=model,
    tasks=["t5x_mc", "t5x_ppl", "t5x_gen"],
    task_manager=TaskManager(include_path=str(task_dir)),
    bootstrap_iters=0,
  )
  results = output["results"]
  assert results["t5x_mc"]["acc,none"] in (0.0, 0.25, 0.5, 0.75, 1.0)
  assert results["t5x_gen"]["exact_match,none"] in (0.0, 0.25, 0.5, 0.75, 1.0)
  # Rolling log-likelihood: the whole document's log-prob, as our own token scorer gives it.
  bpb = results["t5x_ppl"]["bits_per_byte,none"]
  texts = ["The Python tutorial explains classes.", "A module is a file of definitions."]
  lls = [
    model.model.score_tokens([([], list(model.model.vocabulary.encode(t)))])[0][0] for t in texts
  ]
  direct = -sum(lls) / (math.log(2) * sum(len(t.encode()) for t in texts))
  assert bpb == pytest.approx(direct, rel=1e-5)
  assert 0.5 < bpb < 10
  assert np.isfinite(results["t5x_ppl"]["word_perplexity,none"])


@pytest.mark.slow
def test_harness_runs_at_every_evaluation_of_training(tmp_path, shared_vocab_workdir):
  """`train.harness_tasks`: each evaluation logs the few-shot metrics beside the loss, and they
  equal a harness run on the final checkpoint."""
  from t5x_lite import config as config_lib
  from t5x_lite.training import loop

  path = write_task(tmp_path, shots=1)
  workdir = shared_vocab_workdir(str(tmp_path / "run"))
  overrides = {
    "train.steps": "6",
    "train.batch_size": "8",
    "train.eval_every": "3",
    "train.eval_steps": "1",
    "train.checkpoint_every": "6",
    "train.sample_prompt": "",
    "train.harness_tasks": path,
    "data.feature_lengths": "{'targets': 64}",
    "model.max_length": "64",
  }
  config = config_lib.get_config("gpt.py:tiny", list(overrides.items()))
  result = loop.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  evals = [r for r in logged if "eval/harness/mc/acc" in r]
  assert [r["step"] for r in evals] == [3, 6]  # periodic, then the final evaluation
  assert result["eval"]["harness/mc/acc"] == harness.run_harness(workdir, path)["mc/acc"]
  # A missing task file fails before anything compiles.
  with pytest.raises(config_lib.ConfigError, match="harness_tasks"):
    config_lib.get_config("gpt.py:tiny", [("train.harness_tasks", str(tmp_path / "no.yaml"))])
