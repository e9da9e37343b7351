"""OData query options over plain dicts: $filter, $select, $expand, $top, $count, $orderby, paging.

``$filter`` is parsed by the ``odata-query`` package (its lexer and parser produce an AST);
this module only evaluates that AST against dicts. Choices where Graph's docs are silent
(README "OData"):

* String comparisons (eq, ne, in, gt..., startswith, endswith, contains) are
  case-insensitive, as directory queries are in Entra.
* Property names are matched case-insensitively. A name that is not a property of the
  resource (per ``filterable``, or else per the keys the items carry) is a 400 BadRequest.
* ``$top`` is a page size (as on Graph's directory lists): the smaller of ``$top`` and the
  sandbox page size is used, and ``@odata.nextLink`` continues the listing.
* ``@odata.nextLink`` carries an opaque ``$skiptoken``; the other options are kept.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote

from odata_query import ast as A
from odata_query.exceptions import ODataException
from odata_query.grammar import ODataLexer, ODataParser

from pim_emulator.clock import parse_datetime
from pim_emulator.errors import bad_request

SANDBOX_ONLY_KEYS = ("password",)  # never returned by Graph routes
KNOWN_OPTIONS = {"$filter", "$select", "$expand", "$top", "$skiptoken", "$count", "$orderby", "$format", "$skip"}
MAX_TOP = 999
# The deepest $expand path accepted: ``policy($expand=rules)`` is 2, the deepest the Graph pages
# in the reference describe. A deeper one is refused before any work (README "OData", $expand).
MAX_EXPAND_DEPTH = 2


# --------------------------------------------------------------------------- $filter


_LITERAL_TOKENS = frozenset(
    {"NULL", "INTEGER", "DECIMAL", "STRING", "BOOLEAN", "GUID", "DATE", "TIME", "DATETIME", "DURATION"}
)


def _one_value_lists(tokens):
    """Let ``prop in ('x')`` through: odata-query reads a one-item list only as ``('x',)``
    (it keeps ``('x')`` for a parenthesised expression), while Graph accepts ``in ('x')``.
    After ``in``, ``(`` one literal ``)`` gets the trailing comma the parser wants."""
    tokens = list(tokens)
    out = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        out.append(tok)
        i += 1
        if tok.type != "IN":
            continue
        j = i
        while j < len(tokens) and tokens[j].type == "WS":
            j += 1
        if j >= len(tokens) or tokens[j].type != "(":
            continue
        k = j + 1
        while k < len(tokens) and tokens[k].type == "WS":
            k += 1
        if k >= len(tokens) or tokens[k].type not in _LITERAL_TOKENS:
            continue
        m = k + 1
        while m < len(tokens) and tokens[m].type == "WS":
            m += 1
        if m >= len(tokens) or tokens[m].type != ")":
            continue
        comma = copy.copy(tokens[m])
        comma.type, comma.value = ",", ","
        out.extend(tokens[i:m])
        out.append(comma)
        out.append(tokens[m])
        i = m + 1
    return iter(out)


# The deepest $filter expression accepted. Its evaluation recurses once per level, and a chain
# of 3000 ``and`` terms (a 40 kB URL) is 3000 levels: it ended in RecursionError (a 500).
MAX_FILTER_DEPTH = 100


def _ast_depth(tree) -> int:
    """Depth of an odata-query AST, without recursion (lists of nodes count as one level)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_FILTER_DEPTH:
            break
        for value in vars(node).values():
            if isinstance(value, A._Node):
                stack.append((value, depth + 1))
            elif isinstance(value, list | tuple):
                stack.extend((v, depth + 1) for v in value if isinstance(v, A._Node))
    return deepest


@lru_cache(maxsize=512)
def parse_filter(text: str):
    try:
        tree = ODataParser().parse(_one_value_lists(ODataLexer().tokenize(text)))
    except ODataException as e:
        token = getattr(e, "token", None)
        if getattr(e, "eof", False):
            detail = "the expression ends unexpectedly"
        elif token is not None and getattr(token, "value", None) is not None:
            detail = f"syntax error at position {getattr(token, 'index', '?')} near '{str(token.value)[:40]}'"
        else:
            detail = _short(e)
        raise bad_request(f"Invalid filter clause: {detail}.") from None
    except Exception as e:  # the lexer/parser may raise other errors on odd input
        raise bad_request(f"Invalid filter clause: {_short(e)}") from None
    if _ast_depth(tree) > MAX_FILTER_DEPTH:
        raise bad_request(
            f"Invalid filter clause: the expression is nested deeper than {MAX_FILTER_DEPTH} levels "
            "(each and/or adds one)."
        )
    return tree


def _short(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _lookup(item, name):
    """Case-insensitive property lookup -> (found, value)."""
    if not isinstance(item, dict):
        return False, None
    if name in item:
        return True, item[name]
    low = name.lower()
    for k, v in item.items():
        if k.lower() == low:
            return True, v
    return False, None


def _top_identifiers(node, bound=frozenset()):
    """Yield the first path segment of every property reference outside lambda variables."""
    if isinstance(node, A.Identifier):
        if node.name not in bound:
            yield node.name
    elif isinstance(node, A.Attribute):
        yield from _top_identifiers(node.owner, bound)
    elif isinstance(node, A.Compare | A.BoolOp):
        yield from _top_identifiers(node.left, bound)
        yield from _top_identifiers(node.right, bound)
    elif isinstance(node, A.UnaryOp):
        yield from _top_identifiers(node.operand, bound)
    elif isinstance(node, A.Call):
        for arg in node.args:
            yield from _top_identifiers(arg, bound)
    elif isinstance(node, A.List):
        for v in node.val:
            yield from _top_identifiers(v, bound)
    elif isinstance(node, A.CollectionLambda):
        yield from _top_identifiers(node.owner, bound)
        if node.lambda_ is not None:
            yield from _top_identifiers(node.lambda_.expression, bound | {node.lambda_.identifier.name})
    elif isinstance(node, A.BinOp):
        yield from _top_identifiers(node.left, bound)
        yield from _top_identifiers(node.right, bound)


class _Evaluator:
    def __init__(self, ctx, expanders):
        self.ctx = ctx
        self.expanders = {k.lower(): v for k, v in (expanders or {}).items()}

    def prop(self, item, name, env):
        if name in env:
            return env[name]
        found, value = _lookup(item, name)
        if not found and name.lower() in self.expanders:
            value = self.expanders[name.lower()](self.ctx, item, {})
        return value

    def value(self, node, item, env):
        if isinstance(node, A.Identifier):
            return self.prop(item, node.name, env)
        if isinstance(node, A.Attribute):
            owner = self.value(node.owner, item, env)
            return _lookup(owner, node.attr)[1] if isinstance(owner, dict) else None
        if isinstance(node, A.Null):
            return None
        if isinstance(node, A.String):
            return node.val
        if isinstance(node, A.Boolean):
            return node.val.lower() == "true"
        if isinstance(node, A.Integer):
            return int(node.val)
        if isinstance(node, A.Float):
            return float(node.val)
        if isinstance(node, A.GUID):
            return node.val.lower()
        if isinstance(node, A.DateTime):
            return parse_datetime(node.val)
        if isinstance(node, A.Date | A.Time | A.Duration):
            return node.val
        if isinstance(node, A.List):
            return [self.value(v, item, env) for v in node.val]
        if isinstance(node, A.Compare):
            return self.compare(node, item, env)
        if isinstance(node, A.BoolOp):
            left = self.truth(node.left, item, env)
            if isinstance(node.op, A.And):
                return left and self.truth(node.right, item, env)
            return left or self.truth(node.right, item, env)
        if isinstance(node, A.UnaryOp):
            if isinstance(node.op, A.Not):
                return not self.truth(node.operand, item, env)
            v = self.value(node.operand, item, env)
            return -v if isinstance(v, int | float) else None
        if isinstance(node, A.Call):
            return self.call(node, item, env)
        if isinstance(node, A.CollectionLambda):
            coll = self.value(node.owner, item, env) or []
            if not isinstance(coll, list):
                return False
            lam = node.lambda_
            if lam is None:
                return bool(coll) if isinstance(node.operator, A.Any) else True
            results = (self.truth(lam.expression, item, {**env, lam.identifier.name: x}) for x in coll)
            return any(results) if isinstance(node.operator, A.Any) else all(results)
        raise bad_request(f"Invalid filter clause: unsupported expression {type(node).__name__}.")

    def truth(self, node, item, env) -> bool:
        return self.value(node, item, env) is True

    def call(self, node, item, env):
        name = node.func.name.lower()
        args = [self.value(a, item, env) for a in node.args]
        if name in ("startswith", "endswith", "contains"):
            if len(args) != 2:
                raise bad_request(f"Invalid filter clause: {name} takes 2 arguments.")
            a, b = args
            if not isinstance(a, str) or not isinstance(b, str):
                return False
            a, b = a.casefold(), b.casefold()
            return a.startswith(b) if name == "startswith" else a.endswith(b) if name == "endswith" else b in a
        if name in ("tolower", "toupper", "length", "trim") and len(args) == 1:
            a = args[0]
            if not isinstance(a, str):
                return None
            return {"tolower": a.lower, "toupper": a.upper, "trim": a.strip}.get(name, lambda: len(a))()
        raise bad_request(f"Invalid filter clause: the function '{node.func.name}' is not supported.")

    def compare(self, node, item, env):
        left = self.value(node.left, item, env)
        right = self.value(node.right, item, env)
        op = node.comparator
        if isinstance(op, A.In):
            if not isinstance(right, list):
                raise bad_request("Invalid filter clause: 'in' needs a list.")
            return any(_eq(left, r) for r in right)
        if isinstance(op, A.Eq):
            return _eq(left, right)
        if isinstance(op, A.NotEq):
            return not _eq(left, right)
        if left is None or right is None:
            return False
        left, right = _coerce(left, right)
        try:
            if isinstance(op, A.Lt):
                return left < right
            if isinstance(op, A.LtE):
                return left <= right
            if isinstance(op, A.Gt):
                return left > right
            if isinstance(op, A.GtE):
                return left >= right
        except TypeError:
            return False
        raise bad_request("Invalid filter clause: unsupported operator.")


def _coerce(a, b):
    if isinstance(a, datetime) and isinstance(b, str):
        try:
            b = parse_datetime(b)
        except ValueError:
            return a, b
    elif isinstance(b, datetime) and isinstance(a, str):
        try:
            a = parse_datetime(a)
        except ValueError:
            return a, b
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold(), b.casefold()
    return a, b


def _eq(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    a, b = _coerce(a, b)
    return a == b


def _check_properties(tree, known: set[str] | None, type_name: str):
    if known is None:
        return
    lowered = {k.lower() for k in known}
    for name in _top_identifiers(tree):
        if name.lower() not in lowered:
            raise bad_request(f"Could not find a property named '{name}' on type '{type_name}'.")


_UNSET = object()


# --------------------------------------------------------------------------- indexed reads


class Source:
    """A stored collection seen through a view, for ``collection_response``.

    Passing a Source instead of a list lets a simple ``$filter`` be answered from the store's
    secondary indexes (``Tx.find``) instead of viewing every document. The answer is the same as
    the scan's: the index only narrows the candidates, which then go through the full filter in
    insertion order.

    * ``keep(doc)`` says whether a stored document (a read-only mirror object) is listed at all
      (e.g. not an expired schedule; default: every document), ``view(doc)`` turns a kept one
      into the item the API shows. Without ``$filter``/``$orderby`` only the page (and the first
      50 items, whose keys check ``$select``) is viewed.
    * ``indexed`` maps a property name of the items to the stored property it equals, for
      properties worth an index (``{"userPrincipalName": "userPrincipalName"}``).
    * ``known_keys()`` gives the property names of the whole collection's items (None when
      it has none), for the unknown-property check; needed only without ``filterable``.
    """

    def __init__(self, tx, collection: str, view, indexed=(), known_keys=None, keep=None):
        self.tx = tx
        self.collection = collection
        self.view = view
        self.keep = keep
        pairs = indexed.items() if isinstance(indexed, dict) else ((name, name) for name in indexed)
        self.indexed = {name.lower(): stored for name, stored in pairs}
        self._known_keys = known_keys

    def docs(self) -> list:
        """The kept documents (read-only), insertion order."""
        if self.keep is None:
            return self.tx.list(self.collection, copy=False)
        return [d for d in self.tx.iter(self.collection) if self.keep(d)]

    def all(self) -> list:
        return [self.view(d) for d in self.docs()]

    def lazy(self) -> _LazyViews:
        return _LazyViews(self.docs(), self.view)

    def by_ids(self, ids) -> list:
        out = []
        for doc_id in ids:
            doc = self.tx.peek(self.collection, doc_id)
            if doc is not None and (self.keep is None or self.keep(doc)):
                out.append(self.view(doc))
        return out

    def first(self):
        for doc in self.tx.iter(self.collection):
            if self.keep is None or self.keep(doc):
                return self.view(doc)
        return None

    def known_keys(self):
        if self._known_keys is not None:
            return self._known_keys()
        keys = set()
        for item in self.all():
            keys.update(item.keys())
        return keys or None

    def candidates(self, tree) -> list[str] | None:
        """Ids that may match ``tree`` (a superset of the matches, insertion order), or None
        when the filter has no indexable part and the whole collection must be scanned."""
        ids = self._plan(tree)
        return None if ids is None else self.tx.order(self.collection, ids)

    def _plan(self, node) -> set[str] | None:
        if isinstance(node, A.BoolOp):
            left, right = self._plan(node.left), self._plan(node.right)
            if isinstance(node.op, A.And):
                if left is None:
                    return right
                return left if right is None else left & right
            return None if left is None or right is None else left | right
        if not isinstance(node, A.Compare) or not isinstance(node.left, A.Identifier):
            return None
        stored = self.indexed.get(node.left.name.lower())
        if stored is None:
            return None
        if isinstance(node.comparator, A.Eq):
            values = [node.right]
        elif isinstance(node.comparator, A.In) and isinstance(node.right, A.List):
            values = node.right.val
        else:
            return None
        out: set[str] = set()
        for literal in values:
            if not isinstance(literal, A.String | A.GUID):
                return None  # other literals compare by type rules the index does not model
            out.update(self.tx.find(self.collection, stored, literal.val))
        return out


class _LazyViews:
    """A list of kept documents that views an item only when a slice asks for it."""

    def __init__(self, docs: list, view):
        self._docs = docs
        self._view = view
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self._docs)

    def __getitem__(self, index: slice) -> list:
        out = []
        for i in range(*index.indices(len(self._docs))):
            item = self._cache.get(i)
            if item is None:
                item = self._cache[i] = self._view(self._docs[i])
            out.append(item)
        return out


def apply_filter(
    ctx, items: list, text: str, expanders=None, filterable=None, type_name="microsoft.graph.entity", known_keys=_UNSET
):
    """Items for which ``$filter`` holds. ``known_keys`` (when given) are the property names of
    the whole collection, for the unknown-property check when ``filterable`` is None (an
    indexed read passes them because ``items`` are then only the index's candidates)."""
    tree = parse_filter(text)
    known = set(filterable) if filterable is not None else None
    if known is None and known_keys is not _UNSET:
        known = set(known_keys) if known_keys is not None else None
    elif known is None and items:
        known = set()
        for it in items:
            known.update(it.keys())
    if known is not None:
        known |= set(expanders or {})
    _check_properties(tree, known, type_name)
    ev = _Evaluator(ctx, expanders)
    return [it for it in items if ev.truth(tree, it, {})]


# --------------------------------------------------------------------------- $select / $expand


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses and quotes; blanks dropped."""
    out, depth, cur, quote_ = [], 0, [], False
    for ch in text:
        if ch == "'":
            quote_ = not quote_
        elif not quote_ and ch == "(":
            depth += 1
        elif not quote_ and ch == ")":
            depth -= 1
            if depth < 0:
                raise bad_request(f"Syntax error: unbalanced parentheses in '{text}'.")
        if ch == sep and depth == 0 and not quote_:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if depth != 0 or quote_:
        raise bad_request(f"Syntax error: unbalanced parentheses or quotes in '{text}'.")
    out.append("".join(cur).strip())
    return [p for p in out if p]


_EXPAND_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_./]*)\s*(?:\((.*)\))?$", re.S)


def parse_expand(text: str, depth: int = 1) -> list[tuple[str, dict]]:
    """``policy($expand=rules;$select=id),principal`` -> [("policy", {"$expand": "rules", "$select": "id"}), ...].

    ``depth`` is the level of ``text`` (1 for the request's own ``$expand``). A nested
    ``$expand`` is checked here, before any item is expanded, so that a path deeper than
    ``MAX_EXPAND_DEPTH`` costs one scan of the text and answers 400.
    """
    if depth > MAX_EXPAND_DEPTH:
        raise bad_request(
            f"The request includes a $expand path which is too deep. The maximum depth allowed is {MAX_EXPAND_DEPTH}."
        )
    out = []
    for part in split_top(text, ","):
        m = _EXPAND_ITEM.match(part)
        if not m:
            raise bad_request(f"Parsing OData Select and Expand failed: invalid expand item '{part}'.")
        name, inner = m.group(1), m.group(2)
        options: dict[str, str] = {}
        if inner:
            for opt in split_top(inner, ";"):
                key, eq, value = opt.partition("=")
                key = key.strip().lower()
                if not eq or key not in ("$select", "$expand", "$filter", "$top"):
                    raise bad_request(f"Parsing OData Select and Expand failed: invalid option '{opt}' in '{part}'.")
                options[key] = value.strip()
            if options.get("$expand"):
                parse_expand(options["$expand"], depth + 1)
        out.append((name, options))
    return out


def parse_select(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    for n in names:
        if not re.fullmatch(r"[A-Za-z_@][A-Za-z0-9_.@]*", n) and n != "*":
            raise bad_request(f"Parsing OData Select and Expand failed: invalid select item '{n}'.")
    return names


def _strip_private(item: dict) -> dict:
    for k in SANDBOX_ONLY_KEYS:
        item.pop(k, None)
    return item


def shape(ctx, item: dict, options: dict, expanders=None, known_keys=None) -> dict:
    """Apply ``$expand`` then ``$select`` (keeping ``id`` and ``@odata.type``) to one dict."""
    item = _strip_private(dict(item))
    expanders = expanders or {}
    by_lower = {k.lower(): (k, fn) for k, fn in expanders.items()}
    expanded = []
    if options.get("$expand"):
        for name, nested in parse_expand(options["$expand"]):
            if name == "*":
                raise bad_request("Parsing OData Select and Expand failed: '*' is not supported in $expand.")
            hit = by_lower.get(name.lower())
            if hit is None:
                raise bad_request(f"Could not find a navigation property named '{name}' on this resource.")
            key, fn = hit
            value = fn(ctx, item, nested)
            if nested.get("$select"):
                sel = parse_select(nested["$select"])
                if isinstance(value, dict):
                    value = _select(value, sel, [])
                elif isinstance(value, list):
                    value = [_select(v, sel, []) if isinstance(v, dict) else v for v in value]
            item[key] = value
            expanded.append(key)
    if options.get("$select"):
        sel = parse_select(options["$select"])
        known = set(known_keys) if known_keys is not None else set(item.keys())
        lowered = {k.lower() for k in known} | {k.lower() for k in expanders}
        for n in sel:
            if n != "*" and n.lower() not in lowered:
                raise bad_request(f"Could not find a property named '{n}' on this resource.")
        item = _select(item, sel, expanded)
    return item


def _select(item: dict, names: list[str], keep: list[str]) -> dict:
    if "*" in names:
        return item
    wanted = {n.lower() for n in names} | {k.lower() for k in keep} | {"id", "@odata.type"}
    return {k: v for k, v in item.items() if k.lower() in wanted}


def _context_suffix(options: dict) -> str:
    parts = []
    if options.get("$select"):
        parts.extend(parse_select(options["$select"]))
    if options.get("$expand"):
        for name, nested in parse_expand(options["$expand"]):
            inner = _context_suffix(nested)  # once: calling it twice per level doubled the work at every level
            parts.append(f"{name}({inner[1:-1]})")
    return "(" + ",".join(parts) + ")" if parts else ""


# --------------------------------------------------------------------------- paging & responses


def _encode_token(offset: int) -> str:
    raw = json.dumps({"o": offset, "v": 1}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        offset = int(data["o"])
        if offset < 0:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error, json.JSONDecodeError):
        raise bad_request("Invalid skip token.") from None


def _int_option(query: dict, name: str, low: int, high: int | None):
    text = query.get(name)
    if text is None:
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise bad_request(f"Invalid value '{text}' for query option '{name}'.") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise bad_request(f"Invalid value '{text}' for query option '{name}': it must be {bound}.")
    return value


def _sort_key(value):
    if value is None:
        return (0, "")
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value).casefold())


def check_options(query: dict) -> None:
    """Refuse unknown options, and a too deep or malformed ``$expand``, before any item is read."""
    for k in query:
        if k.startswith("$") and k not in KNOWN_OPTIONS:
            raise bad_request(f"Query option '{k}' is not supported.")
    if query.get("$expand"):
        parse_expand(query["$expand"])


def collection_response(ctx, items, context_path, expanders=None, filterable=None, paged=True) -> dict:
    q = ctx.query
    check_options(q)
    if isinstance(items, Source):
        source = items
        if q.get("$filter"):
            tree = parse_filter(q["$filter"])
            ids = source.candidates(tree)
            first = source.first()
            type_name = _type_name([first] if first is not None else [])
            known = source.known_keys() if filterable is None and first is not None else None
            items = source.all() if ids is None else source.by_ids(ids)
            items = apply_filter(ctx, items, q["$filter"], expanders, filterable, type_name, known_keys=known)
        elif q.get("$orderby"):
            items = source.all()
        else:  # a page of a plain listing: view only what is shown
            items = source.lazy()
    else:
        items = list(items)
        type_name = _type_name(items)
        if q.get("$filter"):
            items = apply_filter(ctx, items, q["$filter"], expanders, filterable, type_name)
    if q.get("$orderby"):
        for clause in reversed(split_top(q["$orderby"], ",")):
            prop, _, direction = clause.partition(" ")
            direction = direction.strip().lower() or "asc"
            if direction not in ("asc", "desc"):
                raise bad_request(f"Invalid $orderby clause '{clause}'.")
            items.sort(key=lambda it, p=prop: _sort_key(_lookup(it, p)[1]), reverse=direction == "desc")
    total = len(items)
    top = _int_option(q, "$top", 0, MAX_TOP)
    skip = _int_option(q, "$skip", 0, None) or 0
    # An unpaged collection still honours $top, as Graph does.
    page = int(ctx.settings.get("page_size") or 100) if paged else max(len(items) - (skip or 0), 1)
    if top is not None:
        page = min(page, top)
    offset = _decode_token(q["$skiptoken"]) if q.get("$skiptoken") else skip
    window = items[offset : offset + page] if page > 0 else []
    known_keys = set()
    for it in items[:50]:
        known_keys.update(it.keys())
    options = {"$select": q.get("$select"), "$expand": q.get("$expand")}
    if options["$select"] and not items:
        known_keys = None  # nothing to check names against; accept
    shaped = [shape(ctx, it, options, expanders, known_keys=known_keys if known_keys else None) for it in window]
    body = {"@odata.context": f"{ctx.base_url}/v1.0/$metadata#{context_path}{_context_suffix(options)}"}
    if str(q.get("$count", "")).lower() == "true":
        body["@odata.count"] = total
    if page > 0 and offset + page < total:
        body["@odata.nextLink"] = next_link(ctx, offset + page)
    body["value"] = shaped
    return body


def entity_response(ctx, item, context_path, expanders=None) -> dict:
    check_options(ctx.query)
    options = {"$select": ctx.query.get("$select"), "$expand": ctx.query.get("$expand")}
    shaped = shape(ctx, item, options, expanders)
    suffix = _context_suffix(options)
    return {"@odata.context": f"{ctx.base_url}/v1.0/$metadata#{context_path}{suffix}/$entity", **shaped}


def next_link(ctx, offset: int) -> str:
    keep = []
    for key in ("$filter", "$select", "$expand", "$top", "$count", "$orderby"):
        if ctx.query.get(key) is not None:
            keep.append(f"{key}={quote(str(ctx.query[key]), safe=',()/:@')}")
    for key, value in ctx.query.items():  # non-$ parameters (e.g. function arguments) are kept too
        if not key.startswith("$"):
            keep.append(f"{quote(key)}={quote(str(value), safe='')}")
    keep.append(f"$skiptoken={_encode_token(offset)}")
    path = quote(ctx.path, safe="/'()=,$:@")
    return f"{ctx.base_url}{path}?{'&'.join(keep)}"


def _type_name(items) -> str:
    for it in items[:1]:
        t = it.get("@odata.type")
        if isinstance(t, str):
            return t.lstrip("#")
    return "microsoft.graph.entity"
