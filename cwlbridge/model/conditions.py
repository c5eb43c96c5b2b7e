"""``when`` conditions in PanDA's grammar.

    cond := term (("&&" | "||") term)*     left-associative, no precedence
    term := ["!"] atom
    atom := "self." input ["[" index "]"] | "(" cond ")"

``self.x`` means "the parent(s) feeding input x were processed", ``!self.x``
"they failed".  Anything else (literals, comparisons, calls) is rejected, as
PanDA's server rejects it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cwlbridge.errors import CwlbridgeError

_TOKEN = re.compile(r"\s*(?:(&&|\|\|)|(!)|(\()|(\))|self\.([A-Za-z_][\w-]*)(?:\[(\d+)\])?)")


class ConditionError(CwlbridgeError):
    """A ``when`` string that PanDA's grammar does not accept."""


@dataclass(frozen=True)
class Ref:
    """``self.name`` or ``self.name[index]``; ``negated`` for ``!self.name``."""

    name: str
    index: int | None = None
    negated: bool = False


@dataclass(frozen=True)
class Not:
    """``!( … )``: the group is false."""

    operand: Cond


@dataclass(frozen=True)
class BinOp:
    """``left && right`` or ``left || right``."""

    op: str  # "&&" | "||"
    left: Cond
    right: Cond


Cond = Ref | Not | BinOp


def _strip_dollar(text: str) -> str:
    body = text.strip()
    if body.startswith("$(") and body.endswith(")"):
        body = body[2:-1]
    return body


def _tokens(text: str) -> list[tuple[str, str, int | None]]:
    out: list[tuple[str, str, int | None]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            rest = text[pos:].strip().split()[0] if text[pos:].strip() else text[pos:]
            raise ConditionError(
                f"unknown token '{rest}' in condition",
                hint="PanDA's when grammar allows only self.x, !self.x, self.x[k], &&, || and"
                " parentheses; no literals, comparisons or function calls",
            )
        op, bang, lpar, rpar, name, index = match.groups()
        if op:
            out.append(("op", op, None))
        elif bang:
            out.append(("!", "!", None))
        elif lpar:
            out.append(("(", "(", None))
        elif rpar:
            out.append((")", ")", None))
        else:
            out.append(("ref", name, int(index) if index is not None else None))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int | None]]):
        self.tokens = tokens
        self.at = 0

    def peek(self) -> tuple[str, str, int | None] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str, int | None]:
        token = self.peek()
        if token is None:
            raise ConditionError("the condition ends too early (a term is missing)")
        self.at += 1
        return token

    def cond(self) -> Cond:
        left = self.term()
        while (token := self.peek()) is not None and token[0] == "op":
            self.take()
            left = BinOp(token[1], left, self.term())
        return left

    def term(self) -> Cond:
        kind, value, index = self.take()
        if kind == "!":
            kind, value, index = self.take()
            if kind == "ref":
                return Ref(value, index, negated=True)
            if kind == "(":
                inner = self.cond()
                self.expect_close()
                return Not(inner)
            raise ConditionError(f"'!' must be followed by self.x or a group, not '{value}'")
        if kind == "ref":
            return Ref(value, index)
        if kind == "(":
            inner = self.cond()
            self.expect_close()
            return inner
        raise ConditionError(f"unexpected '{value}' where self.x or a group was expected")

    def expect_close(self) -> None:
        kind, value, _ = self.take()
        if kind != ")":
            raise ConditionError(f"expected ')' but found '{value}'")


def parse_condition(text: str) -> Cond:
    """Parse a ``when`` string; raises ConditionError with PanDA's reason."""
    body = _strip_dollar(text)
    if not body.strip():
        raise ConditionError("the condition is empty")
    parser = _Parser(_tokens(body))
    result = parser.cond()
    leftover = parser.peek()
    if leftover is not None:
        raise ConditionError(
            f"unexpected '{leftover[1]}' after a complete term",
            hint="join terms with && or ||",
        )
    return result


def references(cond: Cond) -> list[Ref]:
    """Every ``self.x`` in the condition, in order."""
    if isinstance(cond, Ref):
        return [cond]
    if isinstance(cond, Not):
        return references(cond.operand)
    return references(cond.left) + references(cond.right)


def suppressed_inputs(cond: Cond) -> set[str]:
    """Inputs PanDA drops from the task: every ``!self.x`` (the step runs without that --inDS).

    As in PanDA, only a whole input: ``!self.x[1]`` keeps ``x`` (its other elements may be
    what the condition waits for).
    """
    return {ref.name for ref in references(cond) if ref.negated and ref.index is None}
