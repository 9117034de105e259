#!/usr/bin/env bash
# Renders the plain manifests from the Helm chart, so that the two cannot
# drift: deploy/kubernetes/extauthz.yaml (values: deploy/kubernetes/values.yaml)
# and deploy/prometheus/alerts.yaml (the chart's PrometheusRule).
# With --check, compares instead of writing, and fails on a difference.
set -euo pipefail
cd "$(dirname "$0")/.."
helm=${HELM:-bin/tools/helm}
check=${1:-}

kubernetes() {
  cat <<'HEADER'
# extauthz in Kubernetes, rendered from the Helm chart (deploy/helm/extauthz) with
# deploy/kubernetes/values.yaml by `make manifests`: edit those, not this file.
# Configuration, the IdP credentials as an existing Secret mounted where
# secrets.dir points (kubectl create secret generic partner-idp
# --from-literal=clientID=... --from-literal=clientSecret=...), a projected
# service account token for a policy without any secret, two replicas that
# survive a node drain, a Service for Envoy, Istio or Envoy Gateway to call, and
# a NetworkPolicy that lets only their proxies reach the gRPC port and only the
# monitoring namespace reach the admin port.
HEADER
  "$helm" template extauthz deploy/helm/extauthz -f deploy/kubernetes/values.yaml
}

alerts() {
  cat <<'HEADER'
# extauthz's alerts as a prometheus-operator PrometheusRule, rendered from the Helm
# chart by `make manifests` (the rules: deploy/helm/extauthz/files/alerts.yaml;
# their unit tests: promtool test rules deploy/prometheus/alerts_test.yaml).
# Without the operator, load files/alerts.yaml as a Prometheus rule file.
HEADER
  "$helm" template extauthz deploy/helm/extauthz --set prometheusRule.enabled=true --show-only templates/prometheusrule.yaml
}

status=0
for target in kubernetes:deploy/kubernetes/extauthz.yaml alerts:deploy/prometheus/alerts.yaml; do
  fn=${target%%:*} file=${target#*:}
  if [ "$check" = --check ]; then
    if ! diff -u "$file" <($fn) >&2; then
      echo "$file differs from the chart's rendering: run make manifests" >&2
      status=1
    fi
  else
    $fn > "$file"
    echo "wrote $file"
  fi
done
exit $status
