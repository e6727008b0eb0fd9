#!/usr/bin/env bash
# Re-records the etcd 2.3.7 answers the core's unit tests use (core/src/etcd/recorded/etcd2_*.http
# from a 2.3.7 member, proxy2_*.http through a 2.3.7 proxy in front of it): builds etcd 2.3.7 if
# needed, then runs the recorder (tests/tests/record_etcd2.rs), which prints the timing and
# header table that core/src/etcd/recorded/README.md shows. Dates and the cluster ID change on
# every run; check `git diff` before committing.
#   scripts/record-etcd2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CI=true scripts/build-etcd-2.3.7.sh >/dev/null
cargo test -p lainlet-tests --test record_etcd2 -- --ignored --nocapture --test-threads=1
