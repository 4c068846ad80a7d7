#!/usr/bin/env python3
# Writes Sources/FleetwardServer/OpenAPIDocument.swift: the OpenAPI 3.1 document of the management
# API. Edit here, run `python3 scripts/openapi.py`, commit both. ManagementAPITests checks every
# route the server serves is in it, and (with openapi-spec-validator installed) that it is valid.
import json, os
S = lambda name: {"$ref": f"#/components/schemas/{name}"}
def resp(desc, schema=None, code="200"):
    r = {"description": desc}
    if schema: r["content"] = {"application/json": {"schema": schema}}
    return r
err = {"description": "An error", "content": {"application/json": {"schema": S("Error")}}}
def errors(*codes):
    names = {"400": "Malformed input", "401": "Missing or invalid bearer token", "403": "The token's role may not do this",
             "404": "No such resource (or not yours)", "409": "Conflicts with the current state", "413": "Body too large",
             "415": "Wrong content type", "429": "Too many failed attempts", "503": "The registry database is unavailable"}
    return {c: {"description": names[c], "content": {"application/json": {"schema": S("Error")}}} for c in codes}
def jbody(schema): return {"required": True, "content": {"application/json": {"schema": schema}}}
common = ("400", "401", "403", "404", "503")
device_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$"}}
limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}
def op(summary, roles, responses, body=None, params=None, tag=None):
    o = {"summary": summary, "description": f"Roles: {roles}.", "responses": responses}
    if tag: o["tags"] = [tag]
    if body: o["requestBody"] = body
    if params: o["parameters"] = params
    return o
paths = {}
paths["/api/v1/openapi.json"] = {"get": {"summary": "This document", "security": [], "tags": ["meta"],
    "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
paths["/api/v1/devices"] = {
  "get": op("List devices, filtered, with cursor pagination", "all; an owner sees only their own devices",
     {"200": resp("A page of devices", S("DevicePage")), **errors(*common)}, tag="devices",
     params=[{"name": "state", "in": "query", "schema": S("DeviceState")},
             {"name": "owner", "in": "query", "schema": {"type": "string"}},
             {"name": "model", "in": "query", "schema": {"type": "string"}},
             {"name": "after", "in": "query", "description": "The `next` cursor of the previous page", "schema": {"type": "string"}},
             limit]),
  "post": op("Register one device on the allow-list", "admin, manufacturer",
     {"201": resp("The device", S("Device")), **errors(*common, "409", "413", "415")}, body=jbody(S("DeviceRequest")), tag="devices")}
paths["/api/v1/devices/import"] = {"post": op("Import an allow-list CSV (all rows checked first; nothing written if any is malformed)", "admin, manufacturer",
     {"200": resp("What the import did", S("ImportSummary")), **errors(*common, "413", "415")}, tag="devices",
     body={"required": True, "content": {"text/csv": {"schema": {"type": "string", "description": "Header `id,secret,key_sha256,model,metadata`"}}}})}
paths["/api/v1/devices/{id}"] = {"get": op("Show a device", "all; an owner only their own", {"200": resp("The device", S("Device")), **errors(*common)}, params=[device_id], tag="devices")}
paths["/api/v1/devices/{id}/certificates"] = {"get": op("The certificates issued to a device, newest first, with their revocation", "all; an owner only their own",
     {"200": resp("The certificates", S("CertificateList")), **errors(*common)}, params=[device_id], tag="devices")}
paths["/api/v1/devices/{id}/telemetry"] = {"get": op("The device's newest telemetry messages (sent to the gateway's POST /v1/telemetry), newest first", "all; an owner only their own",
     {"200": resp("The messages", S("TelemetryList")), **errors(*common)}, params=[device_id, limit], tag="devices")}
roles = {"suspend": "admin, operator", "resume": "admin, operator", "revoke": "admin, operator", "approve": "admin, operator",
         "report-stolen": "admin, owner (own devices)", "recover": "admin, owner (own devices)"}
summaries = {"suspend": "Suspend an active device", "resume": "Resume a suspended device",
  "revoke": "Decommission a device for good; its certificates are revoked (cessationOfOperation)",
  "approve": "Approve a device an enrollment group left pending",
  "report-stolen": "Report a device stolen; its certificates are revoked (keyCompromise) and enrollment blocked",
  "recover": "Recover a stolen device"}
for ev in ["suspend", "resume", "revoke", "approve", "report-stolen", "recover"]:
    paths[f"/api/v1/devices/{{id}}/{ev}"] = {"post": op(summaries[ev], roles[ev], {"200": resp("The device after", S("Device")), **errors(*common, "409")}, params=[device_id], tag="lifecycle")}
paths["/api/v1/devices/{id}/transfer"] = {"post": op("Hand a device to another registered owner (the current owner's release)", "admin, owner (own devices)",
     {"200": resp("The device after", S("Device")), **errors(*common, "409")}, body=jbody(S("TransferRequest")), params=[device_id], tag="lifecycle")}
paths["/api/v1/devices/{id}/claim-code"] = {"post": op("Set a new claim code for an unclaimed device; the code is shown once", "admin, manufacturer",
     {"201": resp("The claim code", S("ClaimCode")), **errors(*common, "409")}, params=[device_id], tag="claims")}
paths["/api/v1/devices/{id}/enrollment-tokens"] = {"post": op("Make a one-time enrollment token for a device; shown once", "admin, operator, owner (own devices)",
     {"201": resp("The token", S("EnrollmentToken")), **errors(*common, "409")}, body={"required": False, "content": {"application/json": {"schema": S("EnrollmentTokenRequest")}}}, params=[device_id], tag="claims")}
paths["/api/v1/certificates/{serial}/revoke"] = {"post": op("Revoke one certificate (operational or birth); the device keeps its state", "admin, operator",
     {"200": resp("The certificate after", S("Certificate")), **errors(*common, "409")},
     body={"required": False, "content": {"application/json": {"schema": S("RevokeRequest")}}},
     params=[{"name": "serial", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{2,42}$"}}], tag="certificates")}
paths["/api/v1/claims"] = {"post": op("Claim a device with the code on its label; binds it to the token's owner", "owner",
     {"200": resp("The device after", S("Device")), **errors(*common, "409", "429")}, body=jbody(S("ClaimRequest")), tag="claims")}
owner_id = {"name": "owner", "in": "path", "required": True, "schema": {"type": "string"}}
paths["/api/v1/owners"] = {
  "get": op("List owners", "admin, operator", {"200": resp("A page of owners", S("OwnerPage")), **errors(*common)}, params=[{"name": "after", "in": "query", "schema": {"type": "string"}}, limit], tag="owners"),
  "post": op("Register an owner", "admin, operator", {"201": resp("The owner", S("Owner")), **errors(*common, "409")}, body=jbody(S("OwnerRequest")), tag="owners")}
paths["/api/v1/owners/{owner}"] = {"get": op("Show an owner", "admin, operator", {"200": resp("The owner", S("Owner")), **errors(*common)}, params=[owner_id], tag="owners")}
group_id = {"name": "group", "in": "path", "required": True, "schema": {"type": "string"}}
paths["/api/v1/groups"] = {
  "get": op("List enrollment groups", "admin, manufacturer, operator", {"200": resp("The groups", S("GroupList")), **errors(*common)}, tag="groups"),
  "post": op("Register a manufacturer CA as an enrollment group", "admin, operator", {"201": resp("The group", S("Group")), **errors(*common, "409")}, body=jbody(S("GroupRequest")), tag="groups")}
paths["/api/v1/groups/{group}"] = {
  "get": op("Show an enrollment group", "admin, manufacturer, operator", {"200": resp("The group", S("Group")), **errors(*common)}, params=[group_id], tag="groups"),
  "delete": op("Remove an enrollment group (devices it registered stay)", "admin, operator", {"204": {"description": "Removed"}, **errors(*common)}, params=[group_id], tag="groups")}
token_id = {"name": "token", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}
paths["/api/v1/tokens"] = {
  "get": op("List API tokens (never their secrets)", "admin", {"200": resp("The tokens", S("TokenList")), **errors(*common)}, tag="tokens"),
  "post": op("Create an API token; the token is shown once", "admin", {"201": resp("The token", S("Token")), **errors(*common)}, body=jbody(S("TokenRequest")), tag="tokens")}
paths["/api/v1/tokens/{token}"] = {"delete": op("Revoke an API token", "admin", {"204": {"description": "Revoked"}, **errors(*common, "409")}, params=[token_id], tag="tokens")}
paths["/api/v1/audit"] = {"get": op("Read the hash-chained audit log", "admin, operator", {"200": resp("A page of entries", S("AuditPage")), **errors(*common)},
     params=[{"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}}, limit], tag="audit")}

ts = {"type": "string", "format": "date-time"}
nstr = {"type": ["string", "null"]}
schemas = {
 "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["status", "code", "message"],
    "properties": {"status": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"}}}}},
 "DeviceState": {"type": "string", "enum": ["allowed", "pending", "active", "suspended", "revoked", "stolen"]},
 "Device": {"type": "object", "required": ["id", "state", "model", "metadata", "proof", "createdAt", "updatedAt"], "properties": {
    "id": {"type": "string"}, "state": S("DeviceState"), "owner": {"type": "string"}, "model": {"type": "string"},
    "metadata": {"type": "object", "additionalProperties": {"type": "string"}}, "proof": {"type": "string", "enum": ["secret", "public-key", "none"]},
    "keySHA256": {"type": "string"}, "createdAt": ts, "updatedAt": ts}},
 "DevicePage": {"type": "object", "required": ["devices", "next"], "properties": {"devices": {"type": "array", "items": S("Device")}, "next": nstr}},
 "DeviceRequest": {"type": "object", "additionalProperties": False, "required": ["id", "model"], "properties": {
    "id": {"type": "string"}, "model": {"type": "string"}, "secret": {"type": "string", "minLength": 16, "description": "The factory secret (stored as an HMAC)"},
    "keySHA256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}, "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}},
 "ImportSummary": {"type": "object", "properties": {"file": {"type": "string"}, "rows": {"type": "integer"}, "inserted": {"type": "integer"},
    "duplicates": {"type": "integer"}, "rejected": {"type": "integer"}, "errors": {"type": "array", "items": {"type": "string"}},
    "seconds": {"type": "number"}, "rowsPerSecond": {"type": "integer"}}},
 "TransferRequest": {"type": "object", "additionalProperties": False, "required": ["to"], "properties": {"to": {"type": "string"}}},
 "ClaimRequest": {"type": "object", "additionalProperties": False, "required": ["device", "claimCode"], "properties": {"device": {"type": "string"}, "claimCode": {"type": "string"}}},
 "ClaimCode": {"type": "object", "required": ["device", "claimCode"], "properties": {"device": {"type": "string"}, "claimCode": {"type": "string"}}},
 "EnrollmentTokenRequest": {"type": "object", "additionalProperties": False, "properties": {"ttlSeconds": {"type": "integer", "minimum": 60, "maximum": 2592000}}},
 "EnrollmentToken": {"type": "object", "required": ["device", "token", "expiresAt"], "properties": {"device": {"type": "string"}, "token": {"type": "string"}, "expiresAt": ts}},
 "Owner": {"type": "object", "required": ["id", "createdAt"], "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "createdAt": ts}},
 "OwnerRequest": {"type": "object", "additionalProperties": False, "required": ["id"], "properties": {"id": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$"}, "name": {"type": "string"}}},
 "OwnerPage": {"type": "object", "required": ["owners", "next"], "properties": {"owners": {"type": "array", "items": S("Owner")}, "next": nstr}},
 "Group": {"type": "object", "required": ["id", "name", "caSHA256", "autoApprove", "createdAt"], "properties": {"id": {"type": "string"}, "name": {"type": "string"},
    "caSHA256": {"type": "string"}, "autoApprove": {"type": "boolean"}, "createdAt": ts}},
 "GroupRequest": {"type": "object", "additionalProperties": False, "required": ["name", "caCertificate"], "properties": {"name": {"type": "string"},
    "caCertificate": {"type": "string", "description": "The manufacturer CA certificate, PEM"}, "autoApprove": {"type": "boolean", "default": False}}},
 "GroupList": {"type": "object", "required": ["groups"], "properties": {"groups": {"type": "array", "items": S("Group")}}},
 "Token": {"type": "object", "required": ["id", "role", "createdAt"], "properties": {"id": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "manufacturer", "operator", "owner"]},
    "owner": {"type": "string"}, "createdAt": ts, "expiresAt": ts, "token": {"type": "string", "description": "Only when created"}}},
 "TokenRequest": {"type": "object", "additionalProperties": False, "required": ["role"], "properties": {"role": {"type": "string", "enum": ["admin", "manufacturer", "operator", "owner"]}, "owner": {"type": "string"}}},
 "TokenList": {"type": "object", "required": ["tokens"], "properties": {"tokens": {"type": "array", "items": S("Token")}}},
 "Certificate": {"type": "object", "required": ["serial", "profile", "notBefore", "notAfter", "sha256", "issuedAt", "revoked"], "properties": {
    "serial": {"type": "string"}, "device": {"type": "string"}, "profile": {"type": "string", "enum": ["device", "birth", "server", "ocsp"]},
    "owner": {"type": "string"}, "notBefore": ts, "notAfter": ts, "sha256": {"type": "string"}, "issuedAt": ts, "revoked": {"type": "boolean"},
    "revocationReason": {"type": "integer", "description": "RFC 5280 CRLReason"}, "revokedAt": ts}},
 "RevokeRequest": {"type": "object", "additionalProperties": False, "properties": {"reason": {"type": "string", "default": "keyCompromise",
    "enum": ["unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded", "cessationOfOperation", "privilegeWithdrawn", "aACompromise"]}}},
 "CertificateList": {"type": "object", "required": ["certificates"], "properties": {"certificates": {"type": "array", "items": S("Certificate")}}},
 "TelemetryList": {"type": "object", "required": ["telemetry"], "properties": {"telemetry": {"type": "array", "items": {"type": "object",
     "required": ["sequence", "device", "receivedAt", "body"], "properties": {"sequence": {"type": "integer"}, "device": {"type": "string"},
     "receivedAt": {"type": "string", "format": "date-time"}, "body": {"type": "string", "description": "The JSON object the device sent"}}}}}},
 "AuditEntry": {"type": "object", "required": ["sequence", "time", "actor", "action", "subject", "hash"], "properties": {"sequence": {"type": "integer"}, "time": ts,
    "actor": {"type": "string"}, "action": {"type": "string"}, "subject": {"type": "string"}, "before": {"type": "string"}, "after": {"type": "string"}, "hash": {"type": "string"}}},
 "AuditPage": {"type": "object", "required": ["entries", "next"], "properties": {"entries": {"type": "array", "items": S("AuditEntry")}, "next": {"type": ["integer", "null"]}}},
}
doc = {"openapi": "3.1.0",
 "info": {"title": "Fleetward management API", "version": "1.0.0",
   "description": "Devices, lifecycle, owners, claim codes, enrollment tokens, enrollment groups, API tokens and the audit log of a Fleetward registry. Every route but this document needs `Authorization: Bearer fwt_…` (see `fleetward token create`). Errors are JSON: {\"error\": {\"status\", \"code\", \"message\"}}."},
 "servers": [{"url": "http://127.0.0.1:8080"}],
 "security": [{"bearer": []}],
 "paths": paths,
 "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": schemas}}
text = json.dumps(doc, indent=2, sort_keys=False)
assert '"""' not in text and "\\(" not in text
body = "\n".join("        " + line for line in text.split("\n"))
swift = "/// The OpenAPI 3.1 description of the management API, served at `/api/v1/openapi.json`.\n///\n/// Generated by `scripts/openapi.py`; a test checks that every route the router serves is in it.\nenum OpenAPIDocument {\n    static let json = #\"\"\"\n" + body + "\n        \"\"\"#\n}\n"
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Sources", "FleetwardServer", "OpenAPIDocument.swift"), "w").write(swift)
