#!/usr/bin/env bash
# Checks target/dist/ as scripts/release.sh made it, the way LAIN's nodes would use it:
#
#   * SHA256SUMS matches; `xz -t lainlet.xz`; lainlet.xz, the .deb's and the .rpm's
#     /usr/bin/lainlet are byte for byte target/dist/lainlet;
#   * every shipped binary (lainlet, lainlet-smol) is x86_64 ELF for /lib64/ld-linux-x86-64.so.2,
#     needs only glibc's libraries, and no symbol version newer than GLIBC_2.17 (CentOS 7);
#   * the .rpm (`rpm -qip`, `-qlp`, `--requires`): exactly its files, /etc/default/lainlet a
#     %config(noreplace) file, an xz payload, and no requirement that CentOS 7 cannot meet
#     (glibc ≤ 2.17, only rpmlib features rpm 4.11 has); the unit and the defaults file are the
#     ones in deploy/;
#   * the .deb: Depends libc6 (>= 2.17) at most, xz members (dpkg of Ubuntu 16.04 reads them);
#   * the smoke: scripts/check-package.sh --deb <the .deb> --linux-3.10 (dpkg -i, the unit's
#     command line against a real etcd: v2 API, gRPC, the status page, SIGTERM) with every
#     system call newer than Linux 3.10 failing (ENOSYS), and lainlet-smol serving its demo data
#     and stopping on SIGTERM under the same filter.
#
#   scripts/check-release.sh              all of it
#   scripts/check-release.sh --no-smoke   the artifacts only (no etcd, nothing installed or run)
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

MAX_GLIBC=2.17
# glibc's own libraries; anything else (libssl, libgcc_s, …) may be missing or too old on a node
GLIBC_LIBS="libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 ld-linux-x86-64.so.2"
# the rpmlib() features CentOS 7's rpm 4.11 provides (`rpm --showrc` there)
RPMLIB_4_11="BuiltinLuaScripts CompressedFileNames ConcurrentAccess ExplicitPackageProvide
FileCaps FileDigests HeaderLoadSortsTags PartialHardlinkSets PayloadFilesHavePrefix
PayloadIsBzip2 PayloadIsLzma PayloadIsXz PayloadIsLzma ScriptletExpansion
ScriptletInterpreterArgs TildeInVersions VersionedDependencies"

smoke=1
for arg in "$@"; do
  case "$arg" in
    --no-smoke) smoke=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "check-release.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

t0=$(date +%s)
step() { echo "== $* ($(($(date +%s) - t0)) s)"; }
fail() { echo "check-release.sh: FAILED: $*" >&2; exit 1; }
# version_le A B: A ≤ B as versions (2.9 < 2.17)
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$1" ]; }

if [ $smoke = 1 ]; then scripts/ensure-deps.sh --with-release --with-etcd; else scripts/ensure-deps.sh --with-release; fi
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
version=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "lainlet-tokio"))')
dist="$target_dir/dist"
deb="$dist/lainlet_${version}-1_amd64.deb"
rpm="$dist/lainlet-${version}-1.x86_64.rpm"
for f in lainlet lainlet-smol lainlet.xz SHA256SUMS "$(basename "$deb")" "$(basename "$rpm")"; do
  [ -f "$dist/$f" ] || fail "no $dist/$f (make it: scripts/release.sh)"
done
tmp=$(mktemp -d /tmp/lainlet-check-release.XXXXXX)
smol_pid=""
cleanup() {
  [ -z "$smol_pid" ] || { kill -TERM "$smol_pid" 2>/dev/null && wait "$smol_pid" 2>/dev/null || true; }
  rm -rf "$tmp"
}
trap cleanup EXIT

step "SHA256SUMS"
(cd "$dist" && sha256sum --quiet --strict -c SHA256SUMS) || fail "SHA256SUMS does not match $dist"

step "lainlet.xz, the .deb's and the .rpm's binary"
xz -t "$dist/lainlet.xz" || fail "xz -t lainlet.xz"
xz -l "$dist/lainlet.xz" | sed 's/^/  /'
xz -dc "$dist/lainlet.xz" >"$tmp/from-xz"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/lainlet >"$tmp/from-deb"
rpm2archive - <"$rpm" | tar -xzO ./usr/bin/lainlet >"$tmp/from-rpm"
for f in from-xz from-deb from-rpm; do
  cmp -s "$tmp/$f" "$dist/lainlet" || fail "$f: not the bytes of $dist/lainlet"
done
echo "  one binary: $(sha256sum <"$dist/lainlet" | cut -c1-16)… in lainlet, lainlet.xz, the .deb and the .rpm"

step "glibc ≤ $MAX_GLIBC"
for b in lainlet lainlet-smol; do
  bin="$dist/$b"
  header=$(readelf -h "$bin")
  grep -q 'Class: *ELF64' <<<"$header" && grep -q 'Machine: *Advanced Micro Devices X86-64' <<<"$header" ||
    fail "$b is not an x86_64 ELF binary"
  interp=$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  [ "$interp" = /lib64/ld-linux-x86-64.so.2 ] || fail "$b: interpreter $interp"
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  for lib in $needed; do
    grep -qw -- "$lib" <<<"$GLIBC_LIBS" || fail "$b needs $lib, which is not glibc's"
  done
  # every symbol version the binary asks for (the dynamic symbol table and the version needs)
  tags=$( { objdump -T "$bin"; readelf -V "$bin"; } | grep -oE '\b[A-Z_]+_[0-9]+(\.[0-9]+)+\b' | sort -u -V)
  others=$(grep -v '^GLIBC_' <<<"$tags" || true)
  [ -z "$others" ] || fail "$b asks for symbol versions of other libraries: $others"
  max=$(grep '^GLIBC_' <<<"$tags" | sed 's/^GLIBC_//' | sort -V | tail -n 1)
  [ -n "$max" ] || fail "$b: no GLIBC symbol versions found (objdump -T)"
  version_le "$max" "$MAX_GLIBC" || {
    objdump -T "$bin" | grep -E "GLIBC_$max\b" >&2
    fail "$b needs GLIBC_$max, newer than $MAX_GLIBC"
  }
  echo "  $b: GLIBC_$max at most; needs $(echo $needed)"
done

step "the .rpm"
rpm -qip "$rpm" | sed 's/^/  /'
files=$(rpm -qlp "$rpm")
want="/etc/default/lainlet
/usr/bin/lainlet
/usr/lib/systemd/system/lainlet.service
/usr/share/doc/lainlet
/usr/share/doc/lainlet/README.md"
[ "$files" = "$want" ] || fail "rpm -qlp: $files"
flags=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm")
grep -qx 'cn /etc/default/lainlet' <<<"$flags" || fail "/etc/default/lainlet is not %config(noreplace): $flags"
[ "$(rpm -qcp "$rpm")" = /etc/default/lainlet ] || fail "config files: $(rpm -qcp "$rpm")"
[ "$(rpm -qp --qf '%{PAYLOADCOMPRESSOR}' "$rpm")" = xz ] ||
  fail "payload $(rpm -qp --qf '%{PAYLOADCOMPRESSOR}' "$rpm"): CentOS 7's rpm reads xz, not zstd"
[ "$(rpm -qp --qf '%{ARCH}' "$rpm")" = x86_64 ] || fail "arch $(rpm -qp --qf '%{ARCH}' "$rpm")"
rpm2archive - <"$rpm" | tar -xz -C "$tmp" ./usr/lib/systemd/system/lainlet.service ./etc/default/lainlet
cmp -s "$tmp/usr/lib/systemd/system/lainlet.service" deploy/lainlet.service || fail "the .rpm's unit is not deploy/lainlet.service"
cmp -s "$tmp/etc/default/lainlet" deploy/lainlet.default || fail "the .rpm's /etc/default/lainlet is not deploy/lainlet.default"
requires=$(rpm -qp --requires "$rpm")
while read -r req; do
  case "$req" in
    rpmlib\(*) feature=${req#rpmlib(}; feature=${feature%%)*}
      grep -qw -- "$feature" <<<"$RPMLIB_4_11" || fail "requires $req: rpm 4.11 (CentOS 7) lacks it" ;;
    *\(GLIBC_*\)\(64bit\)) lib=${req%%(*} v=${req#*(GLIBC_}; v=${v%%)*}
      grep -qw -- "$lib" <<<"$GLIBC_LIBS" || fail "requires $req: not glibc's"
      version_le "$v" "$MAX_GLIBC" || fail "requires $req: newer than glibc $MAX_GLIBC" ;;
    *\(\)\(64bit\)) grep -qw -- "${req%%(*}" <<<"$GLIBC_LIBS" || fail "requires $req: not glibc's" ;;
    /bin/sh|'config(lainlet) = '*|'rtld(GNU_HASH)') ;;
    *) fail "requires $req: not expected" ;;
  esac
done <<<"$requires"
echo "  requires: $(grep -o 'GLIBC_[0-9.]*' <<<"$requires" | sort -V | tail -n 1) at most; $(grep -c . <<<"$requires") requirements, all met by CentOS 7"

step "the .deb"
depends=$(dpkg-deb --field "$deb" Depends)
[[ "$depends" =~ ^libc6\ \(\>=\ ([0-9.]+)\)$ ]] || fail "Depends: $depends (expected libc6 (>= …) only)"
version_le "${BASH_REMATCH[1]}" "$MAX_GLIBC" || fail "Depends: $depends, newer than $MAX_GLIBC"
members=$(ar t "$deb" | tr '\n' ' ')
[ "$members" = "debian-binary control.tar.xz data.tar.xz " ] || fail ".deb members: $members (dpkg 1.18 reads xz, not zstd)"
echo "  Depends: $depends; members: $members"

if [ $smoke = 0 ]; then
  step "release ok (no smoke: --no-smoke)"
  exit 0
fi

step "the .deb's lainlet on a node as old as CentOS 7's kernel (scripts/check-package.sh --deb … --linux-3.10)"
scripts/check-package.sh --deb "$deb" --linux-3.10

step "lainlet-smol, demo data, under scripts/linux-3.10.py"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
scripts/linux-3.10.py "$dist/lainlet-smol" --demo -web=127.0.0.1:"$port" >"$tmp/smol.log" 2>&1 &
smol_pid=$!
ready=0
for _ in $(seq 100); do
  if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$smol_pid" 2>/dev/null || break
  sleep 0.1
done
[ $ready = 1 ] || { cat "$tmp/smol.log" >&2; fail "lainlet-smol did not become ready"; }
body=$(curl -s "http://127.0.0.1:$port/v2/configwatcher?target=domain")
[ "$body" = '{"domain":"lain.local"}' ] || { cat "$tmp/smol.log" >&2; fail "lainlet-smol: $body"; }
# a watch stream: its first frame
frame=$(curl -sN --max-time 2 "http://127.0.0.1:$port/v2/configwatcher?target=domain&watch=1" | head -c 200 || true)
grep -q 'lain.local' <<<"$frame" || { cat "$tmp/smol.log" >&2; fail "lainlet-smol watch: $frame"; }
kill -TERM "$smol_pid"
status=0
wait "$smol_pid" || status=$?
smol_pid=""
[ $status = 0 ] || { cat "$tmp/smol.log" >&2; fail "lainlet-smol: exit status $status after SIGTERM"; }
step "release ok: $dist"
