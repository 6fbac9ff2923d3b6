#!/usr/bin/env bash
# Run by snakemake in the new conda environment after envs/restyle.yaml is created.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python -m pip install --no-deps -e "$here/.."
python -m restyle.packaged
