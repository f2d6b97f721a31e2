"""Built-in registry files (content, not mechanism): `pydoc.py` (the default corpus, one task per
objective), `tfds.py` (c4, wikipedia), and `finetune.py` (helpers that register fine-tuning tasks
on JSONL/CSV records). Importing this package registers nothing; `pipeline.import_tasks` imports
the built-in files with the config's `data.task_modules`."""
