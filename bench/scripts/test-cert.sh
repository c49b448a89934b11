#!/usr/bin/env bash
# Makes a throwaway CA and a server certificate for 127.0.0.1 / localhost (P-256), for
# TLS and WebSocket-over-TLS benchmarks: every broker gets the same certificate.
#
#   bench/scripts/test-cert.sh DIR    # writes DIR/{ca.crt,server.crt,server.key,client.crt,client.key}
#   ringmq-bench compare --server-cert DIR/server.crt --server-key DIR/server.key \
#       pairs --transport tls --ca DIR/ca.crt --tls-version 1.3 --tls-suite TLS13_AES_128_GCM_SHA256
set -euo pipefail
d="${1:?usage: test-cert.sh DIR}"
mkdir -p "$d"
cd "$d"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -days 30 -subj "/CN=ringmq-bench test CA" -out ca.crt 2>/dev/null
key server.key
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
  -extfile server.ext -out server.crt 2>/dev/null
key client.key
openssl req -new -key client.key -subj "/CN=bench-client" -out client.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
  -extfile client.ext -out client.crt 2>/dev/null
rm -f server.csr client.csr server.ext client.ext ca.srl
echo "$d: ca.crt server.crt server.key client.crt client.key"
