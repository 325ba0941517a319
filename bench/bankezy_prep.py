#!/usr/bin/env python3
"""Prepares the BankEzy scenarios of bench/run.sh with jwcrypto (as a partner server would):

  bankezy_prep.py bodies OUT N PAYLOAD_KEY SDK_API_KEY ACCOUNT PREFIX
      N sealed token requests (compact JWE, dir/A256GCM), one per line, referenceIds PREFIX-0…
  bankezy_prep.py token BASE API_KEY SDK_API_KEY PAYLOAD_KEY ACCOUNT
      one token call; prints the SDK token
"""
import base64
import json
import sys
import urllib.request
import uuid

from jwcrypto import jwe, jwk


def sdk_public_key():
    k = jwk.JWK.generate(kty="EC", crv="P-256")
    return base64.b64encode(k.export_public().encode()).decode()


def seal(key, payload):
    t = jwe.JWE(json.dumps(payload).encode(), protected={"alg": "dir", "enc": "A256GCM"})
    t.add_recipient(key)
    return t.serialize(compact=True)


def request(reference, public, sdk_api_key, account):
    return {"referenceId": reference, "sdkPublicKey": public, "sdkApiKey": sdk_api_key,
            "accountNumber": account, "firstName": "Bench", "lastName": "Holder",
            "email": "bench@example.com", "isdCode": "44", "mobileNumber": "7700900000",
            "dob": "19900101"}


def main():
    cmd = sys.argv[1]
    if cmd == "bodies":
        out, n, payload, sdk_api_key, account, prefix = sys.argv[2:8]
        key = jwk.JWK(kty="oct", k=payload.rstrip("="))
        public = sdk_public_key()
        with open(out, "w") as f:
            for i in range(int(n)):
                f.write(seal(key, request(f"{prefix}-{i}", public, sdk_api_key, account)) + "\n")
    elif cmd == "token":
        base, api_key, sdk_api_key, payload, account = sys.argv[2:7]
        key = jwk.JWK(kty="oct", k=payload.rstrip("="))
        body = seal(key, request(str(uuid.uuid4()), sdk_public_key(), sdk_api_key, account))
        req = urllib.request.Request(
            base + "/bankezy/token-service/client/server/new/v2/token", data=body.encode(),
            method="POST", headers={"X-API-KEY": api_key, "Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as res:
            t = jwe.JWE()
            t.deserialize(res.read().decode(), key=key)
            print(json.loads(t.payload)["token"])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
