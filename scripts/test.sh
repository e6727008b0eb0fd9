#!/usr/bin/env bash
# Runs the whole test suite: unit, property, snapshot and golden tests of the core, and the
# end-to-end conformance tests that start a real etcd and run every test against both service
# binaries (lainlet and lainlet-smol); a binary that is missing fails instead of being skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --with-etcd
export INSTA_UPDATE=no          # a snapshot that differs fails; nothing is rewritten
export LAINLET_TEST_KINDS="${LAINLET_TEST_KINDS:-lainlet,lainlet-smol}"
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
