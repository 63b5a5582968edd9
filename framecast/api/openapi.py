"""OpenAPI documents: the whole server's, and one per endpoint in fal's queue layout.

fal serves `GET https://fal.ai/api/openapi/queue/openapi.json?endpoint_id=<id>`:
the endpoint's queue routes with its input and output schemas. We serve the
same document for our endpoints, with our own server URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from copy import deepcopy
from typing import Any

from pydantic import BaseModel

from framecast.api.auth import SECURITY, SECURITY_SCHEME
from framecast.api.errors import FAL_ERROR_DESCRIPTIONS, FalError
from framecast.api.protocol import QueueStatus, SubmitResponse
from framecast.endpoints import EndpointSpec

REF_TEMPLATE = "#/components/schemas/{model}"


def _fal_error(description: str) -> dict[str, Any]:
    return {"description": description, **_json_body("FalError")}


def _json_body(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=ref)}}}}


ERROR_RESPONSES = {
    **{str(code): _fal_error(FAL_ERROR_DESCRIPTIONS[code]) for code in (400, 401, 413)},
    "422": _fal_error("Invalid input: every bad field in fal's `detail` list."),
    "503": _fal_error(FAL_ERROR_DESCRIPTIONS[503]),
}
# The sync run answers with the finished request: its own error when it failed.
FAILED_RUN_RESPONSE = {
    "default": _fal_error(
        "A failed request: the status code and body it failed with (422 bad input, 499 cancelled, 500 runner error, "
        "502 upstream error, 503 worker lost, 504 start timeout), as fal does."
    )
}


def schema_name(endpoint_id: str) -> str:
    """'fal-ai/kling-video/v2.1/standard/image-to-video' -> 'KlingVideoV21StandardImageToVideo'."""
    words = re.split(r"[^A-Za-z0-9]+", endpoint_id.split("/", 1)[1].replace(".", ""))
    return "".join(word[:1].upper() + word[1:] for word in words if word)


def model_schemas(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The model's schema under `name` plus its nested models, all as components."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
    nested = schema.pop("$defs", {})
    schema["title"] = name
    return {name: schema, **nested}


def endpoint_schemas(spec: EndpointSpec, base: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """(input name, output name, components) for one endpoint, with the documented example.

    The names are `base` (default: `schema_name` of the endpoint id) + `Input` and `Output`.
    """
    base = base or schema_name(spec.endpoint_id)
    input_name, output_name = f"{base}Input", f"{base}Output"
    schemas = {**model_schemas(spec.input_model, input_name), **model_schemas(spec.output_model, output_name)}
    input_schema = schemas[input_name]
    input_schema["x-fal-order-properties"] = list(input_schema.get("properties", {}))
    input_schema["examples"] = [dict(spec.example)]
    input_schema["description"] = spec.description or spec.title
    return input_name, output_name, schemas


def endpoint_document(spec: EndpointSpec, *, queue_url: str, version: str) -> dict[str, Any]:
    """fal's per-endpoint queue OpenAPI document for `spec`, served from `queue_url`."""
    input_name, output_name, schemas = endpoint_schemas(spec)
    schemas.update(model_schemas(QueueStatus, "QueueStatus"))
    schemas.update(model_schemas(FalError, "FalError"))
    request_id = {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}
    status_response = {"200": {"description": "The request status.", **_json_body("QueueStatus")}}
    endpoint_path = f"/{spec.endpoint_id}"
    requests_path = f"{endpoint_path}/requests/{{request_id}}"
    return {
        "openapi": "3.0.4",
        "info": {
            "title": f"Queue OpenAPI for {spec.endpoint_id}",
            "version": version,
            "description": spec.description or spec.title,
            "x-fal-metadata": {"endpointId": spec.endpoint_id, "category": "image-to-video"},
        },
        "servers": [{"url": queue_url}],
        "security": [{"apiKeyAuth": []}],
        "components": {
            "securitySchemes": {
                "apiKeyAuth": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": 'Key: "Key <your key>"',
                }
            },
            "schemas": schemas,
        },
        "paths": {
            f"{requests_path}/status": {
                "get": {
                    "parameters": [
                        request_id,
                        {
                            "name": "logs",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number"},
                            "description": "Whether to include logs (`1`) in the response or not (`0`).",
                        },
                    ],
                    "responses": status_response,
                }
            },
            f"{requests_path}/cancel": {
                "put": {
                    "parameters": [request_id],
                    "responses": {
                        "200": {
                            "description": "The request was cancelled.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"success": {"type": "boolean"}},
                                    }
                                }
                            },
                        }
                    },
                }
            },
            endpoint_path: {
                "post": {
                    "requestBody": {"required": True, **_json_body(input_name)},
                    "responses": {**status_response, **ERROR_RESPONSES},
                }
            },
            requests_path: {
                "get": {
                    "parameters": [request_id],
                    "responses": {"200": {"description": "Result of the request.", **_json_body(output_name)}},
                }
            },
        },
    }


def add_endpoint_routes(document: dict[str, Any], catalogue: Mapping[str, EndpointSpec]) -> dict[str, Any]:
    """The server's document plus an explicit submit and run route for every endpoint, with its schemas."""
    document = deepcopy(document)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(model_schemas(SubmitResponse, "SubmitResponse"))
    schemas.update(model_schemas(FalError, "FalError"))
    # FastAPI declares the scheme when a route depends on the key; these routes are ours, so declare it either way.
    security_schemes = document["components"].setdefault("securitySchemes", {})
    security_schemes.setdefault(SECURITY_SCHEME, {"type": "apiKey", "in": "header", "name": "Authorization"})
    paths = document.setdefault("paths", {})
    taken: set[str] = set()
    for spec in catalogue.values():
        base = schema_name(spec.endpoint_id)
        if base in taken:
            # Two owners with one alias (fal-ai/framepack, wavespeed-ai/framepack): the owner tells them apart.
            base = schema_name(f"_/{spec.endpoint_id}")
        taken.add(base)
        input_name, output_name, endpoint_components = endpoint_schemas(spec, base)
        schemas.update(endpoint_components)
        body = {"required": True, **_json_body(input_name)}
        paths[f"/queue/{spec.endpoint_id}"] = {
            "post": {
                "tags": ["queue"],
                "summary": f"Submit: {spec.title}",
                "operationId": f"submit_{input_name}",
                "security": SECURITY,
                "requestBody": body,
                "responses": {
                    "200": {"description": "Queued.", **_json_body("SubmitResponse")},
                    **ERROR_RESPONSES,
                },
            }
        }
        paths[f"/run/{spec.endpoint_id}"] = {
            "post": {
                "tags": ["run"],
                "summary": f"Run and wait: {spec.title}",
                "operationId": f"run_{input_name}",
                "security": SECURITY,
                "requestBody": body,
                "responses": {
                    "200": {"description": "The result.", **_json_body(output_name)},
                    **ERROR_RESPONSES,
                    **FAILED_RUN_RESPONSE,
                },
            }
        }
    return document
