#!/usr/bin/env bash
# The GPU check on a lent device machine (its own python3, no registry): install the carried wheels
# (.whl/, fetched here by bench/gpu_wheels.py) into a scratch site, then run bench/gpu_check.py.
#   device run, carry [".whl"]:  bash bench/gpu_check.sh --out "$OUT"
set -euo pipefail
cd "$(dirname "$0")/.."
site="${GPU_CHECK_SITE:-/tmp/servestack-site}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec python3 bench/gpu_check.py "$@"
