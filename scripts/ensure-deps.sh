#!/usr/bin/env bash
# Installs what lainlet's build and tests need, when missing (Debian). Idempotent; safe to re-run.
#   (always)        protoc   – etcd-client compiles etcd's protobuf definitions at build time
#   --with-etcd     etcd     – the end-to-end tests start a real etcd (Debian's etcd-server), and
#                   etcdctl (etcd-client) for `etcdctl snapshot save|restore` in the restore tests
#   --with-python   a virtualenv at target/test-venv (or $LAINLET_TEST_VENV) with the pinned
#                   Python test clients of tests/python/requirements.txt (sseclient, grpcio,
#                   selenium); python3-venv comes from apt when `python3 -m venv` cannot work;
#                   openssl, for the gRPC TLS test's self-signed certificate.
#                   Skipped when the venv's marker records the same requirements and Python.
#   --with-browser  Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)
#                   for the headless browser tests
#   --with-release  what scripts/release.sh and scripts/check-release.sh use: Debian's rpm
#                   (rpmbuild, rpm, rpm2archive), xz-utils, binutils (objcopy, objdump, strip,
#                   readelf), and a virtualenv at target/release-venv (or $LAINLET_RELEASE_VENV)
#                   with the pinned cargo-zigbuild and ziglang of scripts/release-tools.txt
#                   (skipped when its marker records the same file and Python)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

with_etcd=0 with_python=0 with_browser=0 with_release=0
for arg in "$@"; do
  case "$arg" in
    --with-etcd) with_etcd=1 ;;
    --with-python) with_python=1 ;;
    --with-browser) with_browser=1 ;;
    --with-release) with_release=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "ensure-deps.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

python=python3
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ $with_etcd = 1 ]; then
  command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || [ -x /usr/bin/etcdctl ] || need+=(etcd-client)
fi
if [ $with_python = 1 ] || [ $with_release = 1 ]; then
  if ! command -v "$python" >/dev/null 2>&1; then
    need+=(python3 python3-venv)
  elif ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian splits venv/ensurepip out of python3; a venv without pip is useless here
    need+=(python3-venv)
  fi
  [ $with_python = 0 ] || command -v openssl >/dev/null 2>&1 || need+=(openssl)
fi
if [ $with_release = 1 ]; then
  { command -v rpmbuild && command -v rpm2archive; } >/dev/null 2>&1 || need+=(rpm)
  command -v xz >/dev/null 2>&1 || need+=(xz-utils)
  { command -v objcopy && command -v objdump && command -v readelf; } >/dev/null 2>&1 ||
    need+=(binutils)
fi
if [ $with_browser = 1 ]; then
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    need+=(chromium chromium-driver)
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ $with_python = 1 ]; then
  venv="${LAINLET_TEST_VENV:-$root/target/test-venv}"
  reqs="$root/tests/python/requirements.txt"
  marker="$venv/.lainlet-requirements"
  # what the venv was built from: the interpreter and the exact requirements file
  want="$("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')
$(cat "$reqs")"
  if [ -x "$venv/bin/python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] \
     && "$venv/bin/python" -c '' >/dev/null 2>&1; then
    :
  else
    echo "creating the Python test venv at $venv" >&2
    rm -f "$marker"
    "$python" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      --only-binary=grpcio,grpcio-tools,protobuf -r "$reqs"
    printf '%s' "$want" >"$marker"
  fi
fi

if [ $with_release = 1 ]; then
  venv="${LAINLET_RELEASE_VENV:-$root/target/release-venv}"
  reqs="$root/scripts/release-tools.txt"
  marker="$venv/.lainlet-release-tools"
  want="$("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')
$(cat "$reqs")"
  if [ -x "$venv/bin/cargo-zigbuild" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] \
     && "$venv/bin/python" -c '' >/dev/null 2>&1; then
    :
  else
    echo "creating the release tools' venv at $venv" >&2
    rm -f "$marker"
    "$python" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      --only-binary=:all: -r "$reqs"
    printf '%s' "$want" >"$marker"
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi
