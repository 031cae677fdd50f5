"""A parser and evaluator for ConnectWise's `conditions` language (API-NOTES §2.1).

Grammar (keywords in any case)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := term ("and" term)*
    term       := "(" expr ")" | comparison
    comparison := FIELD OP value
                | FIELD ["not"] ("contains" | "like") value
                | FIELD ["not"] "in" "(" value ("," value)* ")"
    value      := STRING | NUMBER | "true" | "false" | "null" | "[" DATETIME "]"

FIELD is a JSON name with `/` for nested references (`company/id`). Strings take either quote
and a backslash escapes the next character. String comparisons ignore case, as CW's SQL Server
collation does; `*` (and `%`) are wildcards for `like` only. A syntax error raises
`ConditionError`, which the app answers with a 400 in CW's shape.

Conditions come from the URL, so they are hostile input: parentheses nest at most `MAX_DEPTH`
deep (the parser recurses), a number has at most `MAX_DIGITS` digits, and `like` matches in
time proportional to pattern times value, however many wildcards it has.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import attrs


class ConditionError(ValueError):
    """The conditions string is not valid; `str()` is what CW's 400 body says."""


@attrs.frozen
class Token:
    kind: str  # "(", ")", ",", "op", "word", "string", "number", "datetime"
    text: str
    value: Any
    at: int


MAX_DEPTH = 100  # parentheses within parentheses; real conditions use two or three
MAX_DIGITS = 100  # a CW id or number has far fewer; Python refuses ints past 4300 digits

_OPERATORS = ("!=", "<=", ">=", "=", "<", ">")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_/]*")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
KEYWORDS = {"and", "or", "not", "in", "contains", "like", "true", "false", "null"}


def tokenize(text: str) -> list[Token]:
    tokens, i = [], 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "(),":
            tokens.append(Token(char, char, None, i))
            i += 1
        elif char in "\"'":
            value, end = _read_string(text, i)
            tokens.append(Token("string", text[i:end], value, i))
            i = end
        elif char == "[":
            end = text.find("]", i)
            if end < 0:
                raise ConditionError(f"Unterminated date at position {i}.")
            tokens.append(Token("datetime", text[i:end + 1], parse_datetime(text[i + 1:end], i), i))
            i = end + 1
        elif op := next((o for o in _OPERATORS if text.startswith(o, i)), None):
            tokens.append(Token("op", op, op, i))
            i += len(op)
        elif match := _NUMBER.match(text, i):
            if len(match.group()) > MAX_DIGITS:
                raise ConditionError(f"The number at position {i} is too long.")
            number = float(match.group()) if match.group(1) else int(match.group())
            tokens.append(Token("number", match.group(), number, i))
            i = match.end()
        elif match := _WORD.match(text, i):
            tokens.append(Token("word", match.group(), match.group(), i))
            i = match.end()
        else:
            raise ConditionError(f"Unexpected character {char!r} at position {i}.")
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote, chars, i = text[start], [], start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            chars.append(text[i + 1])
            i += 2
        elif char == quote:
            return "".join(chars), i + 1
        else:
            chars.append(char)
            i += 1
    raise ConditionError(f"Unterminated string starting at position {start}.")


def parse_datetime(text: str, at: int = 0) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConditionError(f"{text!r} at position {at} is not a valid date.") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# -- parsing into a predicate ------------------------------------------------------------------

Predicate = Callable[[dict], bool]
Resolver = Callable[[dict, str], Any]


class _Parser:
    def __init__(self, tokens: list[Token], resolve: Resolver, known: Callable[[str], bool]):
        self.tokens, self.i = tokens, 0
        self.resolve, self.known = resolve, known
        self.depth = 0  # parentheses open around the current term

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise ConditionError("Unexpected end of conditions.")
        self.i += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.text.lower() in words

    def expect(self, kind: str) -> Token:
        token = self.take()
        if token.kind != kind:
            raise ConditionError(f"Expected {kind!r} at position {token.at}, found {token.text!r}.")
        return token

    def parse(self) -> Predicate:
        predicate = self.expr()
        if (token := self.peek()) is not None:
            raise ConditionError(f"Unexpected {token.text!r} at position {token.at}.")
        return predicate

    def expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.at_keyword("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def and_expr(self) -> Predicate:
        parts = [self.term()]
        while self.at_keyword("and"):
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def term(self) -> Predicate:
        token = self.peek()
        if token is not None and token.kind == "(":
            if self.depth == MAX_DEPTH:
                raise ConditionError(f"The conditions are nested too deeply at position {token.at} "
                                     f"(at most {MAX_DEPTH} levels of parentheses).")
            self.take()
            self.depth += 1
            inner = self.expr()
            self.expect(")")
            self.depth -= 1
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        field_token = self.take()
        if field_token.kind != "word" or field_token.text.lower() in KEYWORDS:
            raise ConditionError(f"Expected a field name at position {field_token.at}, "
                                 f"found {field_token.text!r}.")
        field = field_token.text
        if not self.known(field):
            raise ConditionError(f"{field} is not a recognized name.")
        negate = False
        if self.at_keyword("not"):
            self.take()
            negate = True
        op_token = self.take()
        if op_token.kind == "op" and not negate:
            test = _COMPARE[op_token.value]
            operand = self.value()
        elif op_token.kind == "word" and op_token.text.lower() in ("contains", "like"):
            test = _contains if op_token.text.lower() == "contains" else _like
            operand = self.value()
        elif op_token.kind == "word" and op_token.text.lower() == "in":
            test, operand = _in, self.value_list()
        else:
            raise ConditionError(f"Expected an operator after {field} at position {op_token.at}, "
                                 f"found {op_token.text!r}.")
        resolve = self.resolve

        def predicate(record: dict) -> bool:
            value = resolve(record, field)
            if isinstance(value, list):  # a field inside an array (types/id): any member matches
                return any(test(v, operand) for v in value) != negate
            return test(value, operand) != negate

        return predicate

    def value(self) -> Any:
        token = self.take()
        if token.kind in ("string", "number", "datetime"):
            return token.value
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        if token.kind == "word" and token.text.lower() == "null":
            return None
        raise ConditionError(f"Expected a value at position {token.at}, found {token.text!r}.")

    def value_list(self) -> list[Any]:
        self.expect("(")
        values = [self.value()]
        while (token := self.take()).kind == ",":
            values.append(self.value())
        if token.kind != ")":
            raise ConditionError(f"Expected ',' or ')' at position {token.at}, found {token.text!r}.")
        return values


def compile_conditions(text: str, resolve: Resolver, known: Callable[[str], bool]) -> Predicate:
    """Parse `text` into a predicate over records. `resolve(record, field)` reads a field;
    `known(field)` says whether the resource has it (else CW's "is not a recognized name")."""
    if not text or not text.strip():
        return lambda record: True
    return _Parser(tokenize(text), resolve, known).parse()


# -- comparing values --------------------------------------------------------------------------


def _normal(field_value: Any, operand: Any) -> tuple[Any, Any]:
    """Bring a stored value and a literal to comparable forms (dates, case-insensitive text)."""
    if isinstance(operand, dt.datetime):
        if isinstance(field_value, str):
            try:
                field_value = parse_datetime(field_value)
            except ConditionError:
                return None, operand
        return field_value, operand
    if isinstance(operand, str) and isinstance(field_value, str):
        return field_value.casefold(), operand.casefold()
    if isinstance(operand, str) and type(field_value) in (int, float):
        return str(field_value), operand
    return field_value, operand


def _ordered(check: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def test(field_value: Any, operand: Any) -> bool:
        a, b = _normal(field_value, operand)
        if a is None or b is None:
            return False
        try:
            return check(a, b)
        except TypeError:
            return False
    return test


def _equal(field_value: Any, operand: Any) -> bool:
    a, b = _normal(field_value, operand)
    return a == b


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": _equal,
    "!=": lambda a, b: not _equal(a, b),
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
}


def _contains(field_value: Any, operand: Any) -> bool:
    if field_value is None or operand is None:
        return False
    return str(operand).casefold() in str(field_value).casefold()


def _like(field_value: Any, operand: Any) -> bool:
    """SQL-like matching with `*` or `%` for any run of characters, ignoring case.

    Not through a regular expression: `*a*a*a*a*...b` against a long value makes a
    backtracking matcher try every split, and a request could then hold the simulator for
    hours. Here each literal piece is found leftmost, once.
    """
    if field_value is None or operand is None:
        return False
    value = str(field_value).casefold()
    first, *middle_and_last = re.split(r"[*%]", str(operand).casefold())
    if not middle_and_last:  # no wildcard: the whole value
        return value == first
    *middle, last = middle_and_last
    if not value.startswith(first):
        return False
    at, end = len(first), len(value) - len(last)
    for piece in middle:
        found = value.find(piece, at, end)
        if found < 0:
            return False
        at = found + len(piece)
    return at <= end and value.endswith(last)


def _in(field_value: Any, operands: list[Any]) -> bool:
    return any(_equal(field_value, operand) for operand in operands)
