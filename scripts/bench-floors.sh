#!/usr/bin/env bash
# Builds the release binaries and measures how close lainlet is to this machine's floors
# (BENCHMARKS.md, "Floors: how close to the machine"); prints the tables at the end.
#
#   scripts/bench-floors.sh                   # everything (~15 minutes after the build)
#   ORIG_BIN=target/original/lainlet scripts/bench-floors.sh  # with the original (Go)
#                                             lainlet, built by scripts/build-original.sh
#   SKIP_BUILD=1 ONLY=get scripts/bench-floors.sh               # only the GET table, no build
#
# Environment:
#   ONLY=all|watch|get  what to run (default all: the watch tables, then the GET table)
#   ORIG_BIN            the original lainlet binary, measured too (--orig-bin)
#   SKIP_BUILD=1        use the binaries in target/release as they are
#   PODGROUP=0          leave out the podgroup scenario at 10,000 watchers (slow: preloads 1,000 apps)
#   WAIT_SECS=1200      how long to wait for a quiet machine (1-min load < 1, no rustc/cargo)
#   OUT=DIR             where every run's full output goes (default /tmp/bench-floors-<time>)
#   WRK_SECS=10         length of each wrk run
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

only="${ONLY:-all}"
case "$only" in all|watch|get) ;; *) echo "bench-floors.sh: ONLY must be all, watch or get" >&2; exit 2 ;; esac
out="${OUT:-/tmp/bench-floors-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
wait_secs="${WAIT_SECS:-1200}"
wrk_secs="${WRK_SECS:-10}"
bin="$root/target/release"
orig=()
if [ -n "${ORIG_BIN:-}" ]; then
  [ -x "$ORIG_BIN" ] || { echo "bench-floors.sh: ORIG_BIN=$ORIG_BIN is not executable" >&2; exit 2; }
  orig=(--orig-bin "$ORIG_BIN")
fi

say() { echo "== $*" | tee -a "$out/summary.md" >&2; }

# what is installed and measured
scripts/ensure-deps.sh --with-etcd
if ! command -v wrk >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq wrk >/dev/null
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked --bin lainlet --bin lainlet-smol --bin lainlet-load
fi
for b in lainlet lainlet-smol lainlet-load; do
  [ -x "$bin/$b" ] || { echo "bench-floors.sh: $bin/$b is missing (build without SKIP_BUILD)" >&2; exit 2; }
done

# Waits (≤ WAIT_SECS) until the 1-minute load is below 1 and no rustc/cargo runs; says so
# either way, so the tables carry the load they were measured under.
quiet() {
  local deadline=$((SECONDS + wait_secs)) load busy
  while :; do
    load="$(cut -d' ' -f1 /proc/loadavg)"
    busy="$(pgrep -c -x 'rustc|cargo' || true)"
    if awk -v l="$load" 'BEGIN{exit !(l < 1)}' && [ "${busy:-0}" = 0 ]; then
      say "quiet: $(uptime)"
      return
    fi
    if [ $SECONDS -ge $deadline ]; then
      say "NOT QUIET after ${wait_secs}s, measuring anyway: $(uptime); rustc/cargo processes: ${busy:-0}"
      ps -eo pcpu,comm --sort=-pcpu | head -6 | tee -a "$out/summary.md" >&2
      return
    fi
    sleep 15
  done
}

{
  echo "# bench-floors $(date -u +%FT%TZ)"
  echo "commit $(git rev-parse --short HEAD); uncommitted changes in the measured crates:"
  git status --short -- core shell-common shell-tokio shell-smol load Cargo.lock | sed 's/^/    /'
  echo "machine: $(nproc) cores, $(uname -r); ulimit -n $(ulimit -Hn) (hard)"
} | tee -a "$out/summary.md" >&2

# One `--mode all` run; its last lines (the tables) go to the summary.
watch_run() {
  local name="$1"; shift
  local cmd=("$bin/lainlet-load" --mode all --tmp-dir /dev/shm "${orig[@]}" "$@")
  quiet
  say "$name: ${cmd[*]#$root/}"
  local rc=0
  "${cmd[@]}" >"$out/$name.log" 2>&1 || rc=$?
  [ $rc = 0 ] || say "$name: lainlet-load exited with $rc (see $out/$name.log)"
  sed -n '/^## Results/,$p' "$out/$name.log" | tee -a "$out/summary.md"
}

if [ "$only" != get ]; then
  watch_run config-1k -n 1000 --changes 100 --rate 10
  watch_run config-10k -n 10000 --changes 50 --rate 2
  if [ "${PODGROUP:-1}" != 0 ]; then
    watch_run podgroup-10k -n 10000 --changes 50 --rate 2 --scenario podgroup --preload-apps 1000
  fi
fi

# CPU seconds (user + system) of a process.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13) / hz}' "/proc/$1/stat"; }

# Starts a server (the command after the port), waits until `path` answers 200, runs wrk on
# each view, stops it. Prints one Markdown row per view.
get_server() {
  local label="$1" port="$2"; shift 2
  "$@" >"$out/get-$label.log" 2>&1 &
  local pid=$! i
  for i in $(seq 1 150); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/v2/configwatcher?target=vip" && break
    sleep 0.2
  done
  for view in "/v2/configwatcher?target=vip" "/v2/coreinfowatcher"; do
    local url="http://127.0.0.1:$port$view" before after bytes
    bytes="$(curl -s "$url" | wc -c)"
    before="$(cpu_of $pid)"
    wrk -t2 -c64 -d"${wrk_secs}s" --latency "$url" >"$out/wrk-$label-${view//[\/?=]/_}.txt" 2>&1 || true
    after="$(cpu_of $pid)"
    awk -v label="$label" -v view="$view" -v bytes="$bytes" -v cpu="$(awk -v a="$before" -v b="$after" -v s="$wrk_secs" 'BEGIN{printf "%.2f", (b-a)/s}')" '
      /Requests\/sec/ {rps=$2}
      /^ +50%/ {p50=$2}
      /^ +99%/ {p99=$2}
      END {printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", view, label, bytes, rps, p50, p99, cpu}' \
      "$out/wrk-$label-${view//[\/?=]/_}.txt"
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

if [ "$only" != watch ]; then
  quiet
  say "GET: wrk -t2 -c64 -d${wrk_secs}s --latency, each server alone, built-in demo data"
  port=$((29400 + RANDOM % 500))
  {
    get_server get-floor "$port" "$bin/lainlet-load" --mode get-floor --listen "127.0.0.1:$port" --max-secs 600
    get_server lainlet "$((port + 1))" "$bin/lainlet" --demo --web "127.0.0.1:$((port + 1))"
    get_server lainlet-smol "$((port + 2))" "$bin/lainlet-smol" --demo --web "127.0.0.1:$((port + 2))"
    if [ ${#orig[@]} -gt 0 ]; then
      # The original has no demo mode: the same data goes into a throw-away etcd's v2 store.
      etcd_dir="$(mktemp -d /dev/shm/bench-floors-etcd.XXXXXX)"
      etcd_port=$((port + 3))
      etcd --data-dir "$etcd_dir" --enable-v2=true \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$((port + 4))" --initial-advertise-peer-urls "http://127.0.0.1:$((port + 4))" \
        --initial-cluster "default=http://127.0.0.1:$((port + 4))" >"$out/get-etcd.log" 2>&1 &
      etcd_pid=$!
      for i in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$etcd_port/health" && break; sleep 0.2; done
      "$bin/lainlet-load" --mode load-demo --etcd "127.0.0.1:$etcd_port" --etcd-api v2 >>"$out/get-etcd.log" 2>&1
      get_server original "$((port + 5))" "$ORIG_BIN" -web="127.0.0.1:$((port + 5))" \
        -grpc.addr="127.0.0.1:$((port + 6))" -etcd="127.0.0.1:$etcd_port" -ip=127.0.0.1
      kill "$etcd_pid" 2>/dev/null || true
      wait "$etcd_pid" 2>/dev/null || true
      rm -rf "$etcd_dir"
    fi
  } >"$out/get.tsv"
  # one table: req/s and its ratio to the floor's for the same view
  {
    echo
    echo "| view | server | body | req/s | × floor req/s | latency p50 / p99 | server CPU |"
    echo "| --- | --- | ---: | ---: | ---: | --- | ---: |"
    sort -s -t$'\t' -k1,1 "$out/get.tsv" | awk -F'\t' '
      $2 == "get-floor" {floor[$1] = $4}
      {rows[NR] = $0}
      END {
        for (i = 1; i <= NR; i++) {
          split(rows[i], f, "\t")
          ratio = (floor[f[1]] > 0) ? sprintf("%.2f×", f[4] / floor[f[1]]) : "n/a"
          printf "| `%s` | %s | %s B | %.0f | %s | %s / %s | %s cores |\n", f[1], f[2], f[3], f[4], ratio, f[5], f[6], f[7]
        }
      }'
  } | tee -a "$out/summary.md"
fi

say "done: $(uptime); full output in $out"
