#!/usr/bin/env bash
# Runs the reference campaign (seed 002: a free trial of B for buyers of A) and its survey
# sub-campaign over the example contacts and events, on a virtual clock. Extra arguments go
# to `canvass simulate` (for example --json, or --until 2026-03-10T00:00:00Z).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release --locked -p canvass -- simulate \
  --spec examples/reference/campaign.json \
  --spec examples/reference/survey.json \
  --contacts examples/reference/contacts.jsonl \
  --events examples/reference/events.jsonl \
  --start 2026-03-02T09:00:00Z \
  "$@"
