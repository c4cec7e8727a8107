#!/usr/bin/env bash
# Checks the Prometheus configuration, the alert rules and the rules' unit tests with promtool.
#
#   deploy/prometheus/check.sh            (from anywhere)
#   PROMTOOL=/path/to/promtool deploy/prometheus/check.sh
#
# Exits non-zero when a check fails. Skips (exit 0) with a message when promtool is not
# installed: `apt-get install prometheus` (Debian) or
# `go install github.com/prometheus/prometheus/cmd/promtool@latest` provide it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# $PROMTOOL, else promtool on PATH, else where `go install` puts it.
promtool="${PROMTOOL:-}"
if [[ -z "$promtool" ]]; then
  if command -v promtool >/dev/null 2>&1; then
    promtool="$(command -v promtool)"
  else
    gobin="${GOBIN:-$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin}"
    [[ -x "$gobin/promtool" ]] && promtool="$gobin/promtool"
  fi
fi
if [[ -z "$promtool" || ! -x "$promtool" ]]; then
  echo "check.sh: SKIPPED: promtool is not installed (apt-get install prometheus, or go install github.com/prometheus/prometheus/cmd/promtool@latest)"
  exit 0
fi

echo "check.sh: using $promtool ($("$promtool" --version 2>&1 | head -n 1))"

# Run from the config's directory so relative rule_files resolve the same way Prometheus does.
cd "$here"
set -x
"$promtool" check config prometheus.yml
"$promtool" check rules alerts.yml
"$promtool" test rules alerts_test.yml
