#!/usr/bin/env bash
# Demo: import a bundled example organisation from a real SCIM server on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/python scripts/demo.py "$@"
