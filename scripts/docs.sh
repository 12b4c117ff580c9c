#!/usr/bin/env bash
# Documentation checks: every public declaration has a doc comment, and the VPNKit catalog (symbols
# and articles) builds with DocC without a single warning.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/doc-coverage.py
swift package generate-documentation --target VPNKit --warnings-as-errors
