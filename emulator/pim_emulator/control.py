"""Control API under ``/_emulator/`` (JSON, no token, loopback only; not part of Graph).

Platform routes here; the PIM helper registers approvals, state and objects in its modules.
Errors use the Graph envelope (``BadRequest`` etc.). Control calls are not counted in the stats.
"""

from __future__ import annotations

from pim_emulator import clock as clock_mod
from pim_emulator.errors import GraphError
from pim_emulator.routing import route


def _bad(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def _clock_body(emu) -> dict:
    return {"now": clock_mod.format_datetime(emu.clock.now()), "offset_seconds": round(emu.clock.offset_seconds, 3)}


@route("POST", "/_emulator/reset", permissions=None)
def reset(ctx):
    """Clear everything and reload the startup seed (``--seed FILE`` or the default fixture).
    Also: clock back to real time, fault rules cleared, settings back to the CLI values,
    throttle buckets emptied. Stats are kept (use POST /_emulator/stats/reset)."""
    ctx.emulator.reset()
    return {"status": "reset", "tenant_id": ctx.emulator.tenant_id, **_clock_body(ctx.emulator)}


@route("POST", "/_emulator/seed", permissions=None)
def load_seed(ctx):
    """Replace the tenant with the fixture in the body (same shape as data/seed.json)."""
    if not isinstance(ctx.body, dict):
        raise _bad("The body must be a seed fixture (a JSON object).")
    ctx.emulator.reset(seed=ctx.body, keep_settings=True)
    return {"status": "seeded", "tenant_id": ctx.emulator.tenant_id}


@route("GET", "/_emulator/stats", permissions=None)
def stats(ctx):
    return ctx.emulator.stats.snapshot()


@route("POST", "/_emulator/stats/reset", permissions=None)
def stats_reset(ctx):
    ctx.emulator.stats.reset()
    return ctx.emulator.stats.snapshot()


@route("GET", "/_emulator/clock", permissions=None)
def get_clock(ctx):
    return _clock_body(ctx.emulator)


@route("POST", "/_emulator/clock", permissions=None)
def set_clock(ctx):
    """``{"advance": "PT1H"}`` or ``{"set": "2030-01-01T00:00:00Z"}`` or ``{"reset": true}``."""
    emu = ctx.emulator
    body = ctx.body if isinstance(ctx.body, dict) else None
    if not body or len(set(body) & {"advance", "set", "reset"}) != 1 or set(body) - {"advance", "set", "reset"}:
        raise _bad('Give exactly one of {"advance": "PT1H"}, {"set": "2030-01-01T00:00:00Z"} or {"reset": true}.')
    try:
        if "advance" in body:
            try:
                delta = clock_mod.parse_duration(body["advance"])
            except ValueError as e:
                if "too large" in str(e):  # beyond what a duration can hold: beyond the clock's range too
                    raise ValueError(f"{e}: {clock_mod.range_message()}") from None
                raise
            emu.clock.advance(delta)
        elif "set" in body:
            emu.clock.set(clock_mod.parse_datetime(body["set"]))
        else:
            emu.clock.reset()
    except ValueError as e:
        raise _bad(str(e)) from None
    ctx.tx.meta_put(clock_mod.META_KEY, emu.clock.offset_seconds)
    return _clock_body(emu)


@route("GET", "/_emulator/faults", permissions=None)
def get_faults(ctx):
    return {"rules": ctx.emulator.faults.listing(), "injected": ctx.emulator.faults.injected}


@route("POST", "/_emulator/faults", permissions=None)
def set_faults(ctx):
    """Replace the rules: ``{"rules": [...]}`` or a list; ``?append=true`` adds to them."""
    append = str(ctx.query.get("append", "")).lower() == "true"
    ctx.emulator.faults.set(ctx.body, append=append)
    return {"rules": ctx.emulator.faults.listing()}


@route("DELETE", "/_emulator/faults", permissions=None)
def clear_faults(ctx):
    ctx.emulator.faults.clear()
    return None


@route("GET", "/_emulator/settings", permissions=None)
def get_settings(ctx):
    return dict(ctx.emulator.settings)


@route("PATCH", "/_emulator/settings", permissions=None)
def patch_settings(ctx):
    return ctx.emulator.update_settings(ctx.body)


@route("POST", "/_emulator/tokens", permissions=None)
def mint_token(ctx):
    """``{"user": upn-or-id | null, "app": appId?, "claims": {...}, "scopes": [...]?, "roles": [...]?}``.

    Without ``user``: an app-only token for ``app`` (default: the primary app). With
    ``user``: a delegated token (``scp`` = the app's delegated scopes unless ``scopes`` is
    given, ``amr: ["pwd"]`` unless overridden). ``claims`` are merged last, so they can set
    ``amr``, ``acrs``, ``exp`` etc. No password is needed: this is the test back door.
    """
    emu = ctx.emulator
    body = ctx.body if ctx.body is not None else {}
    if not isinstance(body, dict) or set(body) - {"user", "app", "claims", "scopes", "roles", "audience"}:
        raise _bad(
            'Body: {"user": upn-or-id|null, "app": appId?, "claims": {...}?, "scopes": [...]?, "roles": [...]?}.'
        )
    ident = emu.identity
    apps = ctx.tx.list("applications")
    if body.get("app"):
        app = ident.find_app(ctx.tx, str(body["app"]))
        if app is None:
            raise GraphError(404, "Request_ResourceNotFound", f"No application with appId '{body['app']}'.")
    else:
        app = next((a for a in apps if a.get("primary")), None)
        if app is None:
            raise GraphError(404, "Request_ResourceNotFound", "The tenant has no primary application.")
    claims = body.get("claims") or {}
    if not isinstance(claims, dict):
        raise _bad("'claims' must be an object.")
    audience = body.get("audience")
    if body.get("user"):
        user = ident.find_user(ctx.tx, str(body["user"]))
        if user is None:
            raise GraphError(404, "Request_ResourceNotFound", f"No user '{body['user']}'.")
        scopes = body.get("scopes")
        if scopes is None:
            scopes = ident.delegated_scopes(app)
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise _bad("'scopes' must be a list of strings.")
        token = ident.mint_user_token(app, user, scopes, audience, extra=claims)
    else:
        if body.get("roles") is not None:
            if not isinstance(body["roles"], list):
                raise _bad("'roles' must be a list of strings.")
            app = {**app, "roles": body["roles"]}
        token = ident.mint_app_token(app, ctx.tx, audience, extra=claims)
    return {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
