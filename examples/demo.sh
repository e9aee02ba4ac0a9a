#!/usr/bin/env bash
# The main job: install, train two short runs of the T-Rex flow-matching showcase with
# different learning rates (side by side, one CPU core each), then open the UI on them.
#   bash examples/demo.sh                 # 2 runs x 120 epochs, then http://127.0.0.1:8686
#   bash examples/demo.sh --no-ui         # stop after training (CI)
#   bash examples/demo.sh --epochs 300 --lrs 0.001,0.003,0.01
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
pip install -q torch==2.13.0          # the CPU wheel; never an unpinned torch
pip install -q -e ".[demo]"

exec flowillower demo quickstart "$@"
