#!/usr/bin/env bash
# Builds and starts lainlet. Without arguments it serves a built-in demo data set (--demo).
#   scripts/run.sh                                  # demo data on http://127.0.0.1:9001
#   scripts/run.sh --etcd 10.0.0.1:2379 --ip 10.0.0.5
#   LAINLET_SHELL=smol scripts/run.sh               # the same service on the smol shell
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
if [ $# -eq 0 ]; then
  set -- --web 127.0.0.1:9001 --demo
fi
bin=lainlet
[ "${LAINLET_SHELL:-tokio}" = smol ] && bin=lainlet-smol
exec cargo run --quiet --release --locked --bin "$bin" -- "$@"
