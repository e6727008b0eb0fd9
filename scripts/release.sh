#!/usr/bin/env bash
# Builds lainlet's release for LAIN nodes: ONE portable release build of `lainlet` and
# `lainlet-smol` for x86_64 Linux with glibc 2.17 or newer (CentOS 7, Ubuntu 16.04, Debian 9 and
# later), and every artifact made from it, in target/dist/:
#
#   lainlet, lainlet-smol        the binaries, stripped (debug info in debug/)
#   lainlet.xz                   `xz -9` of lainlet: what LAIN's prepare.sh downloads and unpacks
#                                into playbooks/roles/lainlet/files/lainlet (README, "On a LAIN
#                                cluster")
#   lainlet-<v>-1.x86_64.rpm     for CentOS 7 (deploy/lainlet.spec, Debian's rpmbuild)
#   lainlet_<v>-1_amd64.deb      for Debian 9+ / Ubuntu 16.04+ (cargo deb --variant portable),
#   lainlet-dbgsym_<v>-1_amd64.ddeb   and its debug symbols
#   debug/lainlet.debug, debug/lainlet-smol.debug   the binaries' debug info (gdb, perf)
#   SHA256SUMS
#
# The build: `cargo zigbuild --release --target x86_64-unknown-linux-gnu.2.17` (zig links
# against glibc 2.17's symbol versions; the tools come from PyPI, pinned in
# scripts/release-tools.txt). The .deb's, the .rpm's and lainlet.xz's /usr/bin/lainlet are the
# same bytes as target/dist/lainlet. scripts/check-release.sh checks all of it.
#
#   scripts/release.sh              build, then package
#   scripts/release.sh --no-build   package the portable build in target/x86_64-unknown-linux-gnu/release as it is
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

CARGO_DEB_VERSION=3.8.0 # as scripts/check-package.sh
TRIPLE=x86_64-unknown-linux-gnu
GLIBC=2.17

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "release.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

t0=$(date +%s)
step() { echo "== $* ($(($(date +%s) - t0)) s)"; }
fail() { echo "release.sh: FAILED: $*" >&2; exit 1; }

scripts/ensure-deps.sh --with-release
export PATH="${LAINLET_RELEASE_VENV:-$root_dir/target/release-venv}/bin:$PATH"
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  step "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
version=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "lainlet-tokio"))')
built="$target_dir/$TRIPLE/release"
dist="$target_dir/dist"

if [ $build = 1 ]; then
  step "cargo zigbuild --release --target $TRIPLE.$GLIBC (zig $(python-zig version))"
  # A GNU build ID (gcc's default; zig's linker adds none unless asked), so that the debug
  # symbols are found by build ID (the .ddeb's /usr/lib/debug/.build-id/, systemd-coredump).
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,--build-id=sha1" \
    cargo zigbuild --release --locked --target "$TRIPLE.$GLIBC" -p lainlet-tokio -p lainlet-smol --bins
fi
for b in lainlet lainlet-smol; do
  [ -x "$built/$b" ] || fail "no $built/$b (build it: scripts/release.sh without --no-build)"
done

rm -rf "$dist"
mkdir -p "$dist/debug"

# The .deb first: cargo-deb strips the binary and puts its debug info in the .ddeb; that stripped
# binary is the one every other artifact ships.
step "cargo deb --variant portable --no-build --target $TRIPLE"
cargo deb -p lainlet-tokio --variant portable --no-build --target "$TRIPLE" --output "$dist" >/dev/null
deb="$dist/lainlet_${version}-1_amd64.deb"
ddeb="$dist/lainlet-dbgsym_${version}-1_amd64.ddeb"
[ -f "$deb" ] && [ -f "$ddeb" ] || fail "cargo deb made no $deb and $ddeb: $(ls "$dist")"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/lainlet >"$dist/lainlet"
chmod 755 "$dist/lainlet"
debug_member=$(dpkg-deb --contents "$ddeb" | awk '$NF ~ /\.debug$/ {print $NF}')
[ "$(wc -l <<<"$debug_member")" = 1 ] || fail "$ddeb holds not one .debug file: $debug_member"
dpkg-deb --fsys-tarfile "$ddeb" | tar -xO "$debug_member" >"$dist/debug/lainlet.debug"

# lainlet-smol is not packaged: stripped the way cargo-deb strips, its debug info beside it.
step "lainlet-smol"
objcopy --only-keep-debug "$built/lainlet-smol" "$dist/debug/lainlet-smol.debug"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
  -o "$dist/lainlet-smol" "$built/lainlet-smol"
(cd "$dist" && objcopy --add-gnu-debuglink=debug/lainlet-smol.debug lainlet-smol)

step "lainlet.xz (xz -9)"
xz -9 -T1 -c "$dist/lainlet" >"$dist/lainlet.xz"

step "rpmbuild -bb deploy/lainlet.spec"
rpm_top="$target_dir/rpmbuild"
rm -rf "$rpm_top"
rpmbuild -bb deploy/lainlet.spec --quiet --target x86_64-linux \
  --define "_topdir $rpm_top" --define "lainlet_version $version" \
  --define "lainlet_bin $dist/lainlet" --define "lainlet_root $root_dir" >/dev/null
mv "$rpm_top/RPMS/x86_64/lainlet-${version}-1.x86_64.rpm" "$dist/"
rm -rf "$rpm_top"

(cd "$dist" && sha256sum lainlet lainlet-smol lainlet.xz ./*.rpm ./*.deb ./*.ddeb debug/* |
  sed 's| \./| |' >SHA256SUMS)
step "target/dist/"
(cd "$dist" && ls -l --time-style=+ lainlet lainlet-smol lainlet.xz ./*.rpm ./*.deb ./*.ddeb debug/* |
  awk '{sub(/^\.\//, "", $NF); printf "  %12s  %s\n", $5, $NF}')
