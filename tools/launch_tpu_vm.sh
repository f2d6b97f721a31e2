#!/usr/bin/env bash
# Create a Cloud TPU VM, install t5x_lite on every worker and train there: a thin wrapper around
# `python -m t5x_lite.launch` (the same as `t5x-lite launch`). See docs/tpu.md.
#
#   tools/launch_tpu_vm.sh up --name my-tpu --zone us-central2-b --accelerator-type v4-8 \
#       --config configs/gpt.py:gpt2_small --workdir gs://my-bucket/gpt2 --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m t5x_lite.launch "$@"
