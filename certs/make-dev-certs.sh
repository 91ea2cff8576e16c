#!/usr/bin/env bash
# Makes a CA and a serving certificate for divert-webhook without cert-manager, and prints the
# caBundle to paste into deploy/webhook.yaml's webhook configurations.
#
#   certs/make-dev-certs.sh [OUT_DIR] [SERVICE] [NAMESPACE]
#
# Rotation without cert-manager: run again with the same CA (kept in OUT_DIR/ca.key), then
#   kubectl -n NAMESPACE create secret tls divert-webhook-tls --cert OUT/tls.crt --key OUT/tls.key \
#     --dry-run=client -o yaml | kubectl apply -f -
# The kubelet updates the mounted files (within about a minute) and divert-webhook reloads them
# without a restart.
set -euo pipefail
out=${1:-certs/out}
svc=${2:-divert-webhook}
ns=${3:-divert-system}
mkdir -p "$out"
if [ ! -f "$out/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=divert-webhook CA" -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$svc.$ns.svc" \
  -keyout "$out/tls.key.new" -out "$out/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
  "$svc" "$ns" "$svc" "$ns" > "$out/ext.cnf"
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -days 90 -extfile "$out/ext.cnf" -out "$out/tls.crt.new" 2>/dev/null
# Replace both files by rename so a reader never sees a half-written pair.
mv "$out/tls.key.new" "$out/tls.key"
mv "$out/tls.crt.new" "$out/tls.crt"
rm -f "$out/tls.csr" "$out/ext.cnf"
echo "caBundle: $(base64 -w0 < "$out/ca.crt")"
