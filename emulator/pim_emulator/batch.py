"""JSON batching: ``POST /v1.0/$batch`` (notes §1.5, graph/json-batching.md).

* At most 20 requests; ``id`` required, unique case-insensitively; ``method`` and ``url``
  required; ``headers`` must carry ``Content-Type`` when ``body`` is given; ``dependsOn``
  must name ids of the same batch and must not form a cycle. Any violation: the whole
  batch is 400 BadRequest.
* Each item is re-dispatched through the same router with the outer request's token
  (same permission checks; throttling and fault rules apply per item, so an item can be
  429/503/504 on its own while the batch is 200). Each item runs in its own transaction:
  a batch is not atomic, as on Graph.
* Items run one after the other, in request order except that an item runs after the
  items it depends on. If a dependency ended with a status >= 400, the item is not run
  and gets 424 Failed Dependency.
* Responses come in request order by default. Graph does not promise any order; the
  ``batch_response_order`` setting (``request`` | ``reverse`` | ``shuffle``, seeded) lets
  tests check that clients correlate by ``id``.
"""

from __future__ import annotations

import random
from urllib.parse import urlsplit

from pim_emulator.errors import GraphError
from pim_emulator.routing import route

MAX_BATCH = 20


def _bad(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def _validate(body) -> list[dict]:
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise _bad("Invalid batch payload: the body must be an object with a 'requests' array.")
    reqs = body["requests"]
    if not reqs:
        raise _bad("Invalid batch payload: 'requests' is empty.")
    if len(reqs) > MAX_BATCH:
        raise _bad(f"Invalid batch payload: the number of requests ({len(reqs)}) exceeds the limit of {MAX_BATCH}.")
    seen = {}
    for i, r in enumerate(reqs):
        if not isinstance(r, dict):
            raise _bad(f"Invalid batch payload: request {i} is not an object.")
        rid = r.get("id")
        if not isinstance(rid, str) or not rid.strip():
            raise _bad(f"Invalid batch payload: request {i} has no 'id' (a non-empty string).")
        if rid.lower() in seen:
            raise _bad(
                f"Invalid batch payload: the request id '{rid}' is used more than once (ids are case-insensitive)."
            )
        seen[rid.lower()] = r
        if not isinstance(r.get("method"), str) or r["method"].upper() not in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            raise _bad(f"Invalid batch payload: request '{rid}' has a missing or unsupported 'method'.")
        if not isinstance(r.get("url"), str) or not r["url"].strip():
            raise _bad(f"Invalid batch payload: request '{rid}' has no 'url'.")
        headers = r.get("headers")
        if headers is not None and (
            not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
        ):
            raise _bad(f"Invalid batch payload: request '{rid}' has 'headers' that are not an object of strings.")
        if r.get("body") is not None and not any(k.lower() == "content-type" for k in (headers or {})):
            raise _bad(f"Invalid batch payload: request '{rid}' has a body but no Content-Type header.")
        deps = r.get("dependsOn")
        if deps is not None and (not isinstance(deps, list) or not all(isinstance(d, str) for d in deps)):
            raise _bad(f"Invalid batch payload: 'dependsOn' of request '{rid}' must be an array of ids.")
    for r in reqs:
        for d in r.get("dependsOn") or []:
            if d.lower() not in seen:
                raise _bad(f"Invalid batch payload: request '{r['id']}' depends on unknown id '{d}'.")
            if d.lower() == r["id"].lower():
                raise _bad(f"Invalid batch payload: request '{r['id']}' depends on itself.")
    return reqs


def _order(reqs: list[dict]) -> list[dict]:
    """Request order, moved only as far as dependsOn requires; 400 on a cycle."""
    by_id = {r["id"].lower(): r for r in reqs}
    done, visiting, out = set(), set(), []

    def visit(r):
        key = r["id"].lower()
        if key in done:
            return
        if key in visiting:
            raise _bad(f"Invalid batch payload: dependsOn forms a cycle at request '{r['id']}'.")
        visiting.add(key)
        for d in r.get("dependsOn") or []:
            visit(by_id[d.lower()])
        visiting.discard(key)
        done.add(key)
        out.append(r)

    for r in reqs:
        visit(r)
    return out


def _inner_path(url: str, base_url: str) -> tuple[str, str]:
    url = url.strip()
    if url.lower().startswith(("https://", "http://")):
        parts = urlsplit(url)
        base = urlsplit(base_url)
        if parts.netloc.lower() != base.netloc.lower() or not parts.path.lower().startswith("/v1.0/"):
            raise _bad(f"Invalid batch payload: the url '{url}' must be relative to the service root.")
        return parts.path, parts.query
    path, _, query = url.partition("?")
    return "/v1.0/" + path.lstrip("/"), query


@route("POST", "/v1.0/$batch", permissions=[], transaction=False)
def batch(ctx):
    from pim_emulator.server import CIHeaders, parse_query

    emu = ctx.emulator
    reqs = _validate(ctx.body)
    ordered = _order(reqs)
    results: dict[str, dict] = {}
    failed: set[str] = set()
    outer_auth = ctx.headers.get("Authorization")
    for r in ordered:
        rid = r["id"]
        deps = [d.lower() for d in r.get("dependsOn") or []]
        if any(d in failed for d in deps):
            bad = next(d for d in deps if d in failed)
            err = GraphError(
                424, "FailedDependency", f"The request could not be run because request '{bad}' it depends on failed."
            )
            resp = emu.error_response(err, ctx.request_id, ctx.client_request_id)
        else:
            path, qs = _inner_path(r["url"], ctx.base_url)
            method = r["method"].upper()
            inner_headers = dict(r.get("headers") or {})
            items = [(k, v) for k, v in inner_headers.items() if k.lower() != "authorization"]
            if outer_auth:
                items.append(("Authorization", outer_auth))
            headers = CIHeaders(items)
            if path.lower().rstrip("/") == "/v1.0/$batch":
                resp = emu.error_response(
                    _bad("A batch request cannot contain another batch."), ctx.request_id, ctx.client_request_id
                )
            else:
                resp, item_lost = emu.run_safely(
                    method,
                    path,
                    parse_query(qs),
                    None,
                    headers,
                    ctx.request_id,
                    ctx.client_request_id,
                    in_batch=True,
                    parsed_body=r.get("body"),
                    body_given="body" in r and r["body"] is not None,
                    raw_query=qs,
                )
                if item_lost:
                    ctx.batch_lost = True
        if resp.status >= 400:
            failed.add(rid.lower())
        item_headers = {}
        if resp.body is not None and resp.status != 204:
            item_headers["Content-Type"] = "application/json"
        item_headers.update({k: str(v) for k, v in (resp.headers or {}).items() if k.lower() != "www-authenticate"})
        out = {"id": rid, "status": resp.status, "headers": item_headers}
        if resp.body is not None and resp.status != 204:
            out["body"] = resp.body
        results[rid.lower()] = out
    responses = [results[r["id"].lower()] for r in reqs]
    order = ctx.settings.get("batch_response_order", "request")
    if order == "reverse":
        responses.reverse()
    elif order == "shuffle":
        random.Random(int(ctx.settings.get("fault_seed") or 0) + len(responses)).shuffle(responses)
    return {"responses": responses}
