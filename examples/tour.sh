#!/usr/bin/env bash
# A 60-second tour of the Safety Kernel on the example production policy (`make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
POLICY=examples/policies/production.yaml

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@" || true; }

echo "Cordum Safety Kernel tour - policy: $POLICY"
step cordum policy check "$POLICY"
step cordum policy simulate "$POLICY" --topic job.k8s.delete-namespace --risk-tag prod --risk-tag destructive
step cordum policy simulate "$POLICY" --topic job.db.migrate --label env=prod --risk-tag prod --risk-tag write
step cordum policy simulate "$POLICY" --topic job.slack.post-message --label channel=deploys \
  --context '{"text": "token ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}' --json
step cordum policy explain "$POLICY" --topic job.k8s.scale --label replicas=80 --label env=staging
step cordum policy test "$POLICY"
step cordum policy lint "$POLICY"

broken=$(mktemp --suffix=.yaml)
trap 'rm -f "$broken"' EXIT
cat > "$broken" <<'YAML'
version: "1"
rules:
  - id: deny-prod-deletes
    match: {topics: ["job.k8s.delete-*"], risk_tag: [prod]}
    decision: deny
  - id: allow-everything
    decision: alow
YAML
echo
echo "A policy with two typos is refused, with the line, the rule and a suggestion:"
step cordum policy check "$broken"
step cordum policy hash "$POLICY"
