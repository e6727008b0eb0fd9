#!/usr/bin/env bash
# Builds etcd 2.3.7 -- the etcd of every LAIN cluster (a member on the manager, `etcd --proxy on`
# on every other node) -- into target/etcd-2.3.7/etcd, from the source archive in
# ../shared/upstream (read-only in CI, hence target/), with Debian's golang-go (installed by the
# upstream script when missing). About a minute on 2 cores; a no-op once built. The end-to-end
# tests find it there (or at $LAINLET_TEST_ETCD2) and run the v2 conformance suite on a 2.3.7
# member and through a 2.3.7 proxy (tests/harness/setup.rs).
#
# When the archive is missing: with CI=true this fails; elsewhere it says what is missing and
# exits 0, and the 2.3.7 tests skip with that reason.
#   scripts/build-etcd-2.3.7.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
upstream="$root/../shared/upstream"
out="$root/target/etcd-2.3.7"
if [ -x "$out/etcd" ] && "$out/etcd" --version 2>/dev/null | grep -q '2\.3\.7'; then
  echo "$out/etcd"
  exit 0
fi
missing=""
[ -f "$upstream/etcd-2.3.7.tar.gz" ] || missing="$upstream/etcd-2.3.7.tar.gz"
[ -f "$upstream/build-etcd-2.3.7.sh" ] || missing="$missing $upstream/build-etcd-2.3.7.sh"
if [ -n "$missing" ]; then
  msg="etcd 2.3.7 cannot be built, missing:$missing (the v2 tests on a 2.3.7 member and proxy need it)"
  if [ "${CI:-}" = true ]; then
    echo "build-etcd-2.3.7.sh: $msg" >&2
    exit 1
  fi
  echo "build-etcd-2.3.7.sh: $msg; those tests will be skipped" >&2
  exit 0
fi
echo "building etcd 2.3.7 into $out (about a minute)" >&2
bash "$upstream/build-etcd-2.3.7.sh" "$out" >&2
echo "$out/etcd"
