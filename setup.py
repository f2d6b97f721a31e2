"""t5x_lite: pre-train BERT-, GPT- and T5-style models with JAX/Flax, TPU-first."""

import setuptools

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
        "ml-collections>=0.1.1",
        "numpy>=1.26",
        "tqdm>=4.66",
        "safetensors>=0.4",
        "array-record>=0.5",
        "scipy>=1.10",  # scaling-law fits (L-BFGS-B); also a dependency of jax
        "pyyaml>=6.0",  # few-shot harness task files (also needed by flax, ml-collections)
    ],
    extras_require={
        # tensorflow-datasets reads ArrayRecord datasets without TensorFlow; the TFDS source test
        # builds a tiny one.
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "tensorboardX>=2.6", "ruff>=0.5",
                 "tensorflow-datasets>=4.9.6", "matplotlib>=3.7"],
        # The parity tests against Hugging Face. torch is pinned: an unpinned `torch` pulls a
        # multi-GB CUDA build; 2.13.0 has a CPU wheel.
        "hf": ["torch==2.13.0", "transformers>=4.40"],
        "tfds": ["tensorflow-datasets>=4.9.6"],
        "tensorboard": ["tensorboardX>=2.6"],
        "scaling": ["matplotlib>=3.7"],  # `t5x-lite scaling fit` plots
        "harness": ["lm-eval>=0.4.5"],  # t5x_lite/lm_eval_adapter.py
        "wandb": ["wandb>=0.17"],  # train.wandb_project
    },
    entry_points={"console_scripts": ["t5x-lite=t5x_lite.cli:main"]},
)
