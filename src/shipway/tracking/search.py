"""Run search: a small filter language, compiled to SQL expressions (never to SQL text).

Grammar (keywords are case-insensitive)::

    filter     := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | "(" or_expr ")" | comparison
    comparison := field op literal
                | field ["not"] "in" "(" literal ("," literal)* ")"
                | field "is" ["not"] "null"
    field      := ("metrics" | "params" | "tags" | "attributes") "." key | attribute
    key        := name characters (letters, digits, _ - / .) or a `backquoted key`
    op         := "=" | "==" | "!=" | "<" | "<=" | ">" | ">=" | "like" | "ilike"
    literal    := number | 'text' | "text"

``metrics.X`` is the latest value of metric X; ``params.X`` compares as a number when the
literal is a number and as text otherwise; ``attributes`` are ``id``, ``name``, ``status``,
``start_time``, ``end_time``, ``user`` and ``host`` (the prefix may be left out); times take
milliseconds or an ISO 8601 date. ``X is null`` means the run has no such metric, param or tag.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from shipway.core.errors import InvalidInput
from shipway.store import Store, schema
from shipway.tracking.experiments import experiment_id
from shipway.tracking.records import RunRecord, load_records, run_columns
from shipway.tracking.runs import STATUSES

T = TypeVar("T")
MAX_LIMIT = 10_000
MAX_OFFSET = 2**31

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<bq>`[^`]*`)
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<punct>[(),])
  | (?P<word>[A-Za-z_][\w\-/.]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "like", "ilike", "is", "null", "asc", "desc"}
_PREFIXES = {
    "metrics": "metrics",
    "metric": "metrics",
    "params": "params",
    "param": "params",
    "tags": "tags",
    "tag": "tags",
    "attributes": "attributes",
    "attribute": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
ATTRIBUTES = ("id", "name", "status", "start_time", "end_time", "user", "host")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int

    @property
    def word(self) -> str:
        return self.text.lower() if self.kind == "word" else ""


class Page(list[T], Generic[T]):
    """One page of results; pass ``next_page_token`` back to get the next (None at the end)."""

    next_page_token: str | None = None


def _error(source: str, token: Token | None, message: str, what: str = "filter") -> InvalidInput:
    pos = len(source) if token is None else token.pos
    width = 1 if token is None else max(1, len(token.text))
    found = "the end of the filter" if token is None else repr(token.text)
    pointer = f"\n  {source}\n  {' ' * pos}{'^' * width}"
    return InvalidInput(
        f"Bad {what} at position {pos} ({found}): {message}{pointer}",
        details={"position": pos, "token": None if token is None else token.text},
    )


def tokenize(source: str, what: str = "filter") -> list[Token]:
    tokens, pos = [], 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            bad = Token("bad", source[pos], pos)
            raise _error(source, bad, "unexpected character.", what)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    return tokens


@dataclass(frozen=True)
class Field:
    entity: str  # metrics | params | tags | attributes
    key: str
    token: Token


@dataclass(frozen=True)
class Comparison:
    field: Field
    op: str
    values: tuple[Any, ...]  # one literal, several for IN, none for IS NULL
    negate: bool = False


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or | not
    items: tuple[Any, ...]


class _Parser:
    def __init__(self, source: str, what: str = "filter") -> None:
        self.source = source
        self.what = what
        self.tokens = tokenize(source, what)
        self.i = 0

    def peek(self, offset: int = 0) -> Token | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self) -> Token | None:
        tok = self.peek()
        self.i += 1
        return tok

    def fail(self, message: str, token: Token | None = None) -> InvalidInput:
        return _error(self.source, token if token is not None else self.peek(), message, self.what)

    def parse_filter(self) -> Any:
        if not self.tokens:
            raise self.fail("the filter is empty.")
        node = self.or_expr()
        if self.peek() is not None:
            raise self.fail("expected 'and', 'or' or the end of the filter.")
        return node

    def or_expr(self) -> Any:
        items = [self.and_expr()]
        while (tok := self.peek()) is not None and tok.word == "or":
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_expr(self) -> Any:
        items = [self.unary()]
        while (tok := self.peek()) is not None and tok.word == "and":
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def unary(self) -> Any:
        tok = self.peek()
        if tok is not None and tok.word == "not":
            self.take()
            return BoolOp("not", (self.unary(),))
        if tok is not None and tok.text == "(":
            self.take()
            node = self.or_expr()
            close = self.take()
            if close is None or close.text != ")":
                raise self.fail(f"expected ')' to close the '(' at position {tok.pos}.", close)
            return node
        return self.comparison()

    def field(self) -> Field:
        tok = self.take()
        if tok is None or tok.kind != "word" or tok.word in _KEYWORDS:
            raise self.fail("expected a field such as metrics.auc, params.depth, tags.team or status.", tok)
        text = tok.text
        if "." in text:
            prefix, key = text.split(".", 1)
            entity = _PREFIXES.get(prefix.lower())
            if entity is None:
                raise self.fail(
                    f"unknown field prefix {prefix!r}; use metrics., params., tags. or attributes.",
                    tok,
                )
            if key == "":
                nxt = self.peek()
                if nxt is None or nxt.kind != "bq" or nxt.pos != tok.pos + len(text):
                    raise self.fail(f"expected a key after '{text}'.", nxt)
                self.take()
                key = nxt.text[1:-1]
                if not key:
                    raise self.fail("an empty `` key names nothing.", nxt)
        else:
            entity, key = "attributes", text
        if entity == "attributes":
            key = key.lower()
            if key == "run_id":
                key = "id"
            if key not in ATTRIBUTES:
                hint = f" (did you mean metrics.{text} or params.{text}?)" if "." not in text else ""
                raise self.fail(
                    f"unknown attribute {key!r}{hint}; attributes are {', '.join(ATTRIBUTES)}.", tok
                )
        return Field(entity, key, tok)

    def literal(self) -> tuple[Any, Token]:
        tok = self.take()
        if tok is None:
            raise self.fail("expected a number or a quoted 'text' value.", tok)
        if tok.kind == "num":
            integral = not any(c in tok.text for c in ".eE")
            number: int | float = int(tok.text) if integral else float(tok.text)
            if not -(2**63) <= number <= 2**63 - 1:  # also refuses inf from a literal like 1e400
                raise self.fail("the number is out of range.", tok)
            return number, tok
        if tok.kind == "str":
            body = tok.text[1:-1]
            return re.sub(r"\\(.)", r"\1", body), tok
        if tok.kind == "word" and tok.word in ("true", "false"):
            return tok.word.capitalize(), tok
        raise self.fail("expected a number or a quoted 'text' value (quote text with ' or \").", tok)

    def comparison(self) -> Comparison:
        fld = self.field()
        tok = self.take()
        if tok is None:
            raise self.fail(f"expected an operator after {fld.token.text!r}.", tok)
        word = tok.word
        if word == "is":
            negate = False
            nxt = self.take()
            if nxt is not None and nxt.word == "not":
                negate, nxt = True, self.take()
            if nxt is None or nxt.word != "null":
                raise self.fail("expected 'null' after 'is' / 'is not'.", nxt)
            return Comparison(fld, "is null", (), negate)
        negate = False
        if word == "not":
            negate, tok = True, self.take()
            if tok is None or tok.word != "in":
                raise self.fail("expected 'in' after 'not' (as in: status not in ('FAILED')).", tok)
            word = "in"
        if word == "in":
            opening = self.take()
            if opening is None or opening.text != "(":
                raise self.fail("expected '(' to start the list after 'in'.", opening)
            values = [self._checked(fld, "=", *self.literal())]
            while (sep := self.take()) is not None and sep.text == ",":
                values.append(self._checked(fld, "=", *self.literal()))
            if sep is None or sep.text != ")":
                raise self.fail("expected ',' or ')' in the 'in' list.", sep)
            return Comparison(fld, "in", tuple(values), negate)
        if tok.kind == "op":
            op = {"==": "=", "<>": "!="}.get(tok.text, tok.text)
        elif word in ("like", "ilike"):
            op = word
        else:
            raise self.fail(
                f"expected an operator (=, !=, <, <=, >, >=, like, ilike, in, is null) after "
                f"{fld.token.text!r}.",
                tok,
            )
        value = self._checked(fld, op, *self.literal())
        return Comparison(fld, op, (value,))

    def _checked(self, fld: Field, op: str, value: Any, tok: Token) -> Any:
        numeric = isinstance(value, int | float)
        if fld.entity == "metrics" and not numeric:
            raise self.fail(f"metric {fld.key!r} compares with numbers, not text.", tok)
        if op in ("like", "ilike") and numeric:
            raise self.fail(f"'{op}' takes a quoted pattern such as '%gbm%'.", tok)
        if fld.entity == "attributes":
            if fld.key in ("start_time", "end_time"):
                return _to_ms(value, lambda m: self.fail(m, tok))
            if numeric:
                raise self.fail(f"attribute {fld.key!r} compares with quoted text.", tok)
            if fld.key == "status":
                if value.upper() not in STATUSES:
                    raise self.fail(f"status is one of {', '.join(STATUSES)}.", tok)
                return value.upper()
        return value


def _to_ms(value: Any, fail: Any) -> int:
    if isinstance(value, int | float):
        return int(value)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{value!r} is neither milliseconds nor an ISO 8601 date.") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def parse_filter(source: str) -> Any:
    """Parse a filter into a tree, or raise :class:`InvalidInput` pointing at the bad token."""
    return _Parser(source).parse_filter()


# -- compiling to SQLAlchemy ------------------------------------------------------------------

_OPS = {
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
    "like": lambda c, v: c.like(v),
    "ilike": lambda c, v: c.ilike(v),
}


def _entity_column(entity: str, key: str, sample: Any) -> tuple[Any, Any]:
    """(table, column to compare) for a metric/param/tag, chosen by the literal's type."""
    table = {"metrics": schema.latest_metrics, "params": schema.params, "tags": schema.tags}[entity]
    if entity == "params":
        column = table.c.num if isinstance(sample, int | float) else table.c.value
    else:
        column = table.c.value
    return table, column


def compile_node(node: Any) -> Any:
    """A SQLAlchemy boolean expression over ``runs`` for a parsed filter."""
    runs = schema.runs
    if isinstance(node, BoolOp):
        parts = [compile_node(item) for item in node.items]
        return {"and": sa.and_, "or": sa.or_}[node.op](*parts) if node.op != "not" else sa.not_(parts[0])
    fld, op, values = node.field, node.op, node.values
    if fld.entity == "attributes":
        column = runs.c[fld.key]
        if op == "is null":
            expr = column.is_(None)
        elif op == "in":
            expr = column.in_(values)
        else:
            expr = _OPS[op](column, values[0])
        return sa.not_(expr) if node.negate else expr
    sample = values[0] if values else None
    table, column = _entity_column(fld.entity, fld.key, sample)
    base = [table.c.run_id == runs.c.id, table.c.key == fld.key]
    if op == "is null":
        present = sa.exists().where(*base)
        return present if node.negate else sa.not_(present)
    if op == "in":
        if fld.entity == "params":
            nums = [v for v in values if isinstance(v, int | float)]
            texts = [str(v) for v in values if not isinstance(v, int | float)]
            cond = sa.or_(
                *(
                    c
                    for c in (
                        table.c.num.in_(nums) if nums else None,
                        table.c.value.in_(texts) if texts else None,
                    )
                    if c is not None
                )
            )
        else:
            cond = column.in_([v if fld.entity == "metrics" else str(v) for v in values])
        expr = _runs_where(table, fld.key, cond)
        return sa.not_(expr) if node.negate else expr
    value = values[0]
    if fld.entity == "tags" and not isinstance(value, str):
        value = str(value)
    return _runs_where(table, fld.key, _OPS[op](column, value))


def _runs_where(table: Any, key: str, condition: Any) -> Any:
    # "id IN (runs whose KEY satisfies the condition)": the subquery is answered once from the
    # (key, value) index, where a correlated EXISTS would probe it once per run.
    return schema.runs.c.id.in_(sa.select(table.c.run_id).where(table.c.key == key, condition))


def parse_order_by(order_by: str | Sequence[str] | None) -> list[tuple[Field, bool]]:
    """Parse ``"metrics.auc desc, start_time"`` (or a list of such terms) into (field, descending)."""
    if order_by is None:
        return []
    terms = [order_by] if isinstance(order_by, str) else list(order_by)
    out = []
    for term in terms:
        if not isinstance(term, str):
            raise InvalidInput(f"order_by takes strings such as 'metrics.auc desc', not {term!r}.")
        for piece in term.split(","):
            if not piece.strip():
                continue
            parser = _Parser(piece.strip(), "order-by")
            fld = parser.field()
            direction = parser.take()
            descending = False
            if direction is not None:
                if direction.word not in ("asc", "desc"):
                    raise parser.fail("expected 'asc', 'desc' or the end of the term.", direction)
                descending = direction.word == "desc"
            if parser.peek() is not None:
                raise parser.fail("separate order-by terms with ','.")
            out.append((fld, descending))
    return out


def _order_clauses(query: Any, terms: list[tuple[Field, bool]]) -> tuple[Any, list[Any]]:
    runs = schema.runs
    clauses: list[Any] = []
    for n, (fld, descending) in enumerate(terms):
        if fld.entity == "attributes":
            cols = [runs.c[fld.key]]
        else:
            table = {
                "metrics": schema.latest_metrics,
                "params": schema.params,
                "tags": schema.tags,
            }[fld.entity].alias(f"ord{n}")
            query = query.outerjoin(table, sa.and_(table.c.run_id == runs.c.id, table.c.key == fld.key))
            cols = [table.c.num, table.c.value] if fld.entity == "params" else [table.c.value]
        for col in cols:
            clauses.append((col.desc() if descending else col.asc()).nulls_last())
    return query, clauses


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_token(token: str) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
        if not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(
            f"Page token {token!r} is not one Shipway issued; pass the next_page_token of the "
            "previous page, or leave it out for the first page."
        ) from None


def search_runs(
    store: Store,
    experiments: str | Sequence[str] | None,
    filter: str | None = None,
    order_by: str | Sequence[str] | None = None,
    limit: int = 100,
    page_token: str | None = None,
) -> Page[RunRecord]:
    """Runs of the given experiments (all when None) matching ``filter``, sorted, one page."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit!r}.")
    offset = _decode_token(page_token) if page_token else 0
    runs, exps = schema.runs, schema.experiments
    query = sa.select(*run_columns()).join(exps, exps.c.id == runs.c.experiment_id)
    if experiments is not None:
        names = [experiments] if isinstance(experiments, str) else list(experiments)
        query = query.where(runs.c.experiment_id.in_([experiment_id(store, n) for n in names]))
    if filter is not None and filter.strip():
        query = query.where(compile_node(parse_filter(filter)))
    query, clauses = _order_clauses(query, parse_order_by(order_by))
    query = query.order_by(*clauses, runs.c.start_time.desc(), runs.c.id.desc())
    query = query.limit(limit + 1).offset(offset)
    with store.read() as conn:
        rows = conn.execute(query).all()
        page: Page[RunRecord] = Page(load_records(conn, rows[:limit]))
    page.next_page_token = _encode_token(offset + limit) if len(rows) > limit else None
    return page
