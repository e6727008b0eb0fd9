#!/usr/bin/env bash
# Runs the whole test suite: unit, property, snapshot and golden tests of the core, and the
# end-to-end tests that start a real etcd and the real service binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --with-etcd
export INSTA_UPDATE=no          # a snapshot that differs fails; nothing is rewritten
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
