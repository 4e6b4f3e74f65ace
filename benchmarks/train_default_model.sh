#!/usr/bin/env bash
# Rebuild the model shipped in src/bertgeom/model/default: the `small` preset trained from scratch
# on the embedded data (real spikes split by unique sequence + synthetic spikes), seed 42.
# Deterministic up to floating-point differences between machines; about 13 minutes on 2 CPU cores
# (30 epochs at batch 16 and learning rate 3e-3; the demo trains the same preset for its default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/bertgeom train --preset small --epochs 30 --batch-size 16 --learning-rate 3e-3 --seed 42 --out src/bertgeom/model/default
.venv/bin/bertgeom evaluate --model src/bertgeom/model/default --out bench-output/default-model
