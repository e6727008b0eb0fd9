#!/usr/bin/env bash
# build-original.sh: build the ORIGINAL Go lainlet (laincloud/lainlet) from
# source so the benchmarks (lainlet-load --orig-bin) can compare against it.
# Only for benchmarks. Nothing here is part of our product or its tests.
#
# What it does:
#   1. apt-get installs Go and the Go libraries Debian packages
#      (golang-go, golang-google-grpc-dev, golang-golang-x-net-dev,
#      golang-github-golang-protobuf-1-3-dev, golang-github-coreos-go-semver-dev,
#      golang-etcd-server-dev). Their sources go under /usr/share/gocode/src.
#      We want protobuf 1-3 and not 1-5 because golang-etcd-server-dev needs
#      1-3 (through grpc-gateway). apt removes 1-5 if it is installed.
#   2. Unpacks the original (lainlet-1b3d1b8.tar.gz, `git archive` of
#      laincloud/lainlet at 1b3d1b8) from the project's upstream archives
#      ($UPSTREAM, default ../shared/upstream from the project root; read-only
#      is fine) into a temporary GOPATH.
#   3. Adds the dependencies Debian does not package, from the same folder:
#      the REAL upstream sources at the revisions pinned in the original's
#      Gopkg.lock:
#        github.com/go-martini/martini  22fa469  (the HTTP framework of the /v2 API: serving path)
#        github.com/codegangsta/inject  37d7f84  (martini's dependency injector)
#        github.com/mijia/sweb         169a3af  (only its log/ package is compiled)
#        github.com/mijia/adoc         61dbc8d  (spec/ embeds adoc.ContainerDetail/LogConfig in JSON)
#      None of them is shimmed. martini and adoc decide the HTTP/JSON
#      behaviour being measured, so a stand-in would make the comparison
#      meaningless. If an archive is missing the script says which and exits 1
#      (with CI=true that fails the run; elsewhere the tests that need the
#      original skip with that reason).
#   4. The one shim is a symlink. The original imports the etcd v2 client as
#      github.com/coreos/etcd/client (etcd 3.3.3). Debian ships the same v2
#      client package as go.etcd.io/etcd/client (etcd 3.4.23), and the API the
#      original uses is unchanged. We symlink
#      $GOPATH/src/github.com/coreos/etcd/client to it, so no source file of
#      the original is edited.
#   5. Builds in GOPATH mode (GO111MODULE=off, GOPROXY=off, no network),
#      with GOPATH=<tmp>:/usr/share/gocode and CGO_ENABLED=0, stamps
#      version.GitSHA with the commit, and writes the binary to
#      ${OUT:-<project>/target/original/lainlet}. The temporary GOPATH is
#      removed. A binary already there, built from the same archive, is kept.
#
# Version differences from Gopkg.lock (the Debian versions are used):
# grpc 1.33 instead of 1.11.3, golang/protobuf 1.3.5 instead of 1.0.0,
# x/net 0.7.0 (x/net/context is an alias of std context), go-semver 0.3.0,
# etcd v2 client 3.4.23 instead of 3.3.3, Go 1.19 instead of 1.8.
#
# Usage: scripts/build-original.sh   (env: UPSTREAM OUT SKIP_APT=1); prints the binary's path
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

UPSTREAM=${UPSTREAM:-$root/../shared/upstream}
OUT=${OUT:-$root/target/original/lainlet}
ORIG_ARCHIVE=lainlet-1b3d1b8.tar.gz
ORIG_SHA=1b3d1b8

log() { echo "build-original: $*" >&2; }

for a in "$ORIG_ARCHIVE" martini-22fa469.tar.gz inject-37d7f84.tar.gz sweb-169a3af.tar.gz adoc-61dbc8d.tar.gz; do
  if [ ! -f "$UPSTREAM/$a" ]; then
    log "missing $UPSTREAM/$a (the original lainlet's sources and the dependencies Debian lacks)"
    exit 1
  fi
done
if [ -x "$OUT" ] && [ -f "$OUT.source" ] && [ "$(cat "$OUT.source")" = "$ORIG_ARCHIVE" ]; then
  echo "$OUT"; exit 0
fi

# ---- 1. Debian packages ----------------------------------------------------
PKGS=(golang-go golang-google-grpc-dev golang-golang-x-net-dev
      golang-github-golang-protobuf-1-3-dev golang-github-coreos-go-semver-dev
      golang-etcd-server-dev)
if [ "${SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# ---- 2./3. sources into a temporary GOPATH ---------------------------------
WORK=$(mktemp -d /tmp/build-original.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
GP=$WORK/gopath

# unpack ARCHIVE DEST: an archive of one repository (one top folder) as DEST.
unpack() {
  local archive=$1 dest=$2 tmp
  tmp=$(mktemp -d "$WORK/unpack.XXXXXX")
  tar -xzf "$UPSTREAM/$archive" -C "$tmp"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp"/* "$dest"
}

unpack "$ORIG_ARCHIVE"          "$GP/src/github.com/laincloud/lainlet"
unpack martini-22fa469.tar.gz   "$GP/src/github.com/go-martini/martini"
unpack inject-37d7f84.tar.gz    "$GP/src/github.com/codegangsta/inject"
unpack sweb-169a3af.tar.gz      "$GP/src/github.com/mijia/sweb"
unpack adoc-61dbc8d.tar.gz      "$GP/src/github.com/mijia/adoc"

# ---- 4. etcd v2 client under its old import path ---------------------------
ETCD_CLIENT=/usr/share/gocode/src/go.etcd.io/etcd/client
[ -d "$ETCD_CLIENT" ] || { log "missing $ETCD_CLIENT (golang-etcd-server-dev)"; exit 1; }
mkdir -p "$GP/src/github.com/coreos/etcd"
ln -s "$ETCD_CLIENT" "$GP/src/github.com/coreos/etcd/client"

# ---- 5. build ----------------------------------------------------------------
SHA=$ORIG_SHA
mkdir -p "$(dirname "$OUT")"
log "building original lainlet $SHA -> $OUT"
(
  cd "$GP/src/github.com/laincloud/lainlet"
  env GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0 \
      GOPATH="$GP:/usr/share/gocode" \
      go build -o "$OUT" \
      -ldflags "-X github.com/laincloud/lainlet/version.GitSHA=$SHA" \
      github.com/laincloud/lainlet
)
"$OUT" -v >&2
echo "$ORIG_ARCHIVE" >"$OUT.source"
log "ok: $OUT"
echo "$OUT"
