#!/usr/bin/env bash
# The portable release binary against the ordinary release build, in one run (BENCHMARKS.md,
# "The portable release binary"): A = target/release/lainlet (`cargo build --release`),
# B = target/dist/lainlet (scripts/release.sh), alternated A B A B … so that whatever else the
# machine does falls on both. Each round, for A then B:
#   GET:     the binary alone with its demo data, wrk -t2 -c64 -d${WRK_SECS}s --latency on a small
#            and a large view
#   fan-out: lainlet-load --mode lainlet -n 1000 --changes 100 --rate 10 (its own etcd in /dev/shm)
#            and -n 10000 --changes 50 --rate 2
# Before each round it waits (≤ WAIT_SECS) for a quiet machine: 1-minute load < 1.5, no rustc.
# Prints every run and the medians; full output in $OUT. Under load, the CPU figures (GET
# requests per server CPU second, fan-out CPU per change) move least.
#
#   scripts/bench-release.sh                  # needs target/release/{lainlet,lainlet-load}
#                                             # (cargo build --release --bin lainlet --bin lainlet-load)
#                                             # and target/dist/lainlet (scripts/release.sh)
# Environment: ROUNDS (4), WRK_SECS (10), OUT (/tmp/bench-release-<time>), N10K=0 (leave out
# the 10,000-watcher runs), WAIT_SECS (300)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
rounds="${ROUNDS:-4}"
wrk_secs="${WRK_SECS:-10}"
out="${OUT:-/tmp/bench-release-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
a="$root/target/release/lainlet" b="$root/target/dist/lainlet" load="$root/target/release/lainlet-load"
for f in "$a" "$b" "$load"; do [ -x "$f" ] || { echo "bench-release.sh: no $f" >&2; exit 2; }; done
command -v wrk >/dev/null || { echo "bench-release.sh: needs wrk (apt-get install wrk)" >&2; exit 2; }

cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13) / hz}' "/proc/$1/stat"; }
{
  echo "# bench-release $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), $(nproc) cores"
  echo "A: $a (max $(objdump -T "$a" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1))"
  echo "B: $b (max $(objdump -T "$b" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1))"
} | tee "$out/summary.md"

# get LABEL BIN ROUND: one server, wrk on each view; rows "get <view> <label> <req/s> <p99> <cpu>"
get() {
  local label="$1" bin="$2" round="$3" port=$((29600 + RANDOM % 300)) pid view url log before after
  "$bin" --demo --web "127.0.0.1:$port" >"$out/server-$label-$round.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
  for view in "/v2/configwatcher?target=domain" "/v2/coreinfowatcher"; do
    url="http://127.0.0.1:$port$view" log="$out/wrk-$label-$round-${view//[\/?=]/_}.txt"
    before=$(cpu_of $pid)
    wrk -t2 -c64 -d"${wrk_secs}s" --latency "$url" >"$log" 2>&1 || true
    after=$(cpu_of $pid)
    awk -v view="$view" -v label="$label" -v cpu="$(awk -v x="$before" -v y="$after" -v s="$wrk_secs" 'BEGIN{printf "%.2f", (y-x)/s}')" \
      '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {printf "get\t%s\t%s\t%s\t%s\t%s\n", view, label, rps, p99, cpu}' "$log"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# fanout LABEL BIN ROUND N CHANGES RATE: rows "fanout-N <label> <p50> <p99> <allN p99> <cpu/change>"
fanout() {
  local label="$1" bin="$2" round="$3" n="$4" log="$out/load-$1-$3-$4.txt"
  "$load" --mode lainlet -n "$n" --changes "$5" --rate "$6" --tmp-dir /dev/shm --lainlet-bin "$bin" >"$log" 2>&1 ||
    echo "lainlet-load exited with $? ($log)" >&2
  # the Results row: | lainlet (v3) | N | changes | p50 / p99 / max ms | p99 arrival | all N p50 / p99 / max ms | … | server CPU, per change | …
  awk -F'|' -v n="$n" -v label="$label" '/^\| lainlet/ {
      split($5, d, " / "); split($7, all, " / "); cpu=$10; gsub(/ ms| /, "", cpu)
      printf "fanout-%s\t-\t%s\t%s\t%s\t%s\t%s\n", n, label, d[1]+0, d[2]+0, all[2]+0, cpu }' "$log"
}

quiet() {
  local deadline=$((SECONDS + ${WAIT_SECS:-300}))
  while [ $SECONDS -lt $deadline ]; do
    awk '{exit !($1 < 1.5)}' /proc/loadavg && ! pgrep -x rustc >/dev/null && return
    sleep 10
  done
}

for r in $(seq "$rounds"); do
  quiet
  echo "round $r/$rounds: $(uptime); rustc processes: $(pgrep -c -x rustc || true)" | tee -a "$out/summary.md" >&2
  for label in A B; do
    bin=$a; [ $label = B ] && bin=$b
    get "$label" "$bin" "$r"
    fanout "$label" "$bin" "$r" 1000 100 10
    [ "${N10K:-1}" = 0 ] || fanout "$label" "$bin" "$r" 10000 50 2
  done
done | tee "$out/runs.tsv"

# medians per (kind, view, label), and B / A
python3 - "$out/runs.tsv" <<'EOF' | tee -a "$out/summary.md"
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    runs[(f[0], f[1], f[2])].append(f[3:])
def num(s):
    s = s.strip()
    for unit, k in (("ms", 1.0), ("us", 1e-3), ("s", 1e3)):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * k
    return float(s)
print("\n| measurement | A: cargo build --release | B: portable (zig, glibc 2.17) | B / A (medians) |")
print("| --- | --- | --- | ---: |")
for kind, view in sorted({(k, v) for k, v, _ in runs}):
    if kind == "get":  # requests per second of server CPU
        for label in "AB":
            for row in runs[(kind, view, label)]:
                row.append(str(float(row[0]) / float(row[2])) if float(row[2]) else "0")
    names = (["req/s", "p99 ms", "server CPU cores", "req per server CPU s"] if kind == "get"
             else ["delivery p50 ms", "delivery p99 ms", "all N reached p99 ms", "CPU per change ms"])
    for i, name in enumerate(names):
        cols = []
        for label in "AB":
            vals = [num(r[i]) for r in runs[(kind, view, label)]]
            cols.append((statistics.median(vals), vals))
        what = f"{kind} `{view}` {name}" if kind == "get" else f"{kind} {name}"
        fmt = lambda m, vals: f"**{m:,.2f}** ({' · '.join(f'{v:,.2f}' for v in vals)})"
        ratio = cols[1][0] / cols[0][0] if cols[0][0] else float("nan")
        print(f"| {what} | {fmt(*cols[0])} | {fmt(*cols[1])} | {ratio:.3f} |")
EOF
echo "full output: $out" >&2
