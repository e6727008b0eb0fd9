#!/usr/bin/env bash
# Runs the whole test suite: unit, property, snapshot and golden tests of the core, and the
# end-to-end conformance tests that start a real etcd and run every test against both service
# binaries (lainlet and lainlet-smol); a binary that is missing fails instead of being skipped.
# Store-dependent tests run against etcd's v3 and v2 stores (LAINLET_TEST_STORES, default both);
# Python clients run in target/test-venv and browser tests in Debian's headless Chromium, both
# installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --with-etcd --with-python --with-browser
export INSTA_UPDATE=no          # a snapshot that differs fails; nothing is rewritten
export LAINLET_TEST_KINDS="${LAINLET_TEST_KINDS:-lainlet,lainlet-smol}"
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
