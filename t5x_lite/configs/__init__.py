"""The shipped configs (`--config gpt.py:tiny`, `bert.py:...`, `t5.py:...`), installed with the
package so that `t5x-lite train` works from any directory after a plain `pip install`.

A config file is a Python file with `get_config(variant)` returning an `ml_collections.ConfigDict`
that starts from `t5x_lite.config.base_config()`. `config.load_config_file` loads them by path;
a user's own file is given by its path instead of a name from this folder.
"""

import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))
NAMES = ("gpt.py", "bert.py", "t5.py")
