"""The scope fields every data call carries, and how they travel.

The tenant is never among them: it comes from the API key alone. The others narrow what a
request sees and default what it writes:

- ``user_tokens``: the principals the request speaks for (``["u:alice"]``); records written
  without their own tokens get these, so they are private to them;
- ``memory_domain``: the namespace (default ``default``), sent as ``X-Strata-Domain``;
- ``run_id`` and ``memory_scope``: a session and a narrower local scope;
- ``user_match``: ``any`` (default: a record sharing one token is visible) or ``all``.

They are sent in the query string on every data route. That keeps them the *request's*
scope even on a single-record write, where the same names in the body would be the record's
own fields (so an upsert by id of a private record is checked against the right principals).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict, List, Literal, Optional, Sequence, Tuple

from .errors import BadRequestError

__all__ = ["Scope", "UserMatch"]

UserMatch = Literal["any", "all"]

DOMAIN_HEADER = "x-strata-domain"


# The server's rules for names (user tokens may also contain ':'). The client checks the two
# fields whose transport could change their meaning before the server sees them: tokens travel
# comma-joined in one query parameter (so "u:eve,u:bob" would arrive as two principals), and
# the domain travels in a header (where a newline or a non-ASCII character is not a value).
_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _refuse(field: str, value: object, allowed: str) -> BadRequestError:
    return BadRequestError(
        f"{field}: {value!r} is not a valid name (1 to 64 characters of {allowed}); "
        "refused by the client before sending",
        code="BAD_REQUEST",
    )


def _tokens(user_tokens: Optional[Sequence[str]]) -> Optional[Tuple[str, ...]]:
    if user_tokens is None:
        return None
    if isinstance(user_tokens, str):
        # A bare string would otherwise be read as one token per character.
        raise TypeError("user_tokens must be a list of strings, e.g. ['u:alice']")
    return tuple(user_tokens)


def _check_tokens(tokens: Tuple[str, ...]) -> None:
    if tokens == ("*",):
        return  # every principal: the server decides whether the key may ask for it
    for token in tokens:
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise _refuse("user_tokens", token, "[a-zA-Z0-9_.:-]")


@dataclass(frozen=True)
class Scope:
    """Scope fields; ``None`` means "not given" (then a default, or the server's, applies)."""

    user_tokens: Optional[Tuple[str, ...]] = None
    memory_domain: Optional[str] = None
    run_id: Optional[str] = None
    memory_scope: Optional[str] = None
    user_match: Optional[str] = None

    def __post_init__(self) -> None:
        if self.user_tokens is not None:
            _check_tokens(_tokens(self.user_tokens) or ())
        domain = self.memory_domain
        if domain is not None and (not isinstance(domain, str) or not _NAME.fullmatch(domain)):
            raise _refuse("memory_domain", domain, "[a-zA-Z0-9_.-]")

    @classmethod
    def of(
        cls,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[str] = None,
    ) -> Scope:
        return cls(_tokens(user_tokens), memory_domain, run_id, memory_scope, user_match)

    def override(
        self,
        user_tokens: Optional[Sequence[str]] = None,
        memory_domain: Optional[str] = None,
        run_id: Optional[str] = None,
        memory_scope: Optional[str] = None,
        user_match: Optional[str] = None,
    ) -> Scope:
        """This scope with the given fields replaced; fields left ``None`` are kept."""
        return self.updated(Scope.of(user_tokens, memory_domain, run_id, memory_scope, user_match))

    def updated(self, other: Scope) -> Scope:
        """This scope with the fields ``other`` gives replacing its own."""
        changes = {k: v for k, v in other.__dict__.items() if v is not None}
        return replace(self, **changes)

    def params(self) -> List[Tuple[str, str]]:
        out: List[Tuple[str, str]] = []
        if self.user_tokens is not None:
            # Tokens cannot contain commas; an empty value means "no principals".
            out.append(("user_tokens", ",".join(self.user_tokens)))
        for key in ("run_id", "memory_scope", "user_match"):
            value = getattr(self, key)
            if value is not None:
                out.append((key, value))
        return out

    def headers(self) -> Dict[str, str]:
        return {DOMAIN_HEADER: self.memory_domain} if self.memory_domain is not None else {}
