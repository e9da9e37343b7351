# Copyright: contributors to the entra.pim collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PimModule through ansible.module_utils.testing.patch_module_args: results, failures, warnings."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args
from ansible_collections.entra.pim.plugins.module_utils import _auth, _graph, _module
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError, InputError
from ansible_collections.entra.pim.plugins.module_utils._module import PimModule
from entra_pim_unit_fakes import (
    AUTHORITY,
    CLIENT,
    GRAPH,
    SECRET,
    TENANT,
    FakeSession,
    add_identity,
    make_jwt,
    make_response,
)

V1 = GRAPH + "/v1.0"
MODULE_SPEC = dict(role=dict(type="str"), state=dict(type="str", default="present", choices=["present", "absent"]))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in [n for names in _auth.ENV_NAMES.values() for n in names]:
        monkeypatch.delenv(name, raising=False)
    for name in ("IDENTITY_ENDPOINT", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENTRA_PIM_TOKEN_CACHE_PATH", str(tmp_path / "cache" / "token_cache.json"))
    # Warnings are process-global in ansible-core; every real module run is a fresh process.
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})


def warnings_of(result):
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]


@pytest.fixture
def session(monkeypatch):
    fake = FakeSession()
    monkeypatch.setattr(_graph.requests, "Session", lambda: fake)
    return fake


def run(capsys, args, fn, **module_kwargs):
    args = dict({"graph_url": GRAPH, "authority_host": AUTHORITY}, **args)
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        PimModule(argument_spec=MODULE_SPEC, supports_check_mode=True, **module_kwargs).run(fn)
    out = capsys.readouterr().out
    result = json.loads(out)
    result["_rc"] = exit_info.value.code
    result["_raw"] = out
    return result


def test_success_exits_with_the_result_and_the_auth_method(capsys, session):
    session.add("GET", V1, make_response(200, {"value": [{"id": "1", "displayName": "User Administrator"}]}))

    def body(module):
        assert module.params["role"] == "User Administrator" and module.params["max_retries"] == 5
        roles = module.client.list("/roleManagement/directory/roleDefinitions")
        return dict(changed=False, roles=_graph.snake_case_keys(roles))

    result = run(capsys, {"access_token": make_jwt(), "role": "User Administrator"}, body)
    assert result["_rc"] == 0 and result["changed"] is False
    assert result["roles"] == [{"id": "1", "display_name": "User Administrator"}]
    assert result["auth_method"] == "access_token"
    assert session.closed


def test_result_without_client_has_no_auth_method(capsys, session):
    result = run(capsys, {}, lambda module: {"changed": False})
    assert result["_rc"] == 0 and "auth_method" not in result and session.calls == []


def test_pim_error_becomes_fail_json_with_its_fields(capsys, session):
    def body(module):
        raise InputError(
            "Role 'Usr Administrator' was not found. Did you mean: User Administrator?",
            candidates=["User Administrator"],
        )

    result = run(capsys, {"access_token": make_jwt()}, body)
    assert result["_rc"] == 1 and result["failed"] is True
    assert result["msg"] == "Role 'Usr Administrator' was not found. Did you mean: User Administrator?"
    assert result["candidates"] == ["User Administrator"]
    assert "Traceback" not in result["_raw"]


def test_graph_error_carries_status_code_and_request_ids(capsys, session):
    session.add(
        "POST",
        V1,
        make_response(
            400,
            {
                "error": {
                    "code": "RoleAssignmentRequestPolicyValidationFailed",
                    "message": 'The following policy rules failed: ["ExpirationRule"]',
                    "innerError": {"request-id": "r-1", "client-request-id": "c-1"},
                }
            },
        ),
    )

    def body(module):
        module.client.post("/roleManagement/directory/roleEligibilityScheduleRequests", {"action": "adminAssign"})

    result = run(capsys, {"access_token": make_jwt()}, body)
    assert result["_rc"] == 1
    assert result["status"] == 400 and result["error_code"] == "RoleAssignmentRequestPolicyValidationFailed"
    assert result["request_id"] == "r-1" and result["client_request_id"] == "c-1"
    assert result["method"] == "POST" and result["auth_method"] == "access_token"
    assert result["msg"].startswith(
        "Microsoft Graph refused POST /roleManagement/directory/roleEligibilityScheduleRequests (400 "
    )


def test_auth_error_before_any_request(capsys, session):
    result = run(capsys, {"tenant_id": TENANT, "client_id": CLIENT}, lambda module: module.client.get("/users"))
    assert result["_rc"] == 1 and "No complete set of credentials" in result["msg"]
    assert result["auth_method"] == "auto" and session.calls == []


def test_unexpected_error_is_short_and_has_no_traceback_in_msg(capsys, session):
    def body(module):
        return {}["principalId"]

    result = run(capsys, {"access_token": make_jwt()}, body)
    assert result["_rc"] == 1
    assert result["msg"] == "Unexpected error in entra.pim: KeyError: 'principalId'. Please report it."
    assert "Traceback" not in result["msg"]


def test_secrets_are_scrubbed_from_unexpected_errors(capsys, session):
    token = make_jwt(jti="runtime-token")
    add_identity(session, token=token)
    session.add("GET", V1, make_response(200, {}))

    def body(module):
        module.client.get("/users")
        raise RuntimeError("boom %s and %s" % (SECRET, token))

    result = run(capsys, {"tenant_id": TENANT, "client_id": CLIENT, "client_secret": SECRET}, body)
    assert result["_rc"] == 1 and result["auth_method"] == "client_secret"
    assert SECRET not in result["_raw"] and token not in result["_raw"]
    assert result["msg"] == "Unexpected error in entra.pim: RuntimeError: boom ******** and ********. Please report it."


def test_secrets_are_scrubbed_from_pim_errors_and_results(capsys, session):
    def body(module):
        raise GraphError("Graph echoed %s" % SECRET, code="X")

    result = run(capsys, {"access_token": make_jwt(), "client_secret": SECRET}, body)
    assert SECRET not in result["_raw"] and "********" in result["msg"]


def test_validate_certs_false_warns_every_run(capsys, session):
    for dummy in range(2):
        result = run(capsys, {"access_token": make_jwt(), "validate_certs": False}, lambda module: {"changed": False})
        assert any("validate_certs is false" in w for w in warnings_of(result))
        ansible_warnings._global_warnings.clear()


def test_no_warning_with_validate_certs_true(capsys, session):
    result = run(capsys, {"access_token": make_jwt()}, lambda module: {"changed": False})
    assert warnings_of(result) == []


def test_retries_show_as_warnings_at_vvv(capsys, session):
    throttled, ok = make_response(429, {}, {"Retry-After": "0"}), make_response(200, {})
    session.add("GET", V1, throttled, ok, throttled, ok)

    def body(module):
        module.client.get("/users")
        return {"changed": False, "stats": module.client.stats}

    quiet = run(capsys, {"access_token": make_jwt()}, body)
    assert warnings_of(quiet) == [] and quiet["stats"]["retries"] == 1
    loud = run(capsys, {"access_token": make_jwt(), "_ansible_verbosity": 3}, body)
    assert any("GET /users answered 429; retry 1 of 5" in w for w in warnings_of(loud))


def test_module_options_merge_with_the_shared_options(capsys, session):
    result = run(
        capsys,
        {"access_token": make_jwt(), "state": "absent", "max_retries": 0},
        lambda m: {"p": [m.params["state"], m.params["max_retries"], m.params["auth_method"]]},
    )
    assert result["p"] == ["absent", 0, "auto"]


def test_missing_library_fails_clearly(capsys, session, monkeypatch):
    monkeypatch.setattr(_module, "HAS_MSAL", False)
    monkeypatch.setattr(_module, "MSAL_IMPORT_ERROR", "ImportError: No module named 'msal'")
    result = run(capsys, {"access_token": make_jwt()}, lambda module: {"changed": False})
    assert result["_rc"] == 1 and "msal" in result["msg"]


# ------------------------------------------------------------------ issue 14, point 6: refused by type

NESTED_SPEC = dict(
    grants=dict(
        type="list",
        elements="dict",
        options=dict(
            principal=dict(type="str", required=True), role=dict(type="str"), secret=dict(type="str", no_log=True)
        ),
    ),
    boundary=dict(type="dict", options=dict(principals=dict(type="list", elements="str"))),
    names=dict(type="list", elements="str", aliases=["name"]),
)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"grants": [{"principal": ["alice", "bob"]}]}, "grants[0].principal must be a single string, got a list"),
        ({"grants": [{"principal": "a", "role": {"name": "x"}}]}, "grants[0].role must be a single string, got a dict"),
        ({"grants": [{"principal": "a"}, None]}, "grants[1] is null"),
        ({"boundary": {"principals": ["a", ["b"]]}}, "boundary.principals[1] must be a string, got a list"),
        ({"name": [None]}, "name[0] must be a string, got null"),
        ({"boundary": {"principals": ["a", "  "]}}, "boundary.principals[1] is empty; remove it"),
    ],
)
def test_shape_errors_name_the_option_at_any_depth(params, message):
    errors = _module.shape_errors(NESTED_SPEC, params)
    assert len(errors) == 1 and errors[0].startswith(message), errors


def test_shape_errors_never_show_a_secret_value():
    errors = _module.shape_errors(NESTED_SPEC, {"grants": [{"principal": "a", "secret": ["hunter2-secret"]}]})
    assert errors == ["grants[0].secret must be a single string, got a list; give one value"]


def test_shape_errors_accept_what_ansible_converts_safely():
    ok = {"grants": [{"principal": "a", "role": 12}], "boundary": {"principals": ["a"]}, "names": "a,b"}
    assert _module.shape_errors(NESTED_SPEC, ok) == []


@pytest.mark.parametrize("value", [["User Administrator"], {"name": "User Administrator"}])
def test_a_list_or_dict_for_a_string_option_fails_before_the_task_runs(capsys, value):
    """A list given as role used to become the text "['User Administrator']" and be reported "not found"."""
    called = []
    result = run(capsys, {"role": value}, lambda m: called.append(m) or {})
    assert result["failed"] and result["msg"].startswith("role must be a single string, got a "), result["msg"]
    assert called == [] and "exception" not in result


@pytest.mark.parametrize(
    "args, message",
    [
        # Issue 14, point 7: a negative timeout was a ValueError from requests, a huge one an OverflowError.
        ({"request_timeout": -1}, "request_timeout -1 is out of range; expected a whole number of seconds from 1"),
        ({"request_timeout": 10**20}, "request_timeout 100000000000000000000 is out of range"),
        ({"request_timeout": 0}, "request_timeout 0 is out of range"),
        ({"max_retries": -1}, "max_retries -1 is out of range"),
        ({"max_retry_wait": -5}, "max_retry_wait -5 is out of range"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle '/nonexistent/ca.pem' is not a readable file"),
    ],
)
def test_connection_options_out_of_range_fail_before_the_task_runs(capsys, args, message):
    called = []
    result = run(capsys, dict({"access_token": make_jwt(), "role": "x"}, **args), lambda m: called.append(m) or {})
    assert result["failed"] and result["msg"].startswith(message), result["msg"]
    assert called == [] and "exception" not in result


def test_a_lone_surrogate_is_refused_by_name_not_a_traceback(capsys):
    """ansible-core raised UnicodeEncodeError logging such a value (a traceback, no message)."""
    called = []
    result = run(capsys, {"access_token": make_jwt(), "role": "alice\udcff"}, lambda m: called.append(m) or {})
    assert result["failed"] and result["msg"].startswith("role holds characters that are not valid Unicode")
    assert called == [] and "exception" not in result
