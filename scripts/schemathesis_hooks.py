"""schemathesis hooks for Fleetward's management API (loaded by schemathesis.toml).

OCSP requests are DER bytes: send generated bodies as they are, the way the built-in
application/octet-stream serializer does.
"""
import schemathesis

schemathesis.serializer.alias("application/ocsp-request", "application/octet-stream")
