"""`t5x-lite`: thin subcommands that parse arguments and call library functions.

  t5x-lite train [--config gpt.py:tiny] [--workdir runs/gpt_tiny] [--config.train.steps=20]
  t5x-lite eval --workdir W [--step N] [--harness tasks.yaml]
  t5x-lite generate --workdir W --prompt "..." [--max-new-tokens 64 --temperature 0 --top-k 0 --seed 0]
                    [--prompt-file F --output out.jsonl --num-beams 4 --alpha 0.6]
  t5x-lite embed --workdir W --input texts.txt --output emb.npy [--pooling mean|cls]
  t5x-lite predict --workdir W --input texts.txt [--output predictions.jsonl]
  t5x-lite tasks list | t5x-lite tasks show NAME [-n 3]
  t5x-lite tokenizer train --type unigram --input 'corpus/*.txt' --vocab-size 32000 --out spm
  t5x-lite convert --from hf --model path/to/hf_dir --out runs/init
  t5x-lite launch ...   (Cloud TPU VM; see docs/tpu.md)
  t5x-lite curate --input 'crawl/*.warc.gz' --out corpus/ --config curate.py:web_en
  t5x-lite scaling plan|run|fit|predict ...   (scaling laws; see docs/scaling.md)

Errors the user can fix (bad config, missing checkpoint, bad input file) print one line and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence


class UsageError(ValueError):
  """A command-line argument is missing or wrong."""


def _setup_logging(verbose: bool = False) -> None:
  logging.basicConfig(
    level=logging.DEBUG if verbose else logging.INFO,
    format="%(asctime)s %(levelname).1s %(message)s",
    datefmt="%H:%M:%S",
    stream=sys.stderr,
    force=True,  # libraries imported while building the parser (absl via orbax) may have set one
  )
  for noisy in ("absl", "orbax", "jax._src", "etils", "grain"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def _user_errors() -> tuple[type[BaseException], ...]:
  """Exception types that mean "the input is wrong": reported in one line, exit 2."""
  from t5x_lite import checkpoints, config  # noqa: PLC0415
  from t5x_lite.training import loop  # noqa: PLC0415

  errors = [
    UsageError,
    config.ConfigError,
    checkpoints.CheckpointError,
    loop.TrainingError,
    FileNotFoundError,
  ]
  from t5x_lite import inference  # noqa: PLC0415

  errors.append(inference.InferenceError)
  from t5x_lite.convert.hf.rules import ConversionError  # noqa: PLC0415
  from t5x_lite.curation import CurationError  # noqa: PLC0415
  from t5x_lite.data import DataError  # noqa: PLC0415 (RegistryError is a DataError)
  from t5x_lite.evaluation import harness  # noqa: PLC0415
  from t5x_lite.launch import LaunchError  # noqa: PLC0415
  from t5x_lite.scaling import cli as scaling_cli  # noqa: PLC0415

  errors += [CurationError, DataError, *scaling_cli.USER_ERRORS, harness.HarnessError]
  errors += [ConversionError, LaunchError]
  return tuple(errors)


def _default_workdir(config_spec: str) -> str:
  path, _, variant = config_spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("runs", f"{name}_{variant}" if variant else name)


# ---------------------------------------------------------------------------------------------


def cmd_train(args, overrides: Sequence[str]) -> int:
  from t5x_lite import config as config_lib  # noqa: PLC0415
  from t5x_lite import runtime  # noqa: PLC0415

  runtime.maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
  config = config_lib.get_config(args.config, config_lib.parse_overrides(overrides))
  workdir = args.workdir or _default_workdir(args.config)
  from t5x_lite.training import loop  # noqa: PLC0415

  logging.info("workdir: %s", os.path.abspath(workdir))
  result = loop.train_and_evaluate(config, workdir)
  if result.get("preempted"):
    command = ["t5x-lite", "train", "--config", args.config, "--workdir", workdir, *overrides]
    print(
      f"preempted at step {result['step']} (checkpoint in {workdir}); resume with: "
      f"{shlex.join(command)}",
      flush=True,
    )
  else:
    print(
      f"done: step {result['step']}, eval loss {result['eval'].get('loss', float('nan')):.4f}; "
      f"outputs in {workdir}",
      flush=True,
    )
  return 0


def cmd_eval(args, overrides: Sequence[str]) -> int:
  if args.harness:  # few-shot tasks from a YAML file (evaluation/harness.py)
    from t5x_lite.evaluation import harness  # noqa: PLC0415

    print(json.dumps(harness.run_harness(args.workdir, args.harness, step=args.step), indent=2))
    return 0
  from t5x_lite import config as config_lib  # noqa: PLC0415
  from t5x_lite.evaluation import checkpoint as evaluation  # noqa: PLC0415

  results = evaluation.evaluate_checkpoint(
    args.workdir, step=args.step, task=args.task, num_batches=args.num_batches,
    overrides=config_lib.parse_overrides(overrides),
  )  # fmt: skip
  print(json.dumps(results, indent=2, sort_keys=True))
  return 0


def _read_texts(args, flag: str = "prompt") -> list[str]:
  """--prompt/--text values plus the lines of --prompt-file/--input; empty ones are errors."""
  texts = list(getattr(args, flag) or [])
  path = args.prompt_file if flag == "prompt" else args.input
  option = "--prompt-file" if flag == "prompt" else "--input"
  if path:
    if not os.path.exists(path):
      raise FileNotFoundError(f"{option} {path} does not exist")
    with open(path, encoding="utf-8") as f:
      lines = [line.rstrip("\n") for line in f]
    if not any(line.strip() for line in lines):
      raise UsageError(f"{option} {path} has no non-empty line")
    texts += [line for line in lines if line.strip()]
  if not texts:
    raise UsageError(f"nothing to do: give --{flag} TEXT (repeatable) or {option} FILE")
  if any(not t.strip() for t in texts):
    raise UsageError(f"a --{flag} is empty: every --{flag} needs some text")
  return texts


def cmd_generate(args, overrides: Sequence[str]) -> int:
  from t5x_lite import inference  # noqa: PLC0415

  # Options first: a wrong flag is reported before minutes of loading.
  inference.check_generation_options(
    args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.num_beams, args.alpha
  )
  prompts = _read_texts(args, "prompt")
  loaded = inference.load(args.workdir, step=args.step)
  outputs = loaded.generate(
    prompts,
    max_new_tokens=args.max_new_tokens,
    temperature=args.temperature,
    top_k=args.top_k,
    top_p=args.top_p,
    num_beams=args.num_beams,
    alpha=args.alpha,
    seed=args.seed,
  )
  out = open(args.output, "w", encoding="utf-8") if args.output else None
  for prompt, text in zip(prompts, outputs):
    if out:
      out.write(json.dumps({"prompt": prompt, "output": text}) + "\n")
    elif loaded.model.encoder_decoder:  # an output, not a continuation: keep them apart
      print(f"{prompt}\n  -> {text}")
    else:
      print(f"{prompt}{text}")
  if out:
    out.close()
    print(f"wrote {len(prompts)} generations to {args.output}")
  return 0


def cmd_chat(args, overrides: Sequence[str]) -> int:
  """--prompt / --prompt-file: one single-turn conversation each; else an interactive session
  on stdin (the history is kept; an empty line or EOF ends it)."""
  import sys  # noqa: PLC0415

  from t5x_lite import inference  # noqa: PLC0415

  loaded = inference.load(args.workdir, step=args.step)
  options = dict(
    system_prompt=args.system, max_new_tokens=args.max_new_tokens,
    temperature=args.temperature, seed=args.seed,
  )  # fmt: skip
  if args.prompt or args.prompt_file:
    prompts = _read_texts(args, "prompt")
    replies = loaded.chat([[{"role": "user", "content": p}] for p in prompts], **options)
    for prompt, reply in zip(prompts, replies):
      print(f"user: {prompt}\nassistant: {reply}")
    return 0
  history: list[dict[str, str]] = []
  while True:
    print("user: ", end="", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
      return 0
    history.append({"role": "user", "content": line.rstrip("\n")})
    (reply,) = loaded.chat([history], **options)
    history.append({"role": "assistant", "content": reply})
    print(f"assistant: {reply}", flush=True)


def cmd_embed(args, overrides: Sequence[str]) -> int:
  import numpy as np  # noqa: PLC0415

  from t5x_lite import inference  # noqa: PLC0415

  texts = _read_texts(args, "text")
  embeddings = inference.load(args.workdir, step=args.step).embed(texts, pooling=args.pooling)
  np.save(args.output, embeddings)
  print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.output}")
  return 0


def cmd_predict(args, overrides: Sequence[str]) -> int:
  from t5x_lite import inference  # noqa: PLC0415

  texts = _read_texts(args, "text")
  results = inference.load(args.workdir, step=args.step).classify(texts)
  out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
  for text, result in zip(texts, results):
    out.write(json.dumps({"text": text, **result}) + "\n")
  if args.output:
    out.close()
    print(f"wrote {len(texts)} predictions to {args.output}")
  return 0


def cmd_tasks(args, overrides: Sequence[str]) -> int:
  from t5x_lite.data import show  # noqa: PLC0415

  modules = tuple(args.task_module or ())
  if args.tasks_command == "list":
    print(show.list_tasks(task_modules=modules))
  else:
    from t5x_lite import config as config_lib  # noqa: PLC0415

    config = config_lib.get_config(args.config, config_lib.parse_overrides(overrides))
    print(
      show.show_task(
        args.name,
        config=config,
        num_examples=args.n,
        task_modules=modules,
        workdir=args.workdir or _default_workdir(args.config),
      )
    )
  return 0


def cmd_tokenizer(args, overrides: Sequence[str]) -> int:
  from t5x_lite.data import tokenizer_training  # noqa: PLC0415

  return tokenizer_training.run_train_command(args)


def cmd_convert(args, overrides: Sequence[str]) -> int:
  from t5x_lite.convert import hf  # noqa: PLC0415

  if args.source != "hf":
    raise UsageError(f"--from {args.source}: only 'hf' is supported")
  try:
    if args.to_hf or args.target == "hf":
      path = hf.export_checkpoint(args.model, args.out)
    else:
      path = hf.convert_to_checkpoint(args.model, args.out)
  except hf.ConversionError as e:
    raise UsageError(str(e)) from None
  print(f"wrote {path}")
  return 0


def cmd_launch(args, overrides: Sequence[str]) -> int:
  from t5x_lite import launch  # noqa: PLC0415

  return launch.main(list(args.launch_args))


# ---------------------------------------------------------------------------------------------


TRAIN_EPILOG = """\
Any config value can be set with --config.KEY=VALUE (KEY is a dotted path into the config,
VALUE is parsed as a Python literal and type-checked against the config), for example:

  t5x-lite train --config gpt.py:tiny --config.train.steps=200 --config.optimizer.learning_rate=1e-3
  t5x-lite train --config t5.py:tiny --config.data.feature_lengths="{'inputs': 128, 'targets': 32}"

Rerunning the same command resumes from the workdir's latest checkpoint.
"""


def _version() -> str:
  try:
    return importlib.metadata.version("t5x_lite")
  except importlib.metadata.PackageNotFoundError:
    return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
  from t5x_lite.config import DEFAULT_CONFIG  # noqa: PLC0415

  parser = argparse.ArgumentParser(
    prog="t5x-lite",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
  parser.add_argument("--version", action="version", version=f"t5x-lite {_version()}")
  sub = parser.add_subparsers(dest="command", required=True)

  train = sub.add_parser(
    "train",
    help="pre-train or fine-tune (resumes from the workdir)",
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog=TRAIN_EPILOG,
  )
  train.add_argument("--config", default=DEFAULT_CONFIG, help="config file[:variant]")
  train.add_argument(
    "--workdir", default="", help="outputs and checkpoints (default runs/<config>)"
  )
  train.add_argument("--coordinator", default=None, help="jax.distributed coordinator host:port")
  train.add_argument("--num-processes", type=int, default=None)
  train.add_argument("--process-id", type=int, default=None)
  train.set_defaults(func=cmd_train)

  ev = sub.add_parser("eval", help="evaluate a checkpoint on a task's eval split")
  ev.add_argument("--workdir", required=True)
  ev.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  ev.add_argument("--task", default=None, help="task to evaluate (default: the run's task)")
  ev.add_argument(
    "--num-batches", type=int, default=None,
    help="cap on validation batches (default: the run's train.eval_steps; 0 = the whole split)",
  )  # fmt: skip
  ev.add_argument(
    "--harness", default=None, help="few-shot tasks YAML (t5x_lite/evaluation/harness.py)"
  )
  ev.set_defaults(func=cmd_eval)

  gen = sub.add_parser("generate", help="continue prompts with a trained decoder / encoder-decoder")
  gen.add_argument("--workdir", required=True)
  gen.add_argument("--prompt", action="append", help="a prompt (repeatable)")
  gen.add_argument("--prompt-file", default=None, help="one prompt per line")
  gen.add_argument("--output", default=None, help="write JSONL here instead of printing")
  gen.add_argument("--step", type=int, default=None)
  gen.add_argument("--max-new-tokens", type=int, default=64)
  gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  gen.add_argument("--top-k", type=int, default=0)
  gen.add_argument("--top-p", type=float, default=1.0)
  gen.add_argument("--seed", type=int, default=0)
  gen.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams")
  gen.add_argument("--alpha", type=float, default=0.6, help="beam search length penalty")
  gen.set_defaults(func=cmd_generate)

  chat = sub.add_parser("chat", help="talk to an instruction-tuned decoder (ChatML-like turns)")
  chat.add_argument("--workdir", required=True)
  chat.add_argument("--prompt", action="append", help="a user message (repeatable; no session)")
  chat.add_argument("--prompt-file", default=None, help="one user message per line")
  chat.add_argument("--system", default=None, help="a system prompt")
  chat.add_argument("--step", type=int, default=None)
  chat.add_argument("--max-new-tokens", type=int, default=64)
  chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  chat.add_argument("--seed", type=int, default=0)
  chat.set_defaults(func=cmd_chat)

  emb = sub.add_parser("embed", help="sentence embeddings of texts to a .npy file")
  emb.add_argument("--workdir", required=True)
  emb.add_argument("--text", action="append", help="a text (repeatable)")
  emb.add_argument("--input", default=None, help="one text per line")
  emb.add_argument("--output", required=True, help="the .npy file to write ([n, d_model])")
  emb.add_argument("--pooling", default="mean", choices=("mean", "cls"))
  emb.add_argument("--step", type=int, default=None)
  emb.set_defaults(func=cmd_embed)

  pred = sub.add_parser("predict", help="labels and probabilities from a fine-tuned classifier")
  pred.add_argument("--workdir", required=True)
  pred.add_argument("--text", action="append", help="a text (repeatable)")
  pred.add_argument("--input", default=None, help="one text per line")
  pred.add_argument("--output", default=None, help="write JSONL here instead of printing")
  pred.add_argument("--step", type=int, default=None)
  pred.set_defaults(func=cmd_predict)

  tasks = sub.add_parser("tasks", help="list registered tasks or show what one feeds the model")
  tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
  tasks_list = tasks_sub.add_parser("list")
  tasks_list.add_argument("--task-module", action="append", help="registry module or .py file")
  tasks_show = tasks_sub.add_parser("show")
  tasks_show.add_argument("name")
  tasks_show.add_argument("-n", type=int, default=3, help="examples to show")
  tasks_show.add_argument("--config", default=DEFAULT_CONFIG)
  tasks_show.add_argument("--workdir", default="", help="where the vocabulary is cached")
  tasks_show.add_argument("--task-module", action="append", help="registry module or .py file")
  for p in (tasks_list, tasks_show):
    p.set_defaults(func=cmd_tasks)

  tok = sub.add_parser("tokenizer", help="train a tokenizer (SentencePiece, byte-BPE, WordPiece)")
  tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True)
  tok_train = tok_sub.add_parser("train")
  tok_train.add_argument("--input", required=True, help="text files (glob)")
  tok_train.add_argument("--out", required=True, help="output folder (AutoTokenizer loads it)")
  tok_train.add_argument("--vocab-size", type=int, default=32000, help="total, extra ids included")
  tok_train.add_argument("--extra-ids", type=int, default=100)
  tok_train.add_argument("--type", choices=("unigram", "bpe", "byte-bpe", "wordpiece"))
  tok_train.add_argument("--model-type", default="unigram", choices=("unigram", "bpe"))
  tok_train.add_argument("--lowercase", action="store_true", help="byte-bpe / wordpiece only")
  tok_train.set_defaults(func=cmd_tokenizer)

  conv = sub.add_parser("convert", help="import a Hugging Face checkpoint (safetensors)")
  conv.add_argument("--from", dest="source", default="hf")
  conv.add_argument(
    "--model", required=True, help="HF model directory (config.json + *.safetensors)"
  )
  conv.add_argument("--out", required=True)
  conv.add_argument("--to", dest="target", choices=("hf",), help="export a t5x_lite run (--model "
                    "WORKDIR) to a Hugging Face folder: config, safetensors, tokenizer")  # fmt: skip
  conv.add_argument("--to-hf", action="store_true", help=argparse.SUPPRESS)  # old spelling
  conv.set_defaults(func=cmd_convert)

  launch = sub.add_parser(
    "launch", help="create a Cloud TPU VM and train on it (docs/tpu.md)", add_help=False
  )
  launch.add_argument("launch_args", nargs=argparse.REMAINDER)
  launch.set_defaults(func=cmd_launch)

  from t5x_lite.curation import cli as curate_cli  # noqa: PLC0415
  from t5x_lite.scaling import cli as scaling_cli  # noqa: PLC0415

  curate_cli.add_parser(sub)
  scaling_cli.add_parser(sub)  # `t5x-lite scaling plan|run|fit|predict` (scaling/cli.py)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  overrides = [a for a in rest]
  if args.command not in ("train", "eval", "tasks", "launch", "curate", "scaling") and overrides:
    parser.error(f"unrecognized arguments: {' '.join(overrides)}")
  _setup_logging(args.verbose)
  try:
    return args.func(args, overrides)
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # noqa: BLE001
    if isinstance(e, _user_errors()):
      print(f"t5x-lite {args.command}: error: {e}", file=sys.stderr)
      return 2
    raise


if __name__ == "__main__":
  sys.exit(main())
