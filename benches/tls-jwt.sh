#!/bin/bash
# What TLS and a JWT cost: the same workload against a plain server and a
# server with TLS and JWT authentication, alternating, ROUNDS times:
#   benches/tls-jwt.sh BIN [ROUNDS] [eventbus bench flags...]
# e.g. benches/tls-jwt.sh target/release/eventbus 3 --phases publish,consume --no-idempotency
# Makes (in a temp dir) a CA and a server certificate for 127.0.0.1 with
# openssl, an ES256 key with its JWKS and a token signed by it with Python's
# `cryptography`, and a config with [tls] and [auth.jwt]. Every request then
# carries the token (verified per call) over TLS 1.3. Prints one line per
# run: the label, then the bench's JSON line.
set -eu
BIN=$1; ROUNDS=${2:-3}; shift 2 || shift $#
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=bench CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
  -extfile san.ext -out server.pem 2>/dev/null

python3 - <<'PY'
import base64, json, time
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

key = ec.generate_private_key(ec.SECP256R1())
n = key.public_key().public_numbers()
jwks = {"keys": [{"kty": "EC", "kid": "bench-1", "alg": "ES256", "use": "sig", "crv": "P-256",
                  "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}]}
open("jwks.json", "w").write(json.dumps(jwks))
header = {"alg": "ES256", "typ": "JWT", "kid": "bench-1"}
now = int(time.time())
claims = {"sub": "bench", "iss": "https://bench.eventbus.test", "aud": "eventbus",
          "iat": now, "nbf": now, "exp": now + 3600, "eventbus_grants": ["admin:>"]}
signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
r, s = decode_dss_signature(der)
open("token", "w").write(signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big")))
PY

cat > secure.toml <<EOF
[tls]
cert-file = "$work/server.pem"
key-file = "$work/server.key"

[auth.jwt]
jwks-file = "$work/jwks.json"
issuer = "https://bench.eventbus.test"
audience = "eventbus"
EOF

run() { # label, extra serve flags..., then -- and extra bench env
  local label=$1; shift
  local d port
  d=$(mktemp -d "$work/data.XXXX"); port=$((40000 + RANDOM % 20000))
  "$BIN" serve --data-dir "$d" --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:0 "$@" \
    >"$d.log" 2>&1 &
  local pid=$!
  sleep 1.5
  if [ "$label" = tls-jwt ]; then
    EVENTBUS_TOKEN=$(cat token) "$BIN" --tls-ca ca.pem bench --server https://127.0.0.1:$port \
      --server-pid $pid "${BENCH_FLAGS[@]}" 2>/dev/null | sed "s/^/$label /"
  else
    "$BIN" bench --server http://127.0.0.1:$port --server-pid $pid "${BENCH_FLAGS[@]}" \
      2>/dev/null | sed "s/^/$label /"
  fi
  kill $pid; wait $pid 2>/dev/null || true
}

BENCH_FLAGS=("$@")
for _ in $(seq "$ROUNDS"); do
  run plain
  run tls-jwt --config secure.toml
done
