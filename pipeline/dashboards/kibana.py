"""Import saved objects into Kibana through its ``POST /api/saved_objects/_import`` API.

The request is what Kibana's own docs show with curl: a multipart form whose ``file`` part is
the NDJSON (the file name must end in ``.ndjson``), the header ``kbn-xsrf``, and
``?overwrite=true`` so a second import replaces the objects (their ids are stable).

Kibana answers 200 with ``{"success", "successCount", "errors": [...]}`` when it read the file,
also when some objects were refused; those come back as :class:`ObjectError`. Anything else
(unreachable, not Kibana, 4xx/5xx for the request as a whole) is a :class:`KibanaImportError`
with a one-line message.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pipeline.errors import PipelineError
from pipeline.settings import masked_url

IMPORT_PATH = "/api/saved_objects/_import"
FILE_NAME = "pipeline-logs.ndjson"


class KibanaImportError(PipelineError):
    """Kibana could not be reached or refused the import request as a whole."""


@dataclass(frozen=True)
class ObjectError:
    """One saved object Kibana refused, and why (``conflict``, ``missing_references``, ...)."""

    type: str
    id: str
    title: str
    error: str
    message: str


@dataclass(frozen=True)
class ImportResult:
    success: bool
    success_count: int
    errors: list[ObjectError] = field(default_factory=list)


def _object_error(raw: dict[str, Any]) -> ObjectError:
    error = raw.get("error") or {}
    kind = str(error.get("type", "unknown"))
    message = str(error.get("message") or "")
    missing = error.get("references") or []
    if not message and missing:
        message = "missing " + ", ".join(f"{ref.get('type')} {ref.get('id')}" for ref in missing)
    meta = raw.get("meta") or {}
    title = str(meta.get("title") or raw.get("title") or "")
    return ObjectError(
        type=str(raw.get("type", "?")),
        id=str(raw.get("id", "?")),
        title=title,
        error=kind,
        message=message,
    )


def parse_import_response(body: dict[str, Any]) -> ImportResult:
    """Kibana's 200 answer to an import, as an :class:`ImportResult`."""
    if "success" not in body:
        raise KibanaImportError(f"unexpected answer from Kibana: {json.dumps(body)[:200]}")
    return ImportResult(
        success=bool(body["success"]),
        success_count=int(body.get("successCount", 0)),
        errors=[_object_error(raw) for raw in body.get("errors") or []],
    )


def _refusal(status: int, text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return f"Kibana refused the import ({status}): {body['message']}"
    snippet = " ".join(text.split())[:200]
    return f"Kibana refused the import ({status}): {snippet or 'no message'}"


async def _post(url: str, ndjson: str, overwrite: bool, timeout_s: float) -> ImportResult:
    form = aiohttp.FormData()
    form.add_field("file", ndjson.encode(), filename=FILE_NAME, content_type="application/ndjson")
    params = {"overwrite": "true" if overwrite else "false"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, data=form, params=params, headers={"kbn-xsrf": "true"}) as response,
    ):
        text = await response.text()
        if response.status != 200:
            raise KibanaImportError(_refusal(response.status, text))
        try:
            body = json.loads(text)
        except ValueError:
            raise KibanaImportError(
                f"unexpected answer from {masked_url(url)} (not JSON): "
                f"{' '.join(text.split())[:200]}"
            ) from None
        if not isinstance(body, dict):
            raise KibanaImportError(f"unexpected answer from {masked_url(url)}: {text[:200]}")
        return parse_import_response(body)


def check_saved_objects(ndjson: str) -> None:
    """A :class:`KibanaImportError` naming the first line of ``ndjson`` that is not a saved
    object (a JSON object with its ``type`` and ``id``), before anything is sent to Kibana.
    (Kibana's own export ends with a summary line, ``exportedCount``: allowed.)"""
    count = 0
    for number, line in enumerate(ndjson.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError as error:
            raise KibanaImportError(f"line {number} is not JSON: {error}") from None
        if not isinstance(document, dict):
            raise KibanaImportError(f"line {number} is not a JSON object")
        if "exportedCount" in document:
            continue
        if not isinstance(document.get("type"), str) or not isinstance(document.get("id"), str):
            raise KibanaImportError(f"line {number} is not a saved object: no type and id")
        count += 1
    if count == 0:
        raise KibanaImportError("no saved object to import")


def import_to_kibana(
    kibana_url: str, ndjson: str, overwrite: bool = True, *, timeout_s: float = 60.0
) -> ImportResult:
    """Import ``ndjson`` (Kibana's export format) into the default space of ``kibana_url``.

    Returns what Kibana did, including the objects it refused; raises
    :class:`KibanaImportError` when it cannot be reached or refuses the request itself (its
    message shows the URL without credentials).
    """
    if not kibana_url.startswith(("http://", "https://")):
        raise KibanaImportError(
            f"expected an http:// or https:// Kibana URL, got {masked_url(kibana_url)!r}"
        )
    check_saved_objects(ndjson)
    url = kibana_url.rstrip("/") + IMPORT_PATH
    shown = masked_url(kibana_url)
    try:
        return asyncio.run(_post(url, ndjson, overwrite, timeout_s))
    except TimeoutError:
        raise KibanaImportError(
            f"Kibana at {shown} did not answer within {timeout_s:g} s"
        ) from None
    except aiohttp.ClientConnectionError as error:
        raise KibanaImportError(f"cannot reach Kibana at {shown}: {error}") from None
    except aiohttp.ClientError as error:
        raise KibanaImportError(f"import to Kibana at {shown} failed: {error}") from None
