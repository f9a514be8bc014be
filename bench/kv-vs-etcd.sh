#!/usr/bin/env bash
# The race against etcd (issue 3, section 7): a 3-member etcd cluster and a
# 3-node Shoal cluster on 127.0.0.1, data on the same disk, both fsyncing
# every commit (etcd by default, Shoal always), run the same closed-loop
# workload one after the other: 100-byte values, 10,000 random keys,
# 1/16/64/256 clients over 8 connections; puts, then linearizable gets.
#
#   bench/kv-vs-etcd.sh                 # the whole race
#   CLIENTS="64" bench/kv-vs-etcd.sh    # one client count
#   SYSTEMS=shoal bench/kv-vs-etcd.sh   # one system
#
# Environment knobs: CLIENTS, SYSTEMS ("etcd shoal"), CONNECTIONS (8),
# VALUE_SIZE (100), KEYS (10000), OPS_<clients> (ops per row, e.g. OPS_64),
# WORK_DIR (where data dirs go; default a fresh dir under /var/tmp),
# KEEP=1 (keep the data dirs and logs), PORT_BASE (default: a free range).
#
# Installs etcd-server and protobuf-compiler (etcd-client needs protoc) from
# Debian's packages if missing. Every process it starts is killed on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLIENTS="${CLIENTS:-1 16 64 256}"
SYSTEMS="${SYSTEMS:-etcd shoal}"
CONNECTIONS="${CONNECTIONS:-8}"
VALUE_SIZE="${VALUE_SIZE:-100}"
KEYS="${KEYS:-10000}"

ops_for() {
    local var="OPS_$1"
    if [[ -n "${!var:-}" ]]; then echo "${!var}"; return; fi
    case "$1" in
        1) echo 3000 ;;
        16) echo 20000 ;;
        64) echo 60000 ;;
        *) echo 100000 ;;
    esac
}

log() { echo "[kv-vs-etcd] $*" >&2; }

# --- what we start, and how it all stops -----------------------------------
PIDS=()
WORK=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    if [[ -n "$WORK" && "${KEEP:-0}" != 1 ]]; then
        rm -rf "$WORK"
    elif [[ -n "$WORK" ]]; then
        log "kept $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# --- tools -------------------------------------------------------------------
if ! command -v etcd >/dev/null 2>&1 || ! command -v protoc >/dev/null 2>&1; then
    log "installing etcd-server and protobuf-compiler"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server protobuf-compiler >/dev/null
fi
log "building shoal and etcd-bench (release)"
(cd "$ROOT" && cargo build --release -q -p shoal)
(cd "$ROOT/bench/etcd-bench" && cargo build --release -q)
SHOAL="$ROOT/target/release/shoal"
ETCD_BENCH="$ROOT/bench/etcd-bench/target/release/etcd-bench"

WORK="${WORK_DIR:-$(mktemp -d /var/tmp/kv-vs-etcd.XXXXXX)}"
mkdir -p "$WORK"
RESULTS="$WORK/results"
: >"$RESULTS"

# --- ports: 9 consecutive free ones on 127.0.0.1 ------------------------------
port_busy() { ss -Htln "sport = :$1" | grep -q .; }
pick_base() {
    local base p ok
    for base in $(seq 24100 100 31900); do
        ok=1
        for p in $(seq "$base" $((base + 8))); do
            if port_busy "$p"; then ok=0; break; fi
        done
        if [[ $ok == 1 ]]; then echo "$base"; return; fi
    done
    return 1
}
BASE="${PORT_BASE:-$(pick_base)}" || { log "no free port range"; exit 1; }

# --- machine facts -------------------------------------------------------------
fsync_rate() {
    # 2,000 4 KiB writes, each synced (O_DSYNC), on the disk the data goes
    # to: appending to a new file ($1 = append), or overwriting one
    # already allocated ($1 = overwrite: no metadata to sync, like fdatasync).
    local f="$WORK/fsync-probe" t0 t1 flags=""
    rm -f "$f"
    # Flush what the build left dirty first, or writeback skews the probe.
    sync
    if [[ $1 == overwrite ]]; then
        dd if=/dev/zero of="$f" bs=4k count=2000 status=none
        sync "$f" 2>/dev/null || sync
        flags="conv=notrunc"
    fi
    t0=$(date +%s.%N)
    dd if=/dev/zero of="$f" bs=4k count=2000 oflag=dsync $flags status=none
    t1=$(date +%s.%N)
    rm -f "$f"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", 2000 / (b - a) }'
}
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "disk: $(df -h "$WORK" | awk 'NR==2 {print $1, "mounted on", $6}'), synced 4 KiB writes: $(fsync_rate append)/s appending, $(fsync_rate overwrite)/s overwriting"
echo "etcd: $(etcd --version | head -1 | awk '{print $3}') (defaults: fsync on every commit)"
echo "shoal: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes') (fsync on every commit)"
echo "workload: ${VALUE_SIZE}-byte values, $KEYS keys, clients: $CLIENTS, $CONNECTIONS connections; puts, then linearizable gets"
echo

# run_workload LABEL CMD...: puts then gets for each client count.
run_workload() {
    local label=$1 c ops ratio
    shift
    for c in $CLIENTS; do
        ops=$(ops_for "$c")
        for ratio in 0 1; do
            log "$label: $c clients, $ops ops, read ratio $ratio"
            "$@" --clients "$c" --ops "$ops" --value-size "$VALUE_SIZE" --keys "$KEYS" \
                --read-ratio "$ratio" --connections "$CONNECTIONS" --label "$label" \
                | tee "$WORK/$label-$c-$ratio.out" | grep '^RESULT' >>"$RESULTS" || {
                log "$label run failed; output:"
                cat "$WORK/$label-$c-$ratio.out" >&2
                exit 1
            }
        done
    done
}

# wait_ready LABEL CMD...: retries a one-op run until it succeeds (20 s).
wait_ready() {
    local label=$1 i
    shift
    for i in $(seq 1 40); do
        if "$@" --clients 1 --ops 1 --timeout-secs 2 --read-ratio 0 --key-prefix ready- 2>/dev/null \
            | grep -q '^RESULT.* errors=0 '; then
            return 0
        fi
        sleep 0.5
    done
    log "$label did not become ready"
    return 1
}

# --- etcd ------------------------------------------------------------------------
run_etcd() {
    local i cluster="" endpoints=""
    for i in 1 2 3; do
        cluster+="${cluster:+,}e$i=http://127.0.0.1:$((BASE + 3 + i))"
        endpoints+="${endpoints:+,}127.0.0.1:$((BASE + i))"
    done
    for i in 1 2 3; do
        etcd --name "e$i" --data-dir "$WORK/etcd-$i" \
            --listen-client-urls "http://127.0.0.1:$((BASE + i))" \
            --advertise-client-urls "http://127.0.0.1:$((BASE + i))" \
            --listen-peer-urls "http://127.0.0.1:$((BASE + 3 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((BASE + 3 + i))" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "kv-vs-etcd-$BASE" \
            >"$WORK/etcd-$i.log" 2>&1 &
        PIDS+=($!)
    done
    wait_ready etcd "$ETCD_BENCH" --cluster "$endpoints"
    run_workload etcd "$ETCD_BENCH" --cluster "$endpoints"
    stop_all
}

# --- shoal -------------------------------------------------------------------------
run_shoal() {
    local i peers="" cluster=""
    for i in 1 2 3; do
        peers+="${peers:+,}$i=127.0.0.1:$((BASE + i))"
        cluster+="${cluster:+,}127.0.0.1:$((BASE + i))"
    done
    for i in 1 2 3; do
        "$SHOAL" kv serve --id "$i" --listen "127.0.0.1:$((BASE + i))" --peers "$peers" \
            --data "$WORK/shoal-$i" >"$WORK/shoal-$i.log" 2>&1 &
        PIDS+=($!)
    done
    wait_ready shoal "$SHOAL" bench kv --cluster "$cluster"
    run_workload shoal "$SHOAL" bench kv --cluster "$cluster"
    stop_all
}

for s in $SYSTEMS; do
    case "$s" in
        etcd) run_etcd ;;
        shoal) run_shoal ;;
        *) log "unknown system $s"; exit 1 ;;
    esac
done

# --- the table -----------------------------------------------------------------------
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
printf '%-6s %7s %4s %9s %8s %8s %8s %7s\n' system clients op ops/s p50_ms p99_ms p999_ms errors
for op in put get; do
    for c in $CLIENTS; do
        for s in $SYSTEMS; do
            line=$(grep "^RESULT system=$s clients=$c op=$op " "$RESULTS" || true)
            [[ -n "$line" ]] || continue
            printf '%-6s %7s %4s %9s %8s %8s %8s %7s\n' "$s" "$c" "$op" \
                "$(field ops_per_s <<<"$line")" "$(field p50_ms <<<"$line")" \
                "$(field p99_ms <<<"$line")" "$(field p999_ms <<<"$line")" "$(field errors <<<"$line")"
        done
    done
done
if [[ "$SYSTEMS" == *etcd* && "$SYSTEMS" == *shoal* ]]; then
    echo
    printf '%7s %4s %14s %18s\n' clients op "shoal/etcd ops" "p99 shoal/etcd ms"
    for op in put get; do
        for c in $CLIENTS; do
            e=$(grep "^RESULT system=etcd clients=$c op=$op " "$RESULTS" || true)
            s=$(grep "^RESULT system=shoal clients=$c op=$op " "$RESULTS" || true)
            [[ -n "$e" && -n "$s" ]] || continue
            awk -v c="$c" -v op="$op" -v so="$(field ops_per_s <<<"$s")" -v eo="$(field ops_per_s <<<"$e")" \
                -v sp="$(field p99_ms <<<"$s")" -v ep="$(field p99_ms <<<"$e")" \
                'BEGIN { printf "%7s %4s %13.2fx %18s\n", c, op, so / eo, sp " / " ep }'
        done
    done
fi
