#!/usr/bin/env bash
# The main job: install, train a small sweep of the T-Rex flow-matching demo, open the UI.
#   bash examples/demo.sh            # 3 runs x 60 epochs, then the UI on http://127.0.0.1:8686
#   EPOCHS=300 bash examples/demo.sh # the full Flow Visualizer schedule
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
pip install -q torch==2.13.0          # the CPU wheel; never an unpinned torch
pip install -q -e ".[torch]"

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for lr in 0.001 0.003 0.01; do
  python examples/trex_flow.py --kwargs "lr=$lr" "epochs=${EPOCHS:-60}"
done
flowillower ls
exec flowillower ui "$@"
