#!/usr/bin/env bash
# Keel and etcd side by side: a 3-node Keel cluster and a 3-node etcd 3.4 cluster (Debian's
# etcd-server), each on loopback with fsync on, measured one after the other by the same load
# generator, `keel bench --api etcd` (unary etcd v3 `Put` / `Range` calls to the leader), with
# 256-byte values at 1, 16, 64 and 256 closed-loop clients: writes, linearizable reads and
# serializable reads. Prints one table with the ratios (Keel / etcd; for p99, etcd / Keel, so that
# above 1 means Keel is better in both columns).
#
# Usage: bench/etcd-vs-keel.sh            (about 4 minutes with the defaults)
# Settings (environment): DURATION=10s WARMUP=2s CLIENTS="1 16 64 256" CONNECTIONS=4 KEYS=10000
#   SYSTEMS="etcd keel" WORK=<dir to keep the JSON reports and logs in>
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
read -r -a KEEL_ARGS <<<"${KEEL_ARGS:-}"
WORKLOADS="write read-linearizable read-serializable"

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

# One measurement; the JSON report goes to $WORK/<system>-<workload>-<clients>.json.
measure() {
  local system=$1 workload=$2 clients=$3 args=()
  case $workload in
    write) args=(--workload write) ;;
    read-linearizable) args=(--workload read --consistency linearizable) ;;
    read-serializable) args=(--workload read --consistency eventual) ;;
  esac
  local connections=$((clients < CONNECTIONS ? clients : CONNECTIONS))
  "$KEEL" bench --api etcd --endpoints "$ENDPOINTS" "${args[@]}" --clients "$clients" \
    --connections "$connections" --duration "$DURATION" --warmup "$WARMUP" --keys "$KEYS" \
    --value-size 256 -w json >"$WORK/$system-$workload-$clients.json" || true
  python3 - "$WORK/$system-$workload-$clients.json" <<'EOF'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
    print(f"   {report['config']['workload']:<6} {report['config']['clients']:>4} clients: "
          f"{report['throughput']:>10.1f} req/s, p99 {report['latency_ms']['p99']:.2f} ms, failed {report['failed']}")
except Exception as error:
    print(f"   no report in {sys.argv[1]}: {error}")
EOF
}

for system in $SYSTEMS; do
  echo "== $system: starting 3 nodes"
  "start_$system"
  # Wait until the cluster answers a write through the etcd API.
  ready=""
  for _ in $(seq 1 60); do
    if "$KEEL" bench --api etcd --endpoints "$ENDPOINTS" --requests 1 --warmup 0s --clients 1 -w json \
      >/dev/null 2>&1; then ready=yes; break; fi
    sleep 1
  done
  [ -n "$ready" ] || { echo "$system did not become ready; logs in $WORK" >&2; exit 1; }
  for workload in $WORKLOADS; do
    for clients in $CLIENTS; do
      measure "$system" "$workload" "$clients"
    done
  done
  stop_all
done

python3 - "$WORK" "$CLIENTS" "$WORKLOADS" <<'EOF'
import json, os, sys
work, clients, workloads = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def load(system, workload, c):
    try:
        return json.load(open(os.path.join(work, f"{system}-{workload}-{c}.json")))
    except (OSError, ValueError):
        return None
print()
print(f"{'workload':<18} {'clients':>7} | {'keel req/s':>11} {'etcd req/s':>11} {'ratio':>6} | "
      f"{'keel p99 ms':>11} {'etcd p99 ms':>11} {'ratio':>6}")
print("-" * 94)
for workload in workloads:
    for c in clients:
        k, e = load("keel", workload, c), load("etcd", workload, c)
        def cell(r, f):
            return f(r) if r else float("nan")
        kt, et = cell(k, lambda r: r["throughput"]), cell(e, lambda r: r["throughput"])
        kp, ep = cell(k, lambda r: r["latency_ms"]["p99"]), cell(e, lambda r: r["latency_ms"]["p99"])
        tr = kt / et if et else float("nan")
        pr = ep / kp if kp else float("nan")
        print(f"{workload:<18} {c:>7} | {kt:>11.0f} {et:>11.0f} {tr:>5.2f}x | {kp:>11.2f} {ep:>11.2f} {pr:>5.2f}x")
print()
print(f"reports and logs: {work}")
EOF
