#!/usr/bin/env python3
"""A working BankEzy client against cardgate, written with jwcrypto (a JOSE library cardgate
did not write): the partner server's encrypted token call, then the SDK listing its
account's cards and revealing one, whose data only the SDK's own private key opens.

    python3 scripts/bankezy_demo.py --base http://127.0.0.1:8080 --api-key KEY \\
        --sdk-api-key SDK_KEY --payload-key BASE64URL --account-number 1234567890

Needs `pip install jwcrypto`. Prints each step; exits non-zero if one fails.
"""
import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
import uuid

from jwcrypto import jwe, jwk


def call(method, url, headers, body=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def seal(key, payload):
    t = jwe.JWE(json.dumps(payload).encode(), protected={"alg": "dir", "enc": "A256GCM"})
    t.add_recipient(key)
    return t.serialize(compact=True)


def unseal(key, text):
    t = jwe.JWE()
    t.deserialize(text, key=key)
    return json.loads(t.payload)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--sdk-api-key", required=True)
    p.add_argument("--payload-key", required=True, help="the client's payload_key (base64url)")
    p.add_argument("--account-number", required=True)
    a = p.parse_args()
    payload_key = jwk.JWK(kty="oct", k=a.payload_key.rstrip("="))

    # The SDK makes its key pair and hands the partner app its public half.
    sdk_key = jwk.JWK.generate(kty="EC", crv="P-256")
    public = json.loads(sdk_key.export_public())
    sdk_public_key = base64.b64encode(json.dumps(public).encode()).decode()

    # 1. The partner server asks for a token: a text/plain compact JWE under its payload key.
    request = {
        "referenceId": str(uuid.uuid4()),
        "sdkPublicKey": sdk_public_key,
        "sdkApiKey": a.sdk_api_key,
        "accountNumber": a.account_number,
        "firstName": "Ada",
        "lastName": "Lovelace",
        "dob": 19880515,
    }
    status, body = call(
        "POST",
        a.base + "/bankezy/token-service/client/server/new/v2/token",
        {"X-API-KEY": a.api_key, "Content-Type": "text/plain"},
        seal(payload_key, request).encode(),
    )
    if status != 200:
        sys.exit(f"token call failed: HTTP {status} {body}")
    answer = unseal(payload_key, body)
    print("token answer (decrypted):", json.dumps({**answer, "token": answer["token"][:12] + "…"}))

    # 2. The SDK lists its account's cards (masked).
    sdk_headers = {"X-API-KEY": a.sdk_api_key, "X-API-TOKEN": answer["token"]}
    status, body = call("GET", a.base + "/bankezy/token-service/sdk/v1/cards", sdk_headers)
    if status != 200:
        sys.exit(f"card list failed: HTTP {status} {body}")
    cards = json.loads(body)["cards"]
    print("cards:", json.dumps(cards))
    active = [c for c in cards if c["status"] == "ACTIVE"]
    if not active:
        sys.exit("no active card to reveal")

    # 3. The SDK reveals one card: a JWE (ECDH-ES with serverPubKey) only its key opens.
    url = f"{a.base}/bankezy/token-service/sdk/v1/cards/{active[0]['cardId']}/details"
    status, body = call("GET", url, sdk_headers)
    if status != 200:
        sys.exit(f"reveal failed: HTTP {status} {body}")
    t = jwe.JWE()
    t.deserialize(body, key=sdk_key)
    header = json.loads(t.objects["protected"])
    server = json.loads(base64.b64decode(answer["serverPubKey"]))
    if (header["epk"]["x"], header["epk"]["y"]) != (server["x"], server["y"]):
        sys.exit("the reveal was not made with serverPubKey")
    print("revealed (decrypted by the SDK):", t.payload.decode())


if __name__ == "__main__":
    main()
