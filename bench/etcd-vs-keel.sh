#!/usr/bin/env bash
# Keel and etcd side by side: a 3-node Keel cluster and a 3-node etcd 3.4 cluster (Debian's
# etcd-server), each on loopback with fsync on, measured one after the other by the same load
# generator, `keel bench --api etcd` (unary etcd v3 `Put` / `Range` calls to the leader), with
# 256-byte values at 1, 16, 64 and 256 closed-loop clients: writes, linearizable reads and
# serializable reads. Prints one table with the ratios (Keel / etcd; for p99 and server CPU, etcd /
# Keel, so that above 1 means Keel is better in every column). Server CPU is the user and system
# CPU time of the cluster's three processes from the end of the warm-up until the load stops,
# divided by the requests answered: what a request costs the servers, whatever the load
# generator (which shares the machine) costs.
#
# SYSTEMS="etcd keel floor" adds the replication floor (runtime/benches/replication_floor.rs): three
# processes that do only the I/O any replicated, fsynced write needs (the client's gRPC call, the
# batch sent to both followers, one fdatasync per batch on each node), driven by the same load
# generator, for the write workload only. A second table then sets the write targets (2x etcd at 1
# client, 3x at 64) beside what the floor reaches on this machine.
#
# ROUNDS=N repeats the whole comparison N times, the two systems taking turns to go first (single
# runs on a small VM move by 10-30 %), and the table shows the median of each cell over the rounds
# with the lowest and highest single-round ratio beside it.
#
# Usage: bench/etcd-vs-keel.sh            (about 6 minutes per round with the defaults, after the build)
# Settings (environment): DURATION=10s WARMUP=2s (both as `sleep` takes them) CLIENTS="1 16 64 256" CONNECTIONS=4 KEYS=10000
#   ROUNDS=1 SYSTEMS="etcd keel" WORKLOADS="write read-linearizable read-serializable" (any of the three)
#   WORK=<dir to keep the JSON reports and logs in; the clusters' data directories are there too,
#   so WORK=/dev/shm/<name> takes the disk out of the comparison>
#   KEEL_ARGS=<more flags for each keel node, e.g. "--worker-threads 1"; none by default>
# Needs: cargo, python3 (for the table), and etcd: installed with apt-get when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CLIENTS=${CLIENTS:-"1 16 64 256"}
CONNECTIONS=${CONNECTIONS:-4}
KEYS=${KEYS:-10000}
SYSTEMS=${SYSTEMS:-"etcd keel"}
ROUNDS=${ROUNDS:-1}
read -r -a KEEL_ARGS <<<"${KEEL_ARGS:-}"
WORKLOADS=${WORKLOADS:-"write read-linearizable read-serializable"}

if ! command -v etcd >/dev/null; then
  echo "== installing etcd (Debian's etcd-server)"
  apt-get install -y etcd-server >/dev/null
  # The package starts a system etcd on the default ports; this script uses its own ports.
  (systemctl stop etcd || service etcd stop || true) >/dev/null 2>&1
fi
command -v python3 >/dev/null || { echo "python3 is needed to print the table" >&2; exit 2; }

echo "== building keel (release)"
cargo build --release -q -p keel-runtime --bin keel
KEEL="${CARGO_TARGET_DIR:-target}/release/keel"
if [[ " $SYSTEMS " == *" floor "* ]]; then
  echo "== building the replication floor (release)"
  FLOOR=$(cargo bench -q -p keel-runtime --bench replication_floor --no-run --message-format json |
    python3 -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "replication_floor" and message.get("executable"):
        print(message["executable"])')
fi

WORK=${WORK:-$(mktemp -d /tmp/keel-vs-etcd.XXXXXX)}
mkdir -p "$WORK"
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

start_etcd() {
  local cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
  for i in 1 2 3; do
    rm -rf "$WORK/etcd$i"
    etcd --name "e$i" --data-dir "$WORK/etcd$i" \
      --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
      --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token keel-bench \
      >"$WORK/etcd$i.log" 2>&1 &
    PIDS+=($!)
  done
  ENDPOINTS="127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
}

start_keel() {
  local cluster="1=127.0.0.1:27001,2=127.0.0.1:27002,3=127.0.0.1:27003"
  for i in 1 2 3; do
    rm -rf "$WORK/keel$i"
    "$KEEL" node --id "$i" --listen "127.0.0.1:2700$i" --data-dir "$WORK/keel$i" \
      --initial-cluster "$cluster" ${KEEL_ARGS[@]+"${KEEL_ARGS[@]}"} >"$WORK/keel$i.log" 2>&1 &
    PIDS+=($!)
  done
  ENDPOINTS="127.0.0.1:27001,127.0.0.1:27002,127.0.0.1:27003"
}

# The replication floor's three processes (node 1 leads; the followers listen on the next ports).
start_floor() {
  for i in 2 3 1; do
    "$FLOOR" node "$i" 27201 "$WORK/floor$i.data" >"$WORK/floor$i.log" 2>&1 &
    PIDS+=($!)
  done
  ENDPOINTS="127.0.0.1:27201"
}

# One measurement; the JSON report goes to $WORK/<system>-<workload>-<clients>-r<round>.json.
measure() {
  local system=$1 workload=$2 clients=$3 round=$4 args=()
  case $workload in
    write) args=(--workload write) ;;
    read-linearizable) args=(--workload read --consistency linearizable) ;;
    read-serializable) args=(--workload read --consistency eventual) ;;
  esac
  local connections=$((clients < CONNECTIONS ? clients : CONNECTIONS))
  local report="$WORK/$system-$workload-$clients-r$round.json" bench cpu_start cpu_end
  "$KEEL" bench --api etcd --endpoints "$ENDPOINTS" "${args[@]}" --clients "$clients" \
    --connections "$connections" --duration "$DURATION" --warmup "$WARMUP" --keys "$KEYS" \
    --value-size 256 -w json >"$report" &
  bench=$!
  # The servers' CPU time over the measured interval: from the end of the warm-up until the
  # load generator exits.
  sleep "$WARMUP"
  cpu_start=$(cluster_cpu_ticks)
  wait "$bench" || true
  cpu_end=$(cluster_cpu_ticks)
  python3 - "$report" "$((cpu_end - cpu_start))" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
path, ticks, per_second = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    report = json.load(open(path))
    answered = report["succeeded"]
    cpu_us = ticks / per_second * 1e6 / answered if answered else float("nan")
    report["server_cpu_us_per_request"] = round(cpu_us, 1)
    json.dump(report, open(path, "w"))
    print(f"   {report['config']['workload']:<6} {report['config']['clients']:>4} clients: "
          f"{report['throughput']:>10.1f} req/s, p99 {report['latency_ms']['p99']:.2f} ms, "
          f"server CPU {cpu_us:.0f} us/request, failed {report['failed']}")
except Exception as error:
    print(f"   no report in {path}: {error}")
EOF
}

# User and system CPU time, in clock ticks, that the cluster's three processes have used.
cluster_cpu_ticks() {
  local total=0 pid rest
  for pid in "${PIDS[@]}"; do
    # utime and stime are fields 14 and 15 of /proc/<pid>/stat, counted after the command
    # name (field 2, in parentheses, which may hold spaces).
    rest=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    read -r -a rest <<<"$rest"
    total=$((total + rest[11] + rest[12]))
  done
  echo "$total"
}

# Each round starts each cluster afresh; the systems take turns to go first, so that a drift in
# the machine's speed during the run does not favour one of them.
run_system() {
  local system=$1 round=$2
  echo "== round $round/$ROUNDS, $system: starting 3 nodes"
  "start_$system"
  # Wait until the cluster answers a write through the etcd API.
  local ready=""
  for _ in $(seq 1 60); do
    if "$KEEL" bench --api etcd --endpoints "$ENDPOINTS" --requests 1 --warmup 0s --clients 1 -w json \
      >/dev/null 2>&1; then ready=yes; break; fi
    sleep 1
  done
  [ -n "$ready" ] || { echo "$system did not become ready; logs in $WORK" >&2; exit 1; }
  for workload in $WORKLOADS; do
    # The floor serves Put only.
    [[ $system == floor && $workload != write ]] && continue
    for clients in $CLIENTS; do
      measure "$system" "$workload" "$clients" "$round"
    done
  done
  stop_all
}

read -r -a ORDER <<<"$SYSTEMS"
for round in $(seq 1 "$ROUNDS"); do
  systems=("${ORDER[@]}")
  if ((round % 2 == 0)); then
    systems=()
    for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do systems+=("${ORDER[i]}"); done
  fi
  for system in "${systems[@]}"; do run_system "$system" "$round"; done
done

python3 - "$WORK" "$CLIENTS" "$WORKLOADS" "$ROUNDS" <<'EOF'
import json, os, statistics, sys
work, clients, workloads, rounds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4])
nan = float("nan")

def value(system, workload, c, r, field):
    try:
        report = json.load(open(os.path.join(work, f"{system}-{workload}-{c}-r{r}.json")))
        return float(field(report))
    except (OSError, ValueError, KeyError, TypeError):
        return nan

def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else nan

def ratio(a, b):
    return a / b if a == a and b == b and b else nan

def spread(ratios):
    ratios = [r for r in ratios if r == r]
    return f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else ""

FIELDS = {
    "throughput": lambda r: r["throughput"],
    "p99": lambda r: r["latency_ms"]["p99"],
    "cpu": lambda r: r["server_cpu_us_per_request"],
}
print()
print(f"median of {rounds} round(s); 'range' is the lowest and highest ratio of a single round")
print(f"{'workload':<18} {'clients':>7} | {'keel req/s':>10} {'etcd req/s':>10} {'ratio':>6} {'range':>9} | "
      f"{'keel p99':>8} {'etcd p99':>8} {'ratio':>6} {'range':>9} | {'keel cpu':>8} {'etcd cpu':>8} {'ratio':>6}")
print(f"{'':<18} {'':>7} | {'':>10} {'':>10} {'':>6} {'':>9} | {'ms':>8} {'ms':>8} {'':>6} {'':>9} | "
      f"{'us/req':>8} {'us/req':>8} {'':>6}")
print("-" * 138)
for workload in workloads:
    for c in clients:
        runs = {}
        for name, field in FIELDS.items():
            keel = [value("keel", workload, c, r, field) for r in range(1, rounds + 1)]
            etcd = [value("etcd", workload, c, r, field) for r in range(1, rounds + 1)]
            runs[name] = (keel, etcd)
        (kts, ets), (kps, eps), (kcs, ecs) = runs["throughput"], runs["p99"], runs["cpu"]
        kt, et, kp, ep, kc, ec = map(median, (kts, ets, kps, eps, kcs, ecs))
        # Throughput: Keel over etcd; p99 and CPU: etcd over Keel (above 1 favours Keel).
        t_range = spread([ratio(k, e) for k, e in zip(kts, ets)])
        p_range = spread([ratio(e, k) for k, e in zip(kps, eps)])
        print(f"{workload:<18} {c:>7} | {kt:>10.0f} {et:>10.0f} {ratio(kt, et):>5.2f}x {t_range:>9} | "
              f"{kp:>8.2f} {ep:>8.2f} {ratio(ep, kp):>5.2f}x {p_range:>9} | {kc:>8.0f} {ec:>8.0f} {ratio(ec, kc):>5.2f}x")
floor = {c: median([value("floor", "write", c, r, FIELDS["throughput"]) for r in range(1, rounds + 1)]) for c in clients}
if "write" in workloads and any(v == v for v in floor.values()):
    TARGETS = {"1": 2.0, "64": 3.0}
    print()
    print("writes against the replication floor (medians): what the targets ask, and what this machine allows")
    print(f"{'clients':>7} | {'etcd/s':>8} {'target/s':>8} | {'floor/s':>8} {'floor p99':>9} {'floor cpu':>9} | "
          f"{'keel/s':>8} {'keel/floor':>10} | {'floor/etcd':>10}")
    print("-" * 100)
    for c in clients:
        e = median([value("etcd", "write", c, r, FIELDS["throughput"]) for r in range(1, rounds + 1)])
        k = median([value("keel", "write", c, r, FIELDS["throughput"]) for r in range(1, rounds + 1)])
        fp = median([value("floor", "write", c, r, FIELDS["p99"]) for r in range(1, rounds + 1)])
        fc = median([value("floor", "write", c, r, FIELDS["cpu"]) for r in range(1, rounds + 1)])
        target = f"{TARGETS[c] * e:>8.0f}" if c in TARGETS and e == e else f"{'':>8}"
        print(f"{c:>7} | {e:>8.0f} {target} | {floor[c]:>8.0f} {fp:>9.2f} {fc:>9.0f} | "
              f"{k:>8.0f} {100 * ratio(k, floor[c]):>9.0f}% | {ratio(floor[c], e):>9.2f}x")
print()
print(f"reports and logs: {work}")
EOF
