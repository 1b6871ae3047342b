"""The API as a Postman Collection v2.1, made from the OpenAPI document at request time (no library needed)."""
from __future__ import annotations

import json

SCHEMA_URL = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
METHODS = ("get", "post", "put", "patch", "delete")


def postman_collection(spec: dict, base_url: str) -> dict:
    """Build a Postman Collection v2.1 from the OpenAPI document: a folder per tag, a request per operation."""
    folders = {tag["name"]: {"name": tag["name"], "description": tag.get("description", ""), "item": []}
               for tag in spec.get("tags", [])}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            tag = (operation.get("tags") or ["api"])[0]
            folder = folders.setdefault(tag, {"name": tag, "description": "", "item": []})
            folder["item"].append(_postman_request(spec, path, method, operation, item.get("parameters", [])))
    return {
        "info": {"name": spec["info"]["title"], "description": spec["info"].get("description", ""),
                 "version": spec["info"]["version"],
                 "schema": SCHEMA_URL},
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{token}}", "type": "string"}]},
        "variable": [{"key": "baseUrl", "value": base_url, "type": "string"},
                     {"key": "token", "value": "", "type": "string"}],
        "item": [folder for folder in folders.values() if folder["item"]],
    }


def _postman_request(spec: dict, path: str, method: str, operation: dict, path_parameters: list) -> dict:
    parameters = [_resolve(spec, p) for p in (*path_parameters, *operation.get("parameters", []))]
    segments = [f":{s[1:-1]}" if s.startswith("{") else s for s in path.strip("/").split("/")] + [""]
    url = {
        "raw": "{{baseUrl}}/" + "/".join(segments),
        "host": ["{{baseUrl}}"],
        "path": segments,
        "query": [{"key": p["name"], "value": _query_value(spec, p), "disabled": not p.get("required", False),
                   "description": p.get("description", "")} for p in parameters if p["in"] == "query"],
        "variable": [{"key": p["name"], "value": "1", "description": p.get("description", "")}
                     for p in parameters if p["in"] == "path"],
    }
    header = [{"key": "Accept", "value": "application/json"}]
    if any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in parameters):
        header.append({"key": "Idempotency-Key", "value": "{{$guid}}",
                       "description": "A new key per intended write; resend the same key to retry it safely."})
    request = {"method": method.upper(), "header": header, "url": url,
               "description": operation.get("description") or operation.get("summary", "")}
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body:
        header.append({"key": "Content-Type", "value": "application/json"})
        request["body"] = {"mode": "raw", "raw": json.dumps(example_value(spec, body["schema"]), indent=2),
                           "options": {"raw": {"language": "json"}}}
    return {"name": operation.get("summary") or f"{method.upper()} {path}", "request": request}


def _query_value(spec: dict, parameter: dict) -> str:
    value = example_value(spec, parameter.get("schema", {}))
    return json.dumps(value) if not isinstance(value, str) else value


def _resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = spec["components"][section][name]
    return node


def example_value(spec: dict, schema: dict):
    """Return a plausible value for a JSON schema: its example, default or first choice, else one of its type."""
    schema = _resolve(spec, schema)
    for key in ("example", "default"):
        if key in schema and schema[key] is not None:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    if schema.get("anyOf"):
        return example_value(spec, {**schema, "anyOf": None, **_resolve(spec, schema["anyOf"][0])})
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: example_value(spec, prop) for name, prop in schema.get("properties", {}).items()}
    if kind == "array":
        return [example_value(spec, schema.get("items", {}))]
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "number":
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return {"date": "2026-01-31", "date-time": "2026-01-31T09:30:00Z", "email": "customer@example.com",
            "ipv4": "192.0.2.10", "ipv6": "2001:db8::10"}.get(schema.get("format"), "text")
