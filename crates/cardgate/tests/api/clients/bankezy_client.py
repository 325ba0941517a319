#!/usr/bin/env python3
"""The BankEzy partner server and SDK for cardgate's tests, on jwcrypto (a JOSE library
cardgate did not write). One command per run, JSON in on stdin, JSON out on stdout:

  keypair                -> {"private": JWK, "public_b64": base64 of the public JWK's JSON}
  seal KEY               <- [plaintext, ...]  -> [compact JWE (dir, A256GCM), ...]
  unseal KEY             <- [compact JWE, ...] -> [plaintext or null when it does not open, ...]
  open                   <- {"private": JWK, "jwe": compact JWE}
                         -> {"header": protected header, "payload": plaintext}

KEY is the client's payload key, base64url.
"""
import json
import sys

from jwcrypto import jwe, jwk


def main():
    cmd = sys.argv[1]
    if cmd == "keypair":
        import base64
        k = jwk.JWK.generate(kty="EC", crv="P-256")
        public = json.loads(k.export_public())
        out = {"private": json.loads(k.export_private()),
               "public_b64": base64.b64encode(json.dumps(public).encode()).decode()}
    elif cmd in ("seal", "unseal"):
        key = jwk.JWK(kty="oct", k=sys.argv[2].rstrip("="))
        items = json.load(sys.stdin)
        out = []
        for item in items:
            if cmd == "seal":
                t = jwe.JWE(item.encode(), protected={"alg": "dir", "enc": "A256GCM"})
                t.add_recipient(key)
                out.append(t.serialize(compact=True))
            else:
                try:
                    t = jwe.JWE()
                    t.deserialize(item, key=key)
                    out.append(t.payload.decode())
                except Exception:
                    out.append(None)
    elif cmd == "open":
        req = json.load(sys.stdin)
        t = jwe.JWE()
        t.deserialize(req["jwe"], key=jwk.JWK(**req["private"]))
        out = {"header": json.loads(t.objects["protected"]), "payload": t.payload.decode()}
    else:
        sys.exit(f"unknown command {cmd}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
