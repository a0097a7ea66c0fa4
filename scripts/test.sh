#!/usr/bin/env bash
# Set up and run Tidemark's tests on a fresh machine: Debian tools (as root), npm dependencies (builds
# the native addon), the VM test assets (a Debian kernel + busybox initramfs), then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
npm ci --no-audit --no-fund
bash scripts/vm-assets.sh
npm test
