"""Graph-shaped errors raised by route handlers; the server renders the envelope."""

from __future__ import annotations


class GraphError(Exception):
    """Rendered as {"error": {"code", "message", "innerError": {...}}} with ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def not_found(message: str = "Resource not found.", code: str = "Request_ResourceNotFound") -> GraphError:
    return GraphError(404, code, message)
