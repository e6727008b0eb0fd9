#!/usr/bin/env bash
# Builds lainlet's Debian package (cargo deb), checks what is in it, installs it (dpkg -i, when
# root and no lainlet package is installed yet; purged again afterwards unless --keep), and runs
# the installed binary the way systemd would: the packaged unit's ExecStart, its variables from
# the packaged /etc/default/lainlet with a node's values filled in (this machine as the node,
# free loopback ports, a throw-away etcd), the unit's LimitNOFILE as the hard limit. It must
# serve, raise its soft open-files limit to the hard one, and stop cleanly on SIGTERM (what
# `systemctl stop` sends). systemd itself need not run here.
#   scripts/check-package.sh              build, check, install, run, purge
#   scripts/check-package.sh --no-build   check the newest <target>/debian/lainlet_*.deb as built
#   scripts/check-package.sh --deb FILE   check that package (scripts/check-release.sh passes the
#                                         portable one of target/dist/), no build
#   scripts/check-package.sh --linux-3.10 run the binary under scripts/linux-3.10.py: every
#                                         system call newer than CentOS 7's kernel fails (ENOSYS)
#   scripts/check-package.sh --keep       leave the package installed
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

CARGO_DEB_VERSION=3.8.0 # builds with Rust 1.95; pinned so that every machine makes the same package

build=1 keep=0 deb="" old_kernel=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --deb) [ $# -ge 2 ] || { echo "check-package.sh: --deb needs a file" >&2; exit 2; }
      deb=$(realpath "$2"); build=0; shift ;;
    --linux-3.10) # the interpreter itself: the unit's environment below has only a plain PATH
      old_kernel=("$(python3 -c 'import sys; print(sys.executable)')" "$root_dir/scripts/linux-3.10.py") ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "check-package.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

t0=$(date +%s)
step() { echo "== $* ($(($(date +%s) - t0)) s)"; }
fail() { echo "check-package.sh: FAILED: $*" >&2; exit 1; }

scripts/ensure-deps.sh --with-etcd
if [ $build = 1 ]; then
  if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
    step "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
  fi
  step "cargo deb -p lainlet-tokio"
  cargo deb -p lainlet-tokio --locked
fi
if [ -z "$deb" ]; then
  target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  deb=$(ls -t "$target_dir"/debian/lainlet_*.deb 2>/dev/null | head -n 1 || true)
  [ -n "$deb" ] || fail "no $target_dir/debian/lainlet_*.deb (build it: cargo deb -p lainlet-tokio)"
fi
[ -f "$deb" ] || fail "no such package: $deb"

step "contents of $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/lainlet ./etc/default/lainlet lainlet.service ./usr/share/doc/lainlet/copyright; do
  grep -qF "$path" <<<"$contents" || fail "$deb has no $path"
done
dpkg-deb --field "$deb" Package | grep -qx lainlet || fail "the package is not called lainlet"
tmp=$(mktemp -d /tmp/lainlet-check-package.XXXXXX)
etcd_pid="" lainlet_pid="" installed=0
cleanup() {
  local pid
  for pid in $lainlet_pid $etcd_pid; do
    kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  if [ $installed = 1 ] && [ $keep = 0 ]; then
    dpkg --purge lainlet >/dev/null || echo "check-package.sh: dpkg --purge lainlet failed" >&2
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
dpkg-deb --control "$deb" "$tmp/control"
grep -qx /etc/default/lainlet "$tmp/control/conffiles" || fail "/etc/default/lainlet is not a conffile"
dpkg-deb --extract "$deb" "$tmp/unpacked"

# Where the unit and its files are: installed, or else unpacked.
unit_rel=$(cd "$tmp/unpacked" && find . -path '*/systemd/system/lainlet.service' | head -n 1)
[ -n "$unit_rel" ] || fail "no lainlet.service in the package"
prefix="$tmp/unpacked"
if [ "$(id -u)" = 0 ] && ! dpkg-query -W -f='${Status}' lainlet 2>/dev/null | grep -q installed; then
  step "dpkg -i $deb"
  dpkg -i "$deb"
  installed=1
  prefix=""
  dpkg -s lainlet | grep -q '^Status: install ok installed' || fail "dpkg -s: not installed"
else
  echo "(not root, or a lainlet package is installed already: checking the unpacked files)"
fi
unit="$prefix/${unit_rel#./}"
defaults="$prefix/etc/default/lainlet"
bin="$prefix/usr/bin/lainlet"
[ ${#old_kernel[@]} = 0 ] || echo "(running $bin under scripts/linux-3.10.py: no system call newer than Linux 3.10)"
version_out="$("${old_kernel[@]}" "$bin" -v 2>&1)" || fail "$bin -v exited with $?"
grep -q "Lainlet Version" <<<"$version_out" || fail "$bin -v: $version_out"
if [ $installed = 1 ] && command -v systemd-analyze >/dev/null 2>&1; then
  step "systemd-analyze verify $unit"
  systemd-analyze verify --man=no "$unit" || fail "systemd-analyze verify $unit"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "a throw-away etcd"
etcd_port=$(free_port) peer_port=$(free_port)
etcd --name check --data-dir "$tmp/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "check=http://127.0.0.1:$peer_port" >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
put() {
  local body
  body=$(python3 -c 'import base64,json,sys; print(json.dumps({"key":base64.b64encode(sys.argv[1].encode()).decode(),"value":base64.b64encode(sys.argv[2].encode()).decode()}))' "$1" "$2")
  curl -sf -X POST "http://127.0.0.1:$etcd_port/v3/kv/put" -d "$body" >/dev/null
}
for _ in $(seq 100); do put /lain/config/domain lain.local 2>/dev/null && break; sleep 0.1; done
put /lain/config/domain lain.local || { cat "$tmp/etcd.log" >&2; fail "etcd did not start"; }
put /lain/config/super_apps/console '{}'

step "the unit's command line"
web_port=$(free_port) grpc_port=$(free_port)
# The node's settings, as an operator writes them into /etc/default/lainlet.
sed -e "s|^NODE_IP=.*|NODE_IP=127.0.0.1|" -e "s|^ETCD=.*|ETCD=127.0.0.1:$etcd_port|" \
  -e "s|^WEB=.*|WEB=127.0.0.1:$web_port|" -e "s|^GRPC=.*|GRPC=127.0.0.1:$grpc_port|" \
  "$defaults" >"$tmp/lainlet.default"
# ExecStart with systemd's rules: ${X} is one word (empty or not), $X splits on white space;
# the environment is the EnvironmentFile's variables.
python3 - "$unit" "$tmp/lainlet.default" "$tmp" <<'EOF'
import re, shlex, sys
unit, defaults, out = sys.argv[1:]
text = open(unit).read().replace("\\\n", " ")
exec_start = [l.split("=", 1)[1] for l in text.splitlines() if l.startswith("ExecStart=")]
nofile = [l.split("=", 1)[1].strip() for l in text.splitlines() if l.startswith("LimitNOFILE=")]
assert len(exec_start) == 1 and len(nofile) == 1, (exec_start, nofile)
env = {}
for line in open(defaults):
    line = line.strip()
    if line and not line.startswith("#"):
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip().strip('"')
argv = []
for word in shlex.split(exec_start[0]):
    whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
    if whole:
        argv += env.get(whole[1], "").split()
    else:
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m[1], ""), word))
open(f"{out}/argv", "w").write("\0".join(argv))
open(f"{out}/env", "w").write("\0".join(f"{k}={v}" for k, v in env.items()))
open(f"{out}/nofile", "w").write(nofile[0])
print("ExecStart:", shlex.join(argv))
print("LimitNOFILE:", nofile[0])
EOF
mapfile -d '' argv <"$tmp/argv"
mapfile -d '' unit_env <"$tmp/env"
nofile=$(cat "$tmp/nofile")
[ "${argv[0]}" = /usr/bin/lainlet ] || fail "ExecStart runs ${argv[0]}, not /usr/bin/lainlet"
argv[0]="$bin"
# systemd sets soft = hard = LimitNOFILE; here the hard limit is the unit's (or this machine's
# hard limit, if lower: raising it takes privileges a container may not have), and the soft
# limit starts lower, as in a shell, to see lainlet raise it.
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$hard" -ge "$nofile" ] || {
  echo "(this machine's hard open-files limit $hard is below the unit's $nofile: using $hard)"
  nofile=$hard
}
grep -qx 'StateDirectory=lainlet' "$unit" || fail "the unit does not create /var/lib/lainlet (StateDirectory=)"
# The state file in the throw-away directory, not this machine's /var/lib/lainlet.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${unit_env[@]}" LAINLET_STATE_FILE="$tmp/state" \
  prlimit --nofile=1024:"$nofile" "${old_kernel[@]}" "${argv[@]}" >"$tmp/lainlet.log" 2>&1 &
lainlet_pid=$!
ready=0
for _ in $(seq 200); do
  if curl -sf "http://127.0.0.1:$web_port/healthz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$lainlet_pid" 2>/dev/null || break
  sleep 0.1
done
[ $ready = 1 ] || { cat "$tmp/lainlet.log" >&2; fail "lainlet did not become ready"; }

step "what it serves"
check() { grep -qF -- "$2" <<<"$3" || { cat "$tmp/lainlet.log" >&2; fail "$1: expected $2, got: $3"; }; }
check /healthz '"status":"ok"' "$(curl -s "http://127.0.0.1:$web_port/healthz")"
check configwatcher '{"domain":"lain.local"}' \
  "$(curl -s "http://127.0.0.1:$web_port/v2/configwatcher?target=domain")"
check "the status page" "<title>lainlet status</title>" "$(curl -s "http://127.0.0.1:$web_port/")"
python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2)' "$grpc_port" ||
  fail "nothing listens on -grpc.addr 127.0.0.1:$grpc_port"
soft=$(awk '/Max open files/ {print $4}' "/proc/$lainlet_pid/limits")
[ "$soft" = "$nofile" ] || fail "soft open-files limit $soft, not the hard limit $nofile"
log=$(cat "$tmp/lainlet.log")
check "the start-up log" "open files: soft limit $nofile" "$log"
check "the start-up log" "serving: ready" "$log"
check "-debug" "request" "$log"

step "SIGTERM (systemctl stop)"
kill -TERM "$lainlet_pid"
status=0
wait "$lainlet_pid" || status=$?
lainlet_pid=""
[ $status = 0 ] || { cat "$tmp/lainlet.log" >&2; fail "exit status $status after SIGTERM"; }
[ -s "$tmp/state" ] || { cat "$tmp/lainlet.log" >&2; fail "no state file written at SIGTERM"; }
echo "its log (without the request lines):"
grep -v ' request' "$tmp/lainlet.log" | sed 's/^/  /'
step "package ok: $deb"
