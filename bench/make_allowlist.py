#!/usr/bin/env python3
"""Writes an allow-list CSV for the import benchmark: N rows, 90% with a random 32-character
factory secret, 10% with a key_sha256 fingerprint, every tenth row with metadata.

Usage: bench/make_allowlist.py N OUT.csv [ID-PREFIX]
"""
import base64, hashlib, os, sys

count, out = int(sys.argv[1]), sys.argv[2]
prefix = sys.argv[3] if len(sys.argv) > 3 else "DEV"
random = os.urandom(24 * count)
with open(out, "w") as f:
    f.write("id,secret,key_sha256,model,metadata\n")
    for i in range(count):
        chunk = random[24 * i: 24 * i + 24]
        if i % 10 == 9:
            f.write(f"{prefix}-{i:08d},,{hashlib.sha256(chunk).hexdigest()},sensor-v2,batch=b{i // 100000};site=plant-1\n")
        else:
            f.write(f"{prefix}-{i:08d},{base64.urlsafe_b64encode(chunk).decode()},,sensor-v1,\n")
