#!/usr/bin/env bash
# Makes the secrets docker/compose.yaml and deploy/k8s use, with openssl:
#   worker_secret    the secret workers present (trm-coordinator --worker-secret-file)
#   tokens.txt       user tokens, 'TOKEN ROLE NAME' lines (--auth-tokens): one admin, one read
#   admin_token      the admin token alone (TRM_TOKEN_FILE for trmctl)
#   read_token       the read-only token alone
#   ca.crt, ca.key   a private CA (TRM_TLS_CA for trmctl and the workers)
#   coordinator.crt, coordinator.key   the coordinator's TLS certificate (--tls-cert/--tls-key),
#                    valid for the compose service name (coordinator), the Kubernetes Service
#                    (trm-coordinator[.trm[.svc[.cluster.local]]]), localhost and 127.0.0.1,
#                    plus any extra DNS names given as arguments.
# Usage: docker/make-secrets.sh [DIR (default docker/secrets)] [EXTRA_DNS_NAME ...]
# Existing files are kept (delete DIR to start over). The directory is private (0700); the files
# in it are 0644 so that the containers' unprivileged user can read the bind-mounted copies.
set -euo pipefail
DIR="${1:-$(cd "$(dirname "$0")" && pwd)/secrets}"
shift || true
mkdir -p "$DIR"
chmod 700 "$DIR"
cd "$DIR"
umask 022

rand() { openssl rand -hex 24; }
[ -s worker_secret ] || rand >worker_secret
if [ ! -s tokens.txt ]; then
  rand >admin_token
  rand >read_token
  { echo "# TOKEN ROLE NAME (docs/control-plane.md#security)"
    echo "$(cat admin_token) admin admin"
    echo "$(cat read_token) read dashboard"; } >tokens.txt
fi

if [ ! -s coordinator.crt ]; then
  SAN="DNS:coordinator,DNS:trm-coordinator,DNS:trm-coordinator.trm,DNS:trm-coordinator.trm.svc"
  SAN="$SAN,DNS:trm-coordinator.trm.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
  for name in "$@"; do SAN="$SAN,DNS:$name"; done
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=trm-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=coordinator" -keyout coordinator.key -out coordinator.csr 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "$SAN" >coordinator.ext
  openssl x509 -req -in coordinator.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile coordinator.ext -out coordinator.crt 2>/dev/null
  rm -f coordinator.csr coordinator.ext ca.srl
fi
chmod 644 worker_secret tokens.txt admin_token read_token ca.crt coordinator.crt coordinator.key
chmod 600 ca.key
echo "secrets in $DIR: $(ls | tr '\n' ' ')"
