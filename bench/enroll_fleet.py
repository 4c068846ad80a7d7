#!/usr/bin/env python3
"""Enrolls many allow-listed devices through Fleetward's EST server, for the MQTT benchmarks.

  enroll_fleet.py EST_URL ROOT.pem ISSUING.pem KEY.pem CSR.der OUTDIR ID=SECRET…   (or @FILE: one ID,SECRET per line)

Every device enrolls the same CSR (one key shared by the whole bench fleet: the identity comes
from the factory secret, and the allow-list pins no key) over one kept-alive TLS connection
(HTTP Basic with its secret, `/.well-known/est/simpleenroll`). Writes OUTDIR/<id>.pem (the
device certificate and the issuing CA) and links OUTDIR/<id>.key to KEY.pem. Stops at the first
refusal.
"""
import base64
import http.client
import os
import ssl
import sys
import urllib.parse

from cryptography.hazmat.primitives.serialization import Encoding, pkcs7


def main():
    est, root, issuing, key, csr, out = sys.argv[1:7]
    pairs = sys.argv[7:]
    if len(pairs) == 1 and pairs[0].startswith("@"):
        with open(pairs[0][1:]) as listing:
            pairs = [line.strip().replace(",", "=", 1) for line in listing if line.strip()]
    os.makedirs(out, exist_ok=True)
    url = urllib.parse.urlsplit(est)
    context = ssl.create_default_context(cafile=root)
    body = base64.b64encode(open(csr, "rb").read())
    chain_tail = open(issuing).read()
    connection = None
    for index, pair in enumerate(pairs):
        device, secret = pair.split("=", 1)
        if connection is None:
            connection = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=30)
        token = base64.b64encode(f"{device}:{secret}".encode()).decode()
        connection.request("POST", "/.well-known/est/simpleenroll", body=body,
                           headers={"Authorization": f"Basic {token}", "Content-Type": "application/pkcs10"})
        answer = connection.getresponse()
        data = answer.read()
        if answer.status != 200:
            sys.exit(f"enroll_fleet.py: {device} refused ({answer.status}): {data[:200]!r}")
        if answer.getheader("Connection", "").lower() == "close":
            connection.close()
            connection = None
        certificates = pkcs7.load_der_pkcs7_certificates(base64.b64decode(data))
        with open(os.path.join(out, device + ".pem"), "w") as pem:
            pem.write(certificates[0].public_bytes(Encoding.PEM).decode() + chain_tail)
        link = os.path.join(out, device + ".key")
        if not os.path.exists(link):
            os.symlink(os.path.abspath(key), link)
        if (index + 1) % 2000 == 0:
            print(f"  enrolled {index + 1} of {len(pairs)}", file=sys.stderr)


if __name__ == "__main__":
    main()
