#!/usr/bin/env bash
# A real Kafka-protocol broker (Tansu) on loopback for tests and local runs.
#
#   scripts/kafka.sh install          install tansu into ~/.cargo/bin unless it is there
#   scripts/kafka.sh start DIR [PORT] start a broker keeping its data in DIR (sqlite), wait
#                                     until it answers; its pid goes to DIR/tansu.pid
#                                     (TANSU_STORAGE=memory keeps the data in memory)
#   scripts/kafka.sh stop DIR         stop the broker started with DIR
#   scripts/kafka.sh free-port [FROM] print the first port from FROM (19092) nothing listens on
set -euo pipefail

TANSU_VERSION="0.6.0"
TANSU="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"

install() {
  if [[ -x "$TANSU" ]] && "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return
  fi
  echo "== installing tansu $TANSU_VERSION (a Kafka-compatible broker; about 8 minutes on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
}

wait_for_port() {
  local port=$1 pid=$2
  for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "tansu exited at start; its log:" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "tansu did not listen on port $port within 30 s" >&2
  return 1
}

start() {
  local dir=$1 port=${2:-9092}
  install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local storage="sqlite://tansu.db"
  if [[ "${TANSU_STORAGE:-sqlite}" == memory ]]; then
    storage="memory://tansu/"
  fi
  # Tansu reads the path of a sqlite URL as relative: run it from its data directory.
  (cd "$dir" && exec "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" \
    >"$dir/tansu.log" 2>&1) &
  local pid=$!
  echo "$pid" >"$dir/tansu.pid"
  if ! wait_for_port "$port" "$pid"; then
    tail -n 40 "$dir/tansu.log" >&2
    exit 1
  fi
  echo "tansu (pid $pid) listening on 127.0.0.1:$port, data in $dir"
}

stop() {
  local dir=$1
  [[ -f "$dir/tansu.pid" ]] || return 0
  local pid
  pid=$(cat "$dir/tansu.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/tansu.pid"
}

free_port() {
  local port=${1:-19092}
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  echo "$port"
}

case "${1:-}" in
  install) install ;;
  free-port) free_port "${2:-19092}" ;;
  start) start "${2:?data directory}" "${3:-9092}" ;;
  stop) stop "${2:?data directory}" ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
