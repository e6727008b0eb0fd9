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
#   2. Clones the original from its git mirror ($ORIG_SRC, default
#      /work/.mirror/laincloud+lainlet/repo) at $ORIG_REV (default HEAD) into
#      a temporary GOPATH.
#   3. Adds the dependencies Debian does not package. These are the REAL
#      upstream sources, checked out at the exact revisions pinned in the
#      original's Gopkg.lock. They come from git mirrors under $MIRROR_ROOT
#      (default /work/.mirror):
#        github.com/go-martini/martini  22fa469  (the HTTP framework of the /v2 API: serving path)
#        github.com/codegangsta/inject  37d7f84  (martini's dependency injector)
#        github.com/mijia/sweb         169a3af  (only its log/ package is compiled)
#        github.com/mijia/adoc         61dbc8d  (spec/ embeds adoc.ContainerDetail/LogConfig in JSON)
#      None of them is shimmed. martini and adoc decide the HTTP/JSON
#      behaviour being measured, so a stand-in would make the comparison
#      meaningless. If a mirror is missing, the script stops and says which
#      one. (In a session with the search tool: fetch github:OWNER/NAME.)
#   4. The one shim is a symlink. The original imports the etcd v2 client as
#      github.com/coreos/etcd/client (etcd 3.3.3). Debian ships the same v2
#      client package as go.etcd.io/etcd/client (etcd 3.4.23), and the API the
#      original uses is unchanged. We symlink
#      $GOPATH/src/github.com/coreos/etcd/client to it, so no source file of
#      the original is edited.
#   5. Builds in GOPATH mode (GO111MODULE=off, GOPROXY=off, no network),
#      with GOPATH=<tmp>:/usr/share/gocode and CGO_ENABLED=0, stamps
#      version.GitSHA with the commit, and writes the binary to
#      ${OUT:-/tmp/original-lainlet/lainlet}. The temporary GOPATH is removed.
#
# Version differences from Gopkg.lock (the Debian versions are used):
# grpc 1.33 instead of 1.11.3, golang/protobuf 1.3.5 instead of 1.0.0,
# x/net 0.7.0 (x/net/context is an alias of std context), go-semver 0.3.0,
# etcd v2 client 3.4.23 instead of 3.3.3, Go 1.19 instead of 1.8.
#
# Usage: scripts/build-original.sh   (env: ORIG_SRC ORIG_REV MIRROR_ROOT OUT SKIP_APT=1)
set -euo pipefail

ORIG_SRC=${ORIG_SRC:-/work/.mirror/laincloud+lainlet/repo}
ORIG_REV=${ORIG_REV:-HEAD}
MIRROR_ROOT=${MIRROR_ROOT:-/work/.mirror}
OUT=${OUT:-/tmp/original-lainlet/lainlet}

log() { echo "build-original: $*" >&2; }

# ---- 1. Debian packages ----------------------------------------------------
PKGS=(git golang-go golang-google-grpc-dev golang-golang-x-net-dev
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

# checkout SRC REV DEST: clone a local git mirror (bare or not) at REV.
checkout() {
  local src=$1 rev=$2 dest=$3
  if [ ! -e "$src" ]; then
    log "missing git mirror: $src"
    log "(needed for ${dest#"$GP/src/"}: mirror that upstream repository there, then re-run)"
    exit 1
  fi
  mkdir -p "$(dirname "$dest")"
  git clone -q "$src" "$dest"
  git -C "$dest" -c advice.detachedHead=false checkout -q "$rev"
}

# Mirrors may be a bare repo at .../repo or a work tree with .../repo/.git.
mirror() { local d=$MIRROR_ROOT/$1/repo; [ -d "$d/.git" ] && d=$d/.git; echo "$d"; }

checkout "$ORIG_SRC" "$ORIG_REV" "$GP/src/github.com/laincloud/lainlet"
checkout "$(mirror go-martini+martini)" 22fa46961aabd2665cf3f1343b146d20028f5071 "$GP/src/github.com/go-martini/martini"
checkout "$(mirror codegangsta+inject)" 37d7f8432a3e684eef9b2edece76bdfa6ac85b39 "$GP/src/github.com/codegangsta/inject"
checkout "$(mirror mijia+sweb)"         169a3affd5ea43b3aaaa81744a0b86ff89e2b3f3 "$GP/src/github.com/mijia/sweb"
checkout "$(mirror mijia+adoc)"         61dbc8d45a4512b5e1e5c1ff25773cee578418b9 "$GP/src/github.com/mijia/adoc"

# ---- 4. etcd v2 client under its old import path ---------------------------
ETCD_CLIENT=/usr/share/gocode/src/go.etcd.io/etcd/client
[ -d "$ETCD_CLIENT" ] || { log "missing $ETCD_CLIENT (golang-etcd-server-dev)"; exit 1; }
mkdir -p "$GP/src/github.com/coreos/etcd"
ln -s "$ETCD_CLIENT" "$GP/src/github.com/coreos/etcd/client"

# ---- 5. build ----------------------------------------------------------------
SHA=$(git -C "$GP/src/github.com/laincloud/lainlet" rev-parse HEAD)
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
log "ok: $OUT"
