#!/usr/bin/env bash
# Runs the whole test suite: unit, property, snapshot and golden tests of the core, and the
# end-to-end conformance tests that start a real etcd and run every test against both service
# binaries (lainlet and lainlet-smol); a binary that is missing fails instead of being skipped.
# Store-dependent tests run against etcd's v3 and v2 stores, the v2 store on etcd 3.4, on an etcd
# 2.3.7 member and through a 2.3.7 proxy (LAINLET_TEST_STORES=v3,v2,v2-etcd2,v2-proxy, default
# all; etcd 2.3.7 is built into target/ from ../shared/upstream, a failure under CI=true).
# The original lainlet (built from ../shared/upstream into target/original) is compared with
# both binaries under churn by the differential test. Python clients run in target/test-venv
# and browser tests in Debian's headless Chromium, both installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --with-etcd --with-python --with-browser
scripts/build-etcd-2.3.7.sh >/dev/null
# The original lainlet, the differential test's oracle (tests/tests/e2e_differential.rs).
if ! scripts/build-original.sh >/dev/null; then
  [ "${CI:-}" = true ] && { echo "test.sh: the original lainlet could not be built" >&2; exit 1; }
  echo "test.sh: the original lainlet is not built: the differential tests will skip" >&2
fi
export INSTA_UPDATE=no          # a snapshot that differs fails; nothing is rewritten
export LAINLET_TEST_KINDS="${LAINLET_TEST_KINDS:-lainlet,lainlet-smol}"
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
# The etcd conformance tests once more over mutual TLS (LAINLET_TEST_ETCD_TLS=1: every etcd
# 3.4 requires client certificates made by the test), when the whole suite was asked for.
if [ $# -eq 0 ]; then
  LAINLET_TEST_ETCD_TLS=1 LAINLET_TEST_STORES=v3,v2 cargo test -p lainlet-tests --locked \
    --test e2e_etcd --test e2e_watch --test e2e_v2 --test e2e_api
fi
