#!/usr/bin/env python3
"""Checks answers the management API gave against its OpenAPI document (JSON Schema 2020-12).

Usage: check_answers.py openapi.json answers.json
answers.json: [{"method": "GET", "route": "/api/v1/devices", "status": 200, "body": {...}}, ...]
Each answer's status must be documented for its route and method, and its JSON body must match
the schema documented for that status. Prints every mismatch; exits 1 when there is any.
"""
import json
import sys

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

document = json.load(open(sys.argv[1]))
answers = json.load(open(sys.argv[2]))
registry = Registry().with_resource("urn:openapi", Resource.from_contents(document, default_specification=DRAFT202012))


def pointer(*parts):
    return "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in parts)


problems = []
for answer in answers:
    where = f"{answer['method']} {answer['route']} → {answer['status']}"
    operation = document["paths"].get(answer["route"], {}).get(answer["method"].lower())
    if operation is None:
        problems.append(f"{where}: the route is not documented")
        continue
    status = str(answer["status"])
    if status not in operation["responses"]:
        problems.append(f"{where}: this status is not documented (documented: {sorted(operation['responses'])})")
        continue
    content = operation["responses"][status].get("content", {})
    if answer["body"] is None:
        continue
    if "application/json" not in content:
        problems.append(f"{where}: a JSON body where the document promises none")
        continue
    reference = "urn:openapi#/" + pointer("paths", answer["route"], answer["method"].lower(), "responses", status, "content",
                                          "application/json", "schema")
    validator = Draft202012Validator({"$ref": reference}, registry=registry)
    for error in validator.iter_errors(answer["body"]):
        problems.append(f"{where}: {error.message} at {'/'.join(map(str, error.absolute_path)) or 'the top'}")

print("\n".join(problems) if problems else f"{len(answers)} answers match the document")
sys.exit(1 if problems else 0)
