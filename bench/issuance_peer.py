#!/usr/bin/env python3
"""The same issuance loop in Python's `cryptography` (OpenSSL underneath), as a peer figure.

Pre-makes N P-256 CSRs (untimed), then for S seconds: load the DER CSR, verify its signature,
build a certificate with the same extensions as Fleetward's `device` profile, sign it with a
P-256 issuing key, encode it to DER. Prints one JSON line.
"""
import datetime, json, os, sys, time
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000

ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench"), x509.NameAttribute(NameOID.COMMON_NAME, "Bench Issuing CA")])
ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
policy = x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("1.2.840.113556.1.8000.2554.41859.15517.20887.16429.36653.1713437.4589622.1.1"), None)])

csrs = []
for i in range(count):
    device_id = f"BENCH-{i:08d}"
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])).sign(key, hashes.SHA256())
    csrs.append((device_id, csr.public_bytes(serialization.Encoding.DER)))

now = datetime.datetime.now(datetime.timezone.utc)
def issue(device_id, der):
    csr = x509.load_der_x509_csr(der)
    if not csr.is_signature_valid:
        raise ValueError("bad CSR signature")
    public_key = csr.public_key()
    builder = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench"), x509.NameAttribute(NameOID.COMMON_NAME, device_id), x509.NameAttribute(NameOID.SERIAL_NUMBER, device_id)]))
        .issuer_name(ca_name).public_key(public_key)
        .serial_number(int.from_bytes(os.urandom(19), "big") >> 1 | (1 << 150))
        .not_valid_before(now - datetime.timedelta(seconds=60)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(aki, critical=False)
        .add_extension(policy, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:fleetward:device:{device_id}")]), critical=False))
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

for device_id, der in csrs[:200]:
    issue(device_id, der)
issued, index, start = 0, 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    for _ in range(50):
        issue(*csrs[index])
        index = (index + 1) % len(csrs)
        issued += 1
elapsed = time.perf_counter() - start
print(json.dumps({"benchmark": "issuance", "peer": "python-cryptography", "issued": issued, "seconds": round(elapsed, 3), "per_second": int(issued / elapsed)}))
