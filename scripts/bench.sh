#!/usr/bin/env bash
# Runs every benchmark in release mode and prints the results as Markdown (as pasted into
# docs/benchmarks.md). Takes about 30 minutes on a 2-core machine, most of it filling a
# 10-million-event log for the restart measurement; pass --quick for a 1-million one. The
# Kafka benchmark installs (once) and starts a broker of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
restart_events=10000000
[ "${1:-}" = "--quick" ] && restart_events=1000000
cargo build --quiet --release --locked -p canvass-bench
bench=target/release/canvass-bench
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), $(date -u +%Y-%m-%d)"
echo
$bench throughput --events 200000 --runs 3
# Partition scaling: the same partitions, one worker and two.
$bench throughput --events 200000 --runs 3 --partitions 2 --workers 1 --workers 2
$bench throughput --events 200000 --runs 3 --partitions 4 --workers 1 --workers 2
$bench latency --rate 10000 --seconds 40
$bench latency --rate 20000 --seconds 40
$bench latency --rate 20000 --seconds 40 --partitions 2 --workers 2
for contacts in 100000 1000000 2000000; do
  $bench memory --contacts "$contacts"
done
for contacts in 1000000 4000000; do
  $bench memory --contacts "$contacts" --partitions 8
done
$bench simulate --events 1000000 --runs 3
$bench simulate --events 1000000 --runs 3 --partitions 4 --workers 2
# The same with small bounds: what is left growing with the contacts is sled's own index.
for contacts in 1000000 2000000; do
  $bench memory --contacts "$contacts" --cache-mib 8 --checkpoint-mib 4
done
$bench restart --events "$restart_events"
$bench grpc --events 100000 --actions 20000 --runs 3

# Kafka end to end beside a plain consumer, on a broker of its own (in-memory storage).
broker_dir=$(mktemp -d)
trap 'scripts/kafka.sh stop "$broker_dir"; rm -rf "$broker_dir"' EXIT
port=$(scripts/kafka.sh free-port 19192)
TANSU_STORAGE=memory scripts/kafka.sh start "$broker_dir" "$port" >&2
$bench kafka --broker "127.0.0.1:$port" --events 50000 --runs 3 2> >(grep -v CONFWARN >&2)
# Scale-out: hand-off of a partition of 100k and 1M contacts, records/s with 1, 2, 3 engines.
$bench scale --broker "127.0.0.1:$port" --contacts 100000 --events 300000 --runs 3 2> >(grep -v CONFWARN >&2)
$bench scale --broker "127.0.0.1:$port" --contacts 1000000 --events 300000 --engines 3 --runs 1 2> >(grep -v CONFWARN >&2)
