# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""PimModule: the AnsibleModule every entra.pim module is built on.

Internal to the entra.pim collection: not a public API, may change without notice.

It merges the shared connection options, builds the Graph client on first use and turns
every failure into one ``fail_json``: our errors with their fields, anything else as a short
"please report it" message. Secret values never reach the output.
"""

from __future__ import annotations

import copy
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.errors import NoLogError
from ansible_collections.entra.pim.plugins.module_utils._auth import (
    AUTH_ARGSPEC,
    HAS_MSAL,
    HAS_REQUESTS,
    MSAL_IMPORT_ERROR,
    REQUESTS_IMPORT_ERROR,
)
from ansible_collections.entra.pim.plugins.module_utils._errors import PimError
from ansible_collections.entra.pim.plugins.module_utils._graph import GraphClient


def _what(value):
    return {list: "a list", dict: "a dictionary", type(None): "null"}.get(type(value), type(value).__name__)


def _shown(value, secret):
    if secret or value is None:
        return ""
    text = repr(value)
    return " %s" % (text if len(text) <= 80 else text[:80] + "...")


def shape_errors(spec, params, prefix=""):
    """Values whose shape the argument spec cannot hold, as messages naming the option: a list or dict given
    to a string option, or a null, empty, list or dict item in a list of strings, at any depth (suboptions
    of dicts and of lists of dicts, such as ``grants[3].role``).

    Ansible turns these into their text (``['alice']``) without a word, and the module would then look up
    a principal named ``['alice']`` and report it "not found". Checked on the raw parameters, before
    Ansible converts them.
    """
    errors = []
    if not isinstance(params, dict):
        return errors
    for name, opt in spec.items():
        for key in [name] + list(opt.get("aliases") or []):
            if key not in params:
                continue
            value, label, kind = params[key], prefix + key, opt.get("type", "str")
            secret = bool(opt.get("no_log"))
            if _not_text(value):
                errors.append(
                    "%s holds characters that are not valid Unicode text (a lone surrogate such as \\udcff); "
                    "give text that can be written as UTF-8" % label
                )
                continue
            if kind in ("str", "path") and isinstance(value, (list, dict)):
                errors.append(
                    "%s must be a single string, got %s%s; give one value"
                    % (label, _what(value), _shown(value, secret))
                )
            elif kind == "list" and isinstance(value, list):
                elements = opt.get("elements")
                for index, item in enumerate(value):
                    item_label = "%s[%d]" % (label, index)
                    if elements == "str" and (item is None or isinstance(item, (list, dict))):
                        errors.append(
                            "%s must be a string, got %s%s; give a list of strings"
                            % (item_label, _what(item), _shown(item, secret))
                        )
                    elif elements == "str" and isinstance(item, str) and not item.strip():
                        # An unset variable in a list: a protected principal or a boundary entry that
                        # silently stands for nothing.
                        errors.append("%s is empty; remove it from the list or give a value" % item_label)
                    elif elements == "dict" and item is None:
                        errors.append("%s is null; expected a dictionary of the item's options" % item_label)
                    elif elements == "dict" and opt.get("options") and isinstance(item, dict):
                        errors.extend(shape_errors(opt["options"], item, item_label + "."))
            elif kind == "dict" and opt.get("options") and isinstance(value, dict):
                errors.extend(shape_errors(opt["options"], value, label + "."))
    return errors


# The connection options that are numbers, with what a person can mean by them. Out of these bounds the
# HTTP stack fails in its own words (a negative timeout is a ValueError, a huge one an OverflowError),
# and a timeout of 0 was quietly read as the default.
NUMBER_RANGES = {
    "request_timeout": (1, 3600, "a whole number of seconds"),
    "max_retries": (0, 100, "a whole number of retries (0 disables them)"),
    "max_retry_wait": (0, 3600, "a whole number of seconds"),
}


def connection_errors(params):
    """What is wrong with the shared connection options that Ansible's types let through, as messages."""
    errors = []
    for name, (low, high, what) in NUMBER_RANGES.items():
        value = params.get(name)
        if value is not None and not low <= value <= high:
            errors.append("%s %s is out of range; expected %s from %d to %d" % (name, value, what, low, high))
    ca_bundle = params.get("ca_bundle")
    if ca_bundle is not None and not (os.path.isfile(ca_bundle) and os.access(ca_bundle, os.R_OK)):
        errors.append(
            "ca_bundle '%s' is not a readable file; expected a PEM file of certificate authorities (for the PIM "
            "sandbox, its ca.pem)" % ca_bundle
        )
    return errors


def _not_text(value):
    """A string (at any depth) that cannot be written as UTF-8: Ansible's own logging would raise on it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_not_text(v) for v in value.values())
    if isinstance(value, list):
        return any(_not_text(v) for v in value)
    return False


class PimModule(AnsibleModule):
    def __init__(self, argument_spec, **kwargs):
        spec = copy.deepcopy(AUTH_ARGSPEC)
        spec.update(argument_spec or {})
        self._shape_errors = []
        self._checking_arguments = True
        super().__init__(argument_spec=spec, **kwargs)
        if self._shape_errors:
            self.fail_json(msg="; ".join(self._shape_errors))
        self._checking_arguments = False
        bad_connection = connection_errors(self.params)
        if bad_connection:
            self.fail_json(msg="; ".join(bad_connection))
        for ok, name, error in (
            (HAS_REQUESTS, "requests", REQUESTS_IMPORT_ERROR),
            (HAS_MSAL, "msal", MSAL_IMPORT_ERROR),
        ):
            if not ok:
                self.fail_json(msg=missing_required_lib(name), exception=error)
        if not self.params.get("validate_certs", True):
            self.warn(
                "validate_certs is false: TLS certificates of Microsoft Graph and the identity platform are not "
                "checked, so credentials and tokens could be intercepted. Use ca_bundle for a private CA instead."
            )
        self._client = None

    def _load_params(self):
        super()._load_params()
        # Before Ansible's conversions hide them (see shape_errors); reported after its own checks run.
        self._shape_errors = shape_errors(self.argument_spec, self.params)

    def _log_invocation(self):
        # Logging the parameters is where Ansible trips over a lone surrogate (UnicodeEncodeError, a
        # traceback); with a shape error pending, the task fails with it instead (see __init__).
        if self._shape_errors:
            return
        super()._log_invocation()

    def fail_json(self, msg, **kwargs):
        if getattr(self, "_checking_arguments", False):
            msg = self._clearest_argument_error(msg)
        super().fail_json(msg=msg, **kwargs)

    def _clearest_argument_error(self, msg):
        """Ansible reports the first argument error; when that is the no_log scan tripping over a value
        of the wrong type (``grants: alice``), the conversion error after it names the option instead."""
        if getattr(self, "_shape_errors", None):
            return "; ".join(self._shape_errors)
        result = getattr(self, "validation_result", None)
        errors = list(getattr(result, "errors", None) or [])
        if errors and isinstance(errors[0], NoLogError):
            named = [str(e) for e in errors if not isinstance(e, NoLogError)]
            if named:
                return named[0]
        return msg

    @property
    def client(self):
        """The GraphClient for this task, built on first use."""
        if self._client is None:
            settings = {name: self.params.get(name) for name in AUTH_ARGSPEC}
            self._client = GraphClient(settings, log=self._log_event, warn=self.warn)
        return self._client

    def _log_event(self, msg):
        # Retries go to the target's log; at -vvv they are also shown as warnings.
        self.log(msg)
        if getattr(self, "_verbosity", 0) >= 3:
            self.warn(msg)

    def _register_runtime_secrets(self):
        """Tokens and assertions are not module params: add them so Ansible masks them too."""
        if self._client is not None:
            for value in self._client.secret_values():
                if value and len(value) >= 8:
                    self.no_log_values.add(value)

    def _finish(self):
        if self._client is not None:
            try:
                self._client.close()
            except Exception as exc:  # a cache that cannot be written must not fail the task
                self.warn("Could not finish cleanly: %s" % type(exc).__name__)
        self._register_runtime_secrets()

    def run(self, fn):
        """Run ``fn(self) -> dict`` and exit with its result, or fail with a message for people."""
        failure = None
        try:
            result = fn(self)
        except PimError as exc:
            failure = exc.to_fail_kwargs()
        except Exception as exc:
            failure = dict(
                msg="Unexpected error in entra.pim: %s: %s. Please report it." % (type(exc).__name__, exc),
                exception=traceback.format_exc(),
            )
        if failure is None:
            result = dict(result or {})
            if self._client is not None:
                result.setdefault("auth_method", self._client.auth_method)
            self._finish()
            self.exit_json(**result)
        self._finish()
        if self._client is not None:
            failure.setdefault("auth_method", self._client.auth_method)
        # Outside the except blocks: our own errors carry no traceback.
        msg = failure.pop("msg")
        exception = failure.pop("exception", None)
        if exception is not None:
            self.fail_json(msg=msg, exception=exception, **failure)
        self.fail_json(msg=msg, **failure)
