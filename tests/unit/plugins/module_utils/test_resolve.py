"""Resolvers: roles by name/id, principals by id/UPN/name, scopes; escaping and ambiguity."""

from __future__ import annotations

import re

import pytest
from ansible_collections.entra.pim.plugins.module_utils import _resolve
from ansible_collections.entra.pim.plugins.module_utils._errors import GraphError, InputError
from ansible_collections.entra.pim.plugins.module_utils._resolve import Resolver

ROLES = [
    {
        "id": "fe930be7-5e62-47db-91af-98c3a49a38b1",
        "displayName": "User Administrator",
        "templateId": "fe930be7-5e62-47db-91af-98c3a49a38b1",
        "isBuiltIn": True,
    },
    {
        "id": "62e90394-69f5-4237-9190-012177145e10",
        "displayName": "Global Administrator",
        "templateId": "62e90394-69f5-4237-9190-012177145e10",
        "isBuiltIn": True,
    },
    {
        "id": "fdd7a751-b60b-444a-984c-02652fe8fa1c",
        "displayName": "Groups Administrator",
        "templateId": "fdd7a751-b60b-444a-984c-02652fe8fa1c",
        "isBuiltIn": True,
    },
    {
        "id": "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
        "displayName": "Global Reader",
        "templateId": "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
        "isBuiltIn": True,
    },
    # a custom role whose id differs from its template id
    {
        "id": "aaaaaaaa-0000-4000-8000-000000000001",
        "displayName": "Contoso Helpdesk",
        "templateId": "bbbbbbbb-0000-4000-8000-000000000001",
        "isBuiltIn": False,
    },
]

USERS = [
    {
        "id": "10000000-0000-4000-8000-000000000002",
        "displayName": "Alice Anders",
        "userPrincipalName": "alice@contoso.example",
        "mail": "alice@contoso.example",
    },
    {
        "id": "10000000-0000-4000-8000-000000000004",
        "displayName": "Siobhan O'Brien",
        "userPrincipalName": "o'brien@contoso.example",
        "mail": "o'brien@contoso.example",
    },
]
GROUPS = [
    {"id": "20000000-0000-4000-8000-000000000001", "displayName": "PIM-Helpdesk", "isAssignableToRole": True},
    {"id": "20000000-0000-4000-8000-000000000004", "displayName": "Duplicate Team", "isAssignableToRole": False},
    {"id": "20000000-0000-4000-8000-000000000005", "displayName": "Duplicate Team", "isAssignableToRole": False},
]
SPS = [
    {
        "id": "30000000-0000-4000-8000-000000000004",
        "displayName": "Deploy Pipeline",
        "appId": "40000000-0000-4000-8000-000000000004",
    },
]
AUS = [{"id": "50000000-0000-4000-8000-000000000001", "displayName": "Sales AU"}]

_EQ = re.compile(r"(\w+) eq '((?:[^']|'')*)'")


def matches(flt, obj):
    """A tiny evaluator for the filters the resolver sends: `a eq 'x' [or b eq 'y']`.

    The literal is un-doubled only inside quotes, so an injection like `x' or 1 eq 1` stays a
    literal that matches nothing, as in Graph.
    """
    clauses = [c.strip() for c in re.split(r"\s+or\s+(?=(?:[^']*'[^']*')*[^']*$)", flt)]
    for clause in clauses:
        match = _EQ.fullmatch(clause)
        assert match, "unexpected filter clause %r" % clause
        field, literal = match.group(1), match.group(2).replace("''", "'")
        if obj.get(field) == literal:
            return True
    return False


class FakeClient:
    """Records every call; answers from the tables above like Graph would."""

    graph_url = "https://fake.graph"

    def __init__(self, roles=None):
        self.calls = []
        self.roles = ROLES if roles is None else roles
        self.tables = {
            "/users": USERS,
            "/groups": GROUPS,
            "/servicePrincipals": SPS,
            "/directory/administrativeUnits": AUS,
        }
        self.fail = {}

    def list(self, path, params=None):
        self.calls.append(("GET", path, dict(params or {})))
        if path in self.fail:
            raise self.fail[path]
        if path == _resolve.ROLE_DEFINITIONS:
            return list(self.roles)
        return [o for o in self.tables[path] if matches(params["$filter"], o)]

    def post(self, path, body, params=None, idempotent=False):
        self.calls.append(("POST", path, body))
        assert path == "/directoryObjects/getByIds"
        kinds = {"user": USERS, "group": GROUPS, "servicePrincipal": SPS}
        out = []
        for kind in body.get("types") or kinds:
            for obj in kinds[kind]:
                if obj["id"] in body["ids"]:
                    out.append(dict(obj, **{"@odata.type": "#microsoft.graph." + kind}))
        return {"value": out}

    def batch(self, requests):
        self.calls.append(("BATCH", len(requests)))
        out = []
        for req in requests:
            path, dummy, query = req["url"].partition("?")
            from urllib.parse import parse_qsl

            params = dict(parse_qsl(query))
            out.append({"id": req["id"], "status": 200, "body": {"value": self.list(path, params)}})
        return out

    def raise_for_item(self, resp):
        return resp


@pytest.fixture(autouse=True)
def _clear_role_cache():
    _resolve._ROLE_CACHE.clear()
    yield
    _resolve._ROLE_CACHE.clear()


# ------------------------------------------------------------------ roles


def test_role_by_name_is_case_insensitive_and_cached():
    client = FakeClient()
    res = Resolver(client)
    assert res.role("user administrator").id == "fe930be7-5e62-47db-91af-98c3a49a38b1"
    assert res.role("  GLOBAL Reader ").display_name == "Global Reader"
    assert Resolver(client).role("Groups Administrator").is_built_in
    # the list was read once, with $select, for the whole run
    assert client.calls == [("GET", _resolve.ROLE_DEFINITIONS, {"$select": "id,displayName,templateId,isBuiltIn"})]


def test_role_by_id_and_template_id():
    res = Resolver(FakeClient())
    assert res.role("AAAAAAAA-0000-4000-8000-000000000001").display_name == "Contoso Helpdesk"
    assert res.role("bbbbbbbb-0000-4000-8000-000000000001").id == "aaaaaaaa-0000-4000-8000-000000000001"
    assert res.role_by_id("62e90394-69f5-4237-9190-012177145e10").display_name == "Global Administrator"
    assert res.role_by_id("00000000-0000-4000-8000-000000000000") is None
    assert res.role_by_id(None) is None


def test_unknown_role_suggests_close_matches():
    with pytest.raises(InputError) as err:
        Resolver(FakeClient()).role("User Adminstrator")
    assert err.value.msg.startswith(
        "role 'User Adminstrator' not found among 5 role definitions; did you mean 'User Administrator'"
    )
    with pytest.raises(InputError) as err:
        Resolver(FakeClient()).role("Nothing Like It")
    assert err.value.msg == "role 'Nothing Like It' not found among 5 role definitions"


def test_unknown_role_id_and_empty_role():
    with pytest.raises(InputError, match="role id '00000000-0000-4000-8000-000000000009' matches no role definition"):
        Resolver(FakeClient()).role("00000000-0000-4000-8000-000000000009")
    with pytest.raises(InputError, match="role is empty"):
        Resolver(FakeClient()).role("  ")


def test_duplicate_role_names_are_an_error():
    roles = ROLES + [dict(ROLES[0], id="cccccccc-0000-4000-8000-000000000001", isBuiltIn=False)]
    with pytest.raises(InputError) as err:
        Resolver(FakeClient(roles)).role("User Administrator")
    assert "matches 2 role definitions" in err.value.msg and "cccccccc-0000-4000-8000-000000000001" in err.value.msg


def test_roles_bulk_uses_one_read():
    client = FakeClient()
    got = Resolver(client).roles(["Global Reader", "fe930be7-5e62-47db-91af-98c3a49a38b1"])
    assert [r.display_name for r in got] == ["Global Reader", "User Administrator"]
    assert len(client.calls) == 1


# ------------------------------------------------------------------ principals


def test_principal_by_object_id_tells_the_type():
    client = FakeClient()
    got = Resolver(client).principal("20000000-0000-4000-8000-000000000001")
    assert got == _resolve.Principal("20000000-0000-4000-8000-000000000001", "group", "PIM-Helpdesk", None, None, True)
    assert client.calls == [
        (
            "POST",
            "/directoryObjects/getByIds",
            {"ids": ["20000000-0000-4000-8000-000000000001"], "types": ["user", "group", "servicePrincipal"]},
        )
    ]


def test_principal_guid_falls_back_to_app_id():
    client = FakeClient()
    got = Resolver(client).principal("40000000-0000-4000-8000-000000000004")
    assert (got.type, got.id, got.app_id) == (
        "service_principal",
        "30000000-0000-4000-8000-000000000004",
        SPS[0]["appId"],
    )
    assert client.calls[-1] == (
        "GET",
        "/servicePrincipals",
        {"$filter": "appId eq '40000000-0000-4000-8000-000000000004'", "$select": "id,displayName,appId"},
    )


def test_principal_by_upn_with_apostrophe_is_escaped():
    client = FakeClient()
    got = Resolver(client).principal("o'brien@contoso.example")
    assert (got.type, got.upn) == ("user", "o'brien@contoso.example")
    assert client.calls == [
        (
            "GET",
            "/users",
            {
                "$filter": "userPrincipalName eq 'o''brien@contoso.example' or mail eq 'o''brien@contoso.example'",
                "$select": "id,displayName,userPrincipalName,mail",
            },
        )
    ]


@pytest.mark.parametrize("value", ["x' or 1 eq 1", "x' or displayName ne '", "alice@contoso.example' or '1' eq '1"])
def test_injection_matches_nothing(value):
    with pytest.raises(InputError) as err:
        Resolver(FakeClient()).principal(value)
    assert "not found" in err.value.msg
    assert "'%s'" % value in err.value.msg


def test_group_name_ambiguity_lists_candidates():
    with pytest.raises(InputError) as err:
        Resolver(FakeClient()).principal("Duplicate Team")
    assert err.value.msg == (
        "principal 'Duplicate Team' is ambiguous: 2 objects match: "
        "'Duplicate Team' (group, 20000000-0000-4000-8000-000000000004), "
        "'Duplicate Team' (group, 20000000-0000-4000-8000-000000000005); "
        "give the object id (or set principal_type)"
    )


def test_name_lookup_batches_groups_and_service_principals():
    client = FakeClient()
    got = Resolver(client).principal("Deploy Pipeline")
    assert got.type == "service_principal"
    assert client.calls[0] == ("BATCH", 2)


def test_principal_type_narrows_the_search():
    client = FakeClient()
    got = Resolver(client).principal("PIM-Helpdesk", "group")
    assert got.role_assignable is True
    assert [c[1] for c in client.calls] == ["/groups"]
    with pytest.raises(InputError, match="^service principal 'PIM-Helpdesk' not found"):
        Resolver(FakeClient()).principal("PIM-Helpdesk", "service_principal")
    with pytest.raises(InputError, match="principal_type 'robot' is not one of"):
        Resolver(FakeClient()).principal("x", "robot")
    with pytest.raises(InputError, match="principal is empty"):
        Resolver(FakeClient()).principal("")
    # a user by display name when the type says so
    assert Resolver(FakeClient()).principal("Alice Anders", "user").upn == "alice@contoso.example"


def test_unknown_principal_guid():
    with pytest.raises(InputError, match="principal '10000000-0000-4000-8000-0000000000ff' not found"):
        Resolver(FakeClient()).principal("10000000-0000-4000-8000-0000000000ff")


def test_principals_by_ids_in_bulk():
    client = FakeClient()
    got = Resolver(client).principals_by_ids(
        ["10000000-0000-4000-8000-000000000002", "30000000-0000-4000-8000-000000000004", "not-a-guid"]
    )
    assert {p.type for p in got.values()} == {"user", "service_principal"}
    assert len(client.calls) == 1


# ------------------------------------------------------------------ scopes and ids


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "/"),
        ("/", "/"),
        (
            "/administrativeUnits/50000000-0000-4000-8000-000000000001",
            "/administrativeUnits/50000000-0000-4000-8000-000000000001",
        ),
        (
            "/administrativeunits/50000000-0000-4000-8000-00000000000A/",
            "/administrativeUnits/50000000-0000-4000-8000-00000000000a",
        ),
        ("50000000-0000-4000-8000-000000000001", "/administrativeUnits/50000000-0000-4000-8000-000000000001"),
        ("/41000000-0000-4000-8000-000000000001", "/41000000-0000-4000-8000-000000000001"),
        ("Sales AU", "/administrativeUnits/50000000-0000-4000-8000-000000000001"),
    ],
)
def test_directory_scope(value, expected):
    assert Resolver(FakeClient()).directory_scope(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("/administrativeUnits/not-a-guid", "directory_scope administrative unit id 'not-a-guid' is not a valid GUID"),
        ("/foo/bar", "directory_scope object id 'foo/bar' is not a valid GUID"),
        (
            "/administrativeUnits/../../users",
            "directory_scope administrative unit id '../../users' is not a valid GUID",
        ),
        ("Nowhere AU", "directory_scope 'Nowhere AU' is neither '/', '/administrativeUnits/{id}' nor the name"),
    ],
)
def test_directory_scope_errors(value, message):
    with pytest.raises(InputError) as err:
        Resolver(FakeClient()).directory_scope(value)
    assert err.value.msg.startswith(message)


def test_directory_scope_name_without_permission():
    client = FakeClient()
    client.fail["/directory/administrativeUnits"] = GraphError("denied", status=403, code="Authorization_RequestDenied")
    with pytest.raises(InputError, match="reading administrative units was refused"):
        Resolver(client).directory_scope("Sales AU")


def test_require_guid_and_app_scope():
    assert _resolve.require_guid("ABCDEF00-0000-4000-8000-000000000001", "x") == "abcdef00-0000-4000-8000-000000000001"
    with pytest.raises(InputError, match="principal id '../users' is not a valid GUID"):
        _resolve.require_guid("../users", "principal id")
    assert _resolve.app_scope(None) is None
    assert _resolve.app_scope(" /apps/x ") == "/apps/x"
    with pytest.raises(InputError, match="app_scope is empty"):
        _resolve.app_scope("  ")


def test_batch_url_encoding():
    req = Resolver(FakeClient()).principal_requests("o'brien@contoso.example")[0][1]
    assert req["url"] == (
        "/users?$filter=userPrincipalName%20eq%20'o''brien@contoso.example'%20or%20mail%20eq%20'o''brien@contoso.example'"
        "&$select=id,displayName,userPrincipalName,mail"
    )
    assert _resolve.batch_item(req, 7) == {"id": "7", "method": "GET", "url": req["url"]}


# ------------------------------------------------------------------ issue 14, point 3: no silent widening


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_an_empty_directory_scope_is_refused_not_read_as_the_tenant(blank):
    with pytest.raises(InputError) as err:
        _resolve.directory_scope_local(blank)
    assert err.value.msg.startswith("directory_scope is empty") and "'/'" in err.value.msg
    with pytest.raises(InputError) as err:
        _resolve.scope_option(blank, "grants[2].directory_scope")
    assert err.value.msg.startswith("grants[2].directory_scope is empty")


def test_only_an_omitted_scope_or_slash_means_the_tenant():
    assert _resolve.directory_scope_local(None) == "/"
    assert _resolve.directory_scope_local("/") == "/"
    assert _resolve.directory_scope_local(" / ") == "/"


def test_the_resolver_refuses_an_empty_scope_before_any_request():
    client = FakeClient()
    with pytest.raises(InputError):
        Resolver(client).directory_scope("")
    assert client.calls == []
