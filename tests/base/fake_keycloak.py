"""An in-memory stand-in for Keycloak's admin REST API at the connection level.

``KeycloakAdmin(connection=FakeKeycloak())`` runs python-keycloak's real admin methods;
only the HTTP requests are answered here, as Keycloak answers them (201 with a Location
header, 409 for duplicates, 404 for unknown names), and every request is recorded.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any


class FakeResponse:
    def __init__(self, status_code: int, body: Any = None, location: str | None = None) -> None:
        self.status_code = status_code
        self._body = body
        self.headers = {"Location": location} if location else {}
        self.content = json.dumps(body).encode() if body is not None else b""

    def json(self) -> Any:
        if self._body is None:
            raise ValueError("no JSON body")
        return self._body


@dataclass
class Request:
    method: str
    path: str
    payload: Any = None
    params: dict[str, Any] = field(default_factory=dict)


class FakeKeycloak:
    def __init__(self) -> None:
        self.realm_name = "master"
        self.requests: list[Request] = []
        self.realms: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, dict[str, Any]] = {}
        self.clients: dict[str, dict[str, Any]] = {}  # by clientId
        self.groups: dict[str, dict[str, Any]] = {}  # by path
        self.group_roles: dict[str, list[str]] = {}  # group path -> realm role names

    @property
    def created(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]

    # -- the connection interface python-keycloak calls ------------------------------------
    def raw_get(self, path: str, **params: Any) -> FakeResponse:
        self.requests.append(Request("GET", path, params=params))
        if match := re.fullmatch(r"admin/realms/[^/]+/roles/([^/]+)", path):
            role = self.roles.get(match[1])
            return FakeResponse(200, role) if role else FakeResponse(404, {"error": "no role"})
        if re.fullmatch(r"admin/realms/[^/]+/clients", path):
            wanted = params.get("clientId")
            return FakeResponse(200, [c for c in self.clients.values() if c["clientId"] == wanted])
        if match := re.fullmatch(r"admin/realms/[^/]+/group-by-path/(.+)", path):
            group = self.groups.get("/" + match[1].lstrip("/"))
            return FakeResponse(200, group) if group else FakeResponse(404, {"error": "no group"})
        raise AssertionError(f"unexpected GET {path}")

    def raw_post(self, path: str, data: Any, **params: Any) -> FakeResponse:
        payload = json.loads(data) if isinstance(data, str) else data
        self.requests.append(Request("POST", path, payload, params))
        if path == "admin/realms":
            return self._add(
                self.realms, payload["realm"], payload, f"admin/realms/{payload['realm']}"
            )
        if match := re.fullmatch(r"(admin/realms/[^/]+)/roles", path):
            return self._add(
                self.roles, payload["name"], payload, f"{match[1]}/roles/{payload['name']}"
            )
        if match := re.fullmatch(r"(admin/realms/[^/]+)/clients", path):
            return self._add(self.clients, payload["clientId"], payload, f"{match[1]}/clients/")
        if match := re.fullmatch(r"(admin/realms/[^/]+)/groups", path):
            return self._add_group("", payload, match[1])
        if match := re.fullmatch(r"(admin/realms/[^/]+)/groups/([^/]+)/children", path):
            parent = next(g for g in self.groups.values() if g["id"] == match[2])
            return self._add_group(parent["path"], payload, match[1])
        if match := re.fullmatch(r"admin/realms/[^/]+/groups/([^/]+)/role-mappings/realm", path):
            group = next(g for g in self.groups.values() if g["id"] == match[1])
            names = self.group_roles.setdefault(group["path"], [])
            names.extend(r["name"] for r in payload if r["name"] not in names)
            return FakeResponse(204)
        raise AssertionError(f"unexpected POST {path}")

    def _add(
        self, table: dict[str, dict[str, Any]], key: str, payload: dict[str, Any], location: str
    ) -> FakeResponse:
        if key in table:
            return FakeResponse(409, {"errorMessage": "Conflict detected. See logs for details"})
        new_id = str(uuid.uuid4())
        table[key] = {**payload, "id": new_id}
        return FakeResponse(201, location=location + (new_id if location.endswith("/") else ""))

    def _add_group(self, parent_path: str, payload: dict[str, Any], realm: str) -> FakeResponse:
        path = f"{parent_path}/{payload['name']}"
        if path in self.groups:
            return FakeResponse(409, {"errorMessage": "Top level group named already exists."})
        new_id = str(uuid.uuid4())
        self.groups[path] = {"id": new_id, "name": payload["name"], "path": path}
        return FakeResponse(201, location=f"{realm}/groups/{new_id}")
