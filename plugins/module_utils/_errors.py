# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Exceptions shared by every layer of entra.pim.

Internal to the entra.pim collection: not a public API, may change without notice.

Every failure a user can see is one of these. Each carries a message written for a
person and extra fields that the module wrapper passes to ``fail_json``. None of them
ever holds a secret, a token or a request body.
"""

from __future__ import annotations

SHOWN_LIMIT = 80


def shown(value, limit=SHOWN_LIMIT):
    """A user's value as a message quotes it: as given, but a 100,000-character one is cut, with its length."""
    text = str(value)
    return text if len(text) <= limit else "%s... (%d characters)" % (text[:limit], len(text))


class PimError(Exception):
    """A failure explained for a human; ``details`` become extra ``fail_json`` keys."""

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = {k: v for k, v in details.items() if v is not None}

    def to_fail_kwargs(self):
        return dict(self.details, msg=self.msg)


class InputError(PimError):
    """Bad option values or names that cannot be resolved. Raised before any write."""


class AuthError(PimError):
    """No usable credentials, or the identity platform refused them."""


class GraphError(PimError):
    """Microsoft Graph answered with an error (or could not be reached).

    ``status`` is the HTTP status (None when no response arrived), ``code`` the Graph
    ``error.code``, ``graph_message`` Graph's own text. ``msg`` is ours, for people.
    """

    def __init__(
        self,
        msg,
        status=None,
        code=None,
        graph_message=None,
        request_id=None,
        client_request_id=None,
        method=None,
        url=None,
        attempts=None,
        **details,
    ):
        super().__init__(
            msg,
            status=status,
            error_code=code,
            graph_message=graph_message,
            request_id=request_id,
            client_request_id=client_request_id,
            method=method,
            url=url,
            attempts=attempts,
            **details,
        )
        self.status = status
        self.code = code
        self.graph_message = graph_message
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.method = method
        self.url = url
        self.attempts = attempts
