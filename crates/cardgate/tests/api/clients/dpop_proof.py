#!/usr/bin/env python3
"""DPoP proofs (RFC 9449) built by a real JOSE library, jwcrypto, for cardgate's tests.

Reads one JSON request per line on stdin and answers one JSON line on stdout:
  {"key": "k1", "alg": "ES256", "htm": "POST", "htu": "http://...", "iat": 1700000000,
   "jti": "...", "token": "<access token: adds ath>", "nonce": "...",
   "header": {...overrides}, "claims": {...overrides}, "drop": ["jti"],
   "private_jwk": false, "sign_with": "other-key-name"}
  -> {"proof": "<compact JWS>", "jkt": "<RFC 7638 thumbprint of the key>"}
Keys are generated on first use of a name and kept for the life of the process.
Run as `dpop_proof.py METHOD URL [ACCESS_TOKEN]` it prints one ES256 proof (with `ath` when
a token is given) by the key kept in $DPOP_KEY_FILE (default ./dpop-demo-key.json, created on
first use): the demo's example.
"""
import os
import base64
import hashlib
import json
import sys
import time
import uuid

from jwcrypto import jwk, jws
from jwcrypto.common import json_encode

KEYS = {}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def key_for(name, alg):
    if name not in KEYS:
        if alg == "ES256":
            KEYS[name] = jwk.JWK.generate(kty="EC", crv="P-256")
        elif alg == "ES384":
            KEYS[name] = jwk.JWK.generate(kty="EC", crv="P-384")
        elif alg == "EdDSA":
            KEYS[name] = jwk.JWK.generate(kty="OKP", crv="Ed25519")
        elif alg in ("RS256", "PS256"):
            KEYS[name] = jwk.JWK.generate(kty="RSA", size=2048)
        elif alg == "HS256":
            KEYS[name] = jwk.JWK.generate(kty="oct", size=256)
        else:
            raise ValueError("unknown alg " + alg)
    return KEYS[name]


def proof(req):
    alg = req.get("alg", "ES256")
    key = key_for(req.get("key", "default"), "ES256" if alg in ("none", "HS256") else alg)
    jwk_json = json.loads(key.export_private() if req.get("private_jwk") else key.export_public())
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": jwk_json}
    claims = {
        "jti": req.get("jti") or str(uuid.uuid4()),
        "htm": req["htm"],
        "htu": req["htu"],
        "iat": req.get("iat") or int(time.time()),
    }
    if req.get("token"):
        claims["ath"] = b64(hashlib.sha256(req["token"].encode()).digest())
    if req.get("nonce"):
        claims["nonce"] = req["nonce"]
    header.update(req.get("header", {}))
    claims.update(req.get("claims", {}))
    for name in req.get("drop", []):
        header.pop(name, None)
        claims.pop(name, None)
    if alg == "none":
        compact = b64(json_encode(header).encode()) + "." + b64(json_encode(claims).encode()) + "."
    else:
        signer = key
        if alg == "HS256":
            signer = key_for("hmac", "HS256")
        elif req.get("sign_with"):
            signer = key_for(req["sign_with"], alg)
        # Signed with `alg` (the key's algorithm), whatever the header claims: a header may
        # lie about its alg on purpose.
        core = jws.JWSCore(alg, signer, json_encode(header), json_encode(claims), algs=[alg])
        signed = core.sign()
        payload = signed["payload"]
        if isinstance(payload, bytes):
            payload = payload.decode()
        compact = signed["protected"] + "." + payload + "." + signed["signature"]
    return {"proof": compact, "jkt": key.thumbprint()}


def main():
    if len(sys.argv) in (3, 4):
        path = os.environ.get("DPOP_KEY_FILE", "dpop-demo-key.json")
        if os.path.exists(path):
            with open(path) as f:
                KEYS["demo"] = jwk.JWK.from_json(f.read())
        else:
            KEYS["demo"] = jwk.JWK.generate(kty="EC", crv="P-256")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(KEYS["demo"].export_private())
        req = {"key": "demo", "htm": sys.argv[1], "htu": sys.argv[2]}
        if len(sys.argv) == 4:
            req["token"] = sys.argv[3]
        print(proof(req)["proof"])
        return
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            out = proof(json.loads(line))
        except Exception as e:  # answered, so the test sees why
            out = {"error": repr(e)}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
