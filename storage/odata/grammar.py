"""`$filter` text to odata-query's AST: lexing with two fixes to its gaps, the bounds on the text, and the
functions the compiler supports; every failure is an Invalid naming `$filter` and the position."""

from __future__ import annotations

from odata_query import ast
from odata_query import exceptions as odata_errors
from odata_query.grammar import ODataLexer, ODataParser
from sly.lex import Token

from storage.errors import Invalid

MAX_FILTER_LENGTH = 8000

STRING_FUNCTIONS = {"tolower": "lower", "toupper": "upper", "trim": "trim"}
DATE_PARTS = {"year": (1, 4), "month": (6, 2), "day": (9, 2)}
MATCH_FUNCTIONS = {"contains": ("%", "%"), "startswith": ("", "%"), "endswith": ("%", "")}
SUPPORTED_FUNCTIONS = tuple(sorted([*STRING_FUNCTIONS, "length", *DATE_PARTS, *MATCH_FUNCTIONS]))


def invalid(message: str) -> Invalid:
    """An Invalid naming `$filter`."""
    return Invalid(message, target="$filter")


def dotted(identifier: ast.Identifier) -> str:
    """An identifier with its namespace (`geo.distance`); odata-query's own full_name() is untyped."""
    return ".".join((*identifier.namespace, identifier.name))


def _tokens(text: str) -> list[Token]:
    """Lex with odata-query's lexer, smoothing two gaps between it and the OData grammar."""
    tokens = list(ODataLexer().tokenize(text))
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        following = tokens[i + 1].type if i + 1 < len(tokens) else None
        # `not(...)` lexes as a call of a function named `not`: the lexer wants a space after `not`.
        if tok.type == "ODATA_IDENTIFIER" and dotted(tok.value).lower() == "not" and following == "(":
            tok.type, tok.value = "NOT", ast.Not()
        # odata-query reads `in ('a')` as a parenthesized value and only takes `('a',)` as a list.
        if tok.type == "IN" and following == "(":
            _add_list_comma(tokens, i + 1)
        i += 1
    return tokens


def _add_list_comma(tokens: list[Token], open_at: int) -> None:
    """Insert a comma before the `)` closing the group at `open_at` when it holds one item and no comma."""
    depth = 0
    for j in range(open_at + 1, len(tokens)):
        kind = tokens[j].type
        if kind == "," and depth == 0:
            return
        if kind == "(":
            depth += 1
        elif kind == ")" and depth > 0:
            depth -= 1
        elif kind == ")":
            if any(t.type != "WS" for t in tokens[open_at + 1 : j]):
                comma = Token()
                comma.type, comma.value, comma.lineno, comma.index = ",", ",", 1, tokens[j].index
                tokens.insert(j, comma)
            return


def parse_filter(expr: str) -> ast._Node:
    """Parse `$filter` text into odata-query's AST; raises Invalid (target `$filter`) saying where."""
    if len(expr) > MAX_FILTER_LENGTH:
        raise invalid(f"$filter is longer than {MAX_FILTER_LENGTH} characters")
    stripped = expr.strip()
    offset = len(expr) - len(expr.lstrip())
    try:
        tokens = _tokens(stripped)
        return ODataParser().parse(iter(tokens))  # type: ignore[no-any-return]
    except odata_errors.TokenizingException as exc:
        position = exc.token.index
        char = stripped[position] if position < len(stripped) else ""
        hint = ""
        if char == "'":
            hint = " (an unclosed string? write a quote inside a string twice: 'O''Brien')"
        elif char == '"':
            hint = " (strings take single quotes: 'text')"
        raise invalid(
            f"$filter has an unexpected character {char!r} at position {offset + position + 1}{hint}"
        ) from None
    except odata_errors.ParsingException as exc:
        if exc.token is None:
            raise invalid("$filter ends too early: an operand, a closing parenthesis or a value is missing") from None
        position = exc.token.index
        near = stripped[position : position + 20]
        raise invalid(f"$filter has a syntax error at position {offset + position + 1}, near {near!r}") from None
    except odata_errors.UnknownFunctionException as exc:
        raise invalid(
            f"function {exc.function_name!r} is not supported in $filter; supported: " + ", ".join(SUPPORTED_FUNCTIONS)
        ) from None
    except odata_errors.ODataException as exc:
        raise invalid(f"$filter is not valid: {exc}") from None
    except Exception:
        # The parser has crash paths of its own (AttributeError on 3+ named arguments, RecursionError on
        # very long property paths); for the client these are all malformed filters.
        raise invalid("$filter could not be parsed; check its syntax") from None
