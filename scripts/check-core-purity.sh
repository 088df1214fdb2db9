#!/usr/bin/env bash
# Fails if the pure core's dependency tree reaches an async runtime, storage, a broker client
# or an RPC stack: the core takes time as an argument and returns effects as data.
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden="${CANVASS_FORBIDDEN:-^(tokio|tokio-[a-z-]+|async-std|mio|sled|rdkafka|rdkafka-sys|tonic|hyper|reqwest|canvass-engine|canvass-store|canvass-kafka|canvass-server) }"
tree=$(cargo tree --locked -p canvass-core -e normal --prefix none --format '{p}')
if offenders=$(grep -E "$forbidden" <<<"$tree" | sort -u) && [ -n "$offenders" ]; then
  echo "canvass-core must stay pure, but its dependency tree holds:" >&2
  echo "$offenders" >&2
  exit 1
fi
echo "canvass-core: $(wc -l <<<"$tree") crates in its tree, none of them I/O, runtime or RPC"
