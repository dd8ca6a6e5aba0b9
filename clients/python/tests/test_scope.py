"""Scope fields on every call: principals (private memories), domains, runs, local scopes,
and keys bound to principals or domains."""

from __future__ import annotations

import pytest

from strata_client import BadRequestError, NotFoundError, Scope, ScopeForbiddenError, Strata

from .conftest import NewTenant, Server


def test_private_memory_is_invisible_to_others(client: Strata) -> None:
    w = client.add("Alice's salary is 100k", user_tokens=["u:alice"])
    client.add("the office opens at 9")
    alice = client.scoped(user_tokens=["u:alice"])
    bob = client.scoped(user_tokens=["u:bob"])
    assert {r.content for r in alice.iter_all()} == {
        "Alice's salary is 100k",
        "the office opens at 9",
    }
    assert [h.record.content for h in alice.search("salary")] == ["Alice's salary is 100k"]
    for other in (bob, client):  # Bob, and a request naming no principal
        assert len(other.search("salary")) == 0
        assert [r.content for r in other.iter_all()] == ["the office opens at 9"]
        assert other.count() == 1
        with pytest.raises(NotFoundError):
            other.get(w.id)
        with pytest.raises(NotFoundError):
            other.delete(w.id)
    assert alice.get(w.id).user_tokens == ["u:alice"]


def test_user_match_all_needs_every_token(client: Strata) -> None:
    client.add("for alice and bob", user_tokens=["u:alice", "u:bob"])
    assert client.count(user_tokens=["u:alice"]) == 1
    assert client.count(user_tokens=["u:alice"], user_match="all") == 0
    assert client.count(user_tokens=["u:alice", "u:bob"], user_match="all") == 1


def test_domains_are_separate_namespaces(client: Strata) -> None:
    support = client.scoped(memory_domain="support")
    w = support.add("ticket 42: the coffee machine is broken")
    client.add("coffee preferences")
    assert support.get(w.id).memory_domain == "support"
    with pytest.raises(NotFoundError):
        client.get(w.id)
    assert [h.record.content for h in client.search("coffee")] == ["coffee preferences"]
    assert [h.record.content for h in support.search("coffee")] == [
        "ticket 42: the coffee machine is broken"
    ]
    # A per-call domain overrides the view's.
    assert support.count(memory_domain="default") == 1


def test_runs_and_local_scopes_narrow_reads(client: Strata) -> None:
    client.add("step 1 of run a", run_id="run-a", memory_scope="ws-1")
    client.add("step 1 of run b", run_id="run-b", memory_scope="ws-2")
    client.add("no run at all")
    assert client.count() == 3
    assert [r.content for r in client.iter_all(run_id="run-a")] == ["step 1 of run a"]
    assert [h.record.content for h in client.search("step", run_id="run-b")] == ["step 1 of run b"]
    assert client.count(memory_scope="ws-1") == 1
    run_a = client.scoped(run_id="run-a")
    w = run_a.add("step 2 of run a")
    assert client.get(w.id).run_id == "run-a"


def test_keys_bound_to_principals_and_domains(server: Server, new_tenant: NewTenant) -> None:
    t = new_tenant(permissions=["read", "write"], user_tokens=["u:alice"], domains=["support"])
    with Strata(server.url, t.key) as alice:
        # The key's only domain and its principals are the defaults.
        w = alice.add("Alice's ticket")
        r = alice.get(w.id)
        assert (r.memory_domain, r.user_tokens) == ("support", ["u:alice"])
        with pytest.raises(ScopeForbiddenError) as e:
            alice.search("ticket", user_tokens=["u:bob"])
        assert e.value.code == "SCOPE_FORBIDDEN" and e.value.status == 403
        with pytest.raises(ScopeForbiddenError):
            alice.count(memory_domain="default")


def test_user_tokens_must_be_a_list(client: Strata) -> None:
    with pytest.raises(TypeError, match="list"):
        client.search("x", user_tokens="u:alice")


def test_a_token_with_a_comma_is_refused_not_split(client: Strata) -> None:
    """Tokens travel comma-joined in the query string: a token holding a comma would reach the
    server as two principals, so a key that is not bound to tokens could speak for another
    user through a token built from user input."""
    client.add("Bob's diary", user_tokens=["u:bob"], id="bob-diary")
    for tokens in (["u:eve,u:bob"], ["u:eve", ",u:bob"], [""], ["u:" + "x" * 63], [7]):
        with pytest.raises(BadRequestError, match="user_tokens") as refused:
            client.search("diary", user_tokens=tokens)  # type: ignore[list-item]
        assert refused.value.status is None  # the client refused it; nothing was sent
        with pytest.raises(BadRequestError, match="user_tokens"):
            client.scoped(user_tokens=tokens)  # type: ignore[list-item]
        with pytest.raises(BadRequestError, match="user_tokens"):
            client.add("planted", user_tokens=tokens)  # type: ignore[list-item]
    with pytest.raises(BadRequestError, match="user_tokens"):
        client.get("bob-diary", user_tokens=["u:eve,u:bob"])
    # A Scope made directly holds to the same rules, and a bare string is no list of tokens.
    with pytest.raises(BadRequestError, match="user_tokens"):
        Scope(user_tokens=("u:eve,u:bob",))
    with pytest.raises(TypeError, match="list"):
        Scope(user_tokens="u:alice")  # type: ignore[arg-type]
    assert client.count(user_tokens=["u:bob"]) == 1  # nothing was planted beside Bob's
    # The valid forms still pass: "every principal" (the server decides) and no principal.
    assert client.count(user_tokens=[]) == 0
    assert client.scoped(user_tokens=["u:bob", "agent:x.y_z-1"]).count() == 1


def test_a_domain_that_cannot_travel_in_a_header_is_refused_as_bad_input(client: Strata) -> None:
    for domain in ("dé", "a\nb", "a b", "", "x" * 65):
        with pytest.raises(BadRequestError, match="memory_domain"):
            client.search("x", memory_domain=domain)
        with pytest.raises(BadRequestError, match="memory_domain"):
            client.scoped(memory_domain=domain)
