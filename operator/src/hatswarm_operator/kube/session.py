"""Async HTTP to the Kubernetes API for the watch-fed caches and the Event recorder.

The `kubernetes` client is synchronous: a watch held in it pins a worker thread for as long
as it runs, and `asyncio.to_thread` has only a handful. The caches (informers.py) hold several
watches for the operator's whole life, so they speak HTTP themselves through httpx, set up
from the same `kubernetes.client.Configuration` the rest of the operator uses (in-cluster
service account or kubeconfig): the host, the bearer token (refreshed by the client's own
hook, so a rotated service-account token is picked up), the CA and client certificate.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class ApiStatusError(Exception):
    """A non-2xx answer, with the `Status` the API server sent (code, reason, message)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


def _tls(configuration: Any) -> ssl.SSLContext | bool:
    if not str(configuration.host).startswith("https"):
        return False
    if not configuration.verify_ssl:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        if configuration.assert_hostname is False:
            ctx.check_hostname = False
    if configuration.cert_file:
        ctx.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return ctx


def _error(response: httpx.Response, body: bytes) -> ApiStatusError:
    try:
        status = json.loads(body)
    except ValueError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    return ApiStatusError(
        int(status.get("code") or response.status_code),
        str(status.get("reason") or response.reason_phrase),
        str(status.get("message") or body[:200].decode(errors="replace")),
    )


class ApiSession:
    """GET, stream a watch, POST and PATCH against the API server; JSON in and out."""

    def __init__(self, configuration: Any, *, request_timeout_s: float = 30.0) -> None:
        self.configuration = configuration
        self.request_timeout_s = request_timeout_s
        self._client = httpx.AsyncClient(
            base_url=str(configuration.host).rstrip("/"),
            verify=_tls(configuration),
            timeout=httpx.Timeout(request_timeout_s),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=20),
            headers={"Accept": "application/json", "User-Agent": "hatswarm-operator"},
        )

    def _headers(self) -> dict[str, str]:
        """Auth headers as the kubernetes client would send them (token refreshed by its hook)."""
        out = {}
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                out[str(setting["key"])] = str(setting["value"])
        return out

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Obj:
        response = await self._client.get(path, params=params, headers=self._headers())
        if response.status_code >= 300:
            raise _error(response, response.content)
        body: Obj = response.json()
        return body

    async def post(self, path: str, body: Obj) -> Obj:
        response = await self._client.post(path, json=body, headers=self._headers())
        if response.status_code >= 300:
            raise _error(response, response.content)
        out: Obj = response.json()
        return out

    async def patch(self, path: str, body: Obj, content_type: str = MERGE_PATCH) -> Obj:
        headers = {**self._headers(), "Content-Type": content_type}
        response = await self._client.patch(path, content=json.dumps(body), headers=headers)
        if response.status_code >= 300:
            raise _error(response, response.content)
        out: Obj = response.json()
        return out

    async def watch(
        self, path: str, params: Mapping[str, str], *, inactivity_s: float
    ) -> AsyncIterator[Obj]:
        """The events of one watch request, parsed, until the server ends the stream.

        `inactivity_s` bounds the wait for the next line (events or bookmarks): a silent
        connection is dropped (httpx.ReadTimeout) instead of hanging forever.
        """
        timeout = httpx.Timeout(self.request_timeout_s, read=inactivity_s)
        async with self._client.stream(
            "GET", path, params={**params, "watch": "true"}, headers=self._headers(),
            timeout=timeout,
        ) as response:  # fmt: skip
            if response.status_code >= 300:
                raise _error(response, await response.aread())
            async for line in response.aiter_lines():
                if line.strip():
                    event: Obj = json.loads(line)
                    yield event

    async def close(self) -> None:
        await self._client.aclose()
