"""Shared knowledge: an owner publishes a domain to its child tenants, a child searches it
with ``include_shared`` (hits say where they came from), and a revoke ends it at once."""

from __future__ import annotations

from strata_client import NotFoundError, Strata, StrataAdmin

from .conftest import Server, unique


def test_publish_search_and_revoke(server: Server, admin: StrataAdmin) -> None:
    org, team = unique("org"), unique("team")
    admin.create_tenant(org)
    child = admin.create_tenant(team, parent=org)
    assert child.parent == org
    assert admin.get_tenant(org).children == [team]
    org_key = admin.create_key(org, permissions=["read", "write", "admin"]).key
    team_key = admin.create_key(team, permissions=["read"]).key
    with Strata(server.url, org_key) as owner, Strata(server.url, team_key) as grantee:
        owner.add("the kettle descales monthly", memory_domain="kb")
        owner.add("private kettle note", memory_domain="kb", user_tokens=["u:alice"])
        share = owner.create_share("kb", children=True)
        assert [s.id for s in owner.list_shares()] == [share.id]
        incoming = grantee.incoming_shares()
        assert [(s.id, s.owner, s.domain, s.via) for s in incoming] == [
            (share.id, org, "kb", "children")
        ]

        assert len(grantee.search("kettle")) == 0
        for selector in ("all", [share.id], [f"{org}/kb"]):
            hits = grantee.search("kettle", include_shared=selector).hits
            assert [h.record.content for h in hits] == ["the kettle descales monthly"]
            assert hits[0].source == {"tenant": org, "domain": "kb", "share": share.id}

        owner.revoke_share(share.id)
        assert len(grantee.search("kettle", include_shared="all")) == 0
        assert grantee.incoming_shares() == []
        try:
            owner.revoke_share(share.id)
            raise AssertionError("a revoked share was revoked again")
        except NotFoundError:
            pass


def test_a_named_share_is_searched_only_once_accepted(server: Server, admin: StrataAdmin) -> None:
    org, partner = unique("org"), unique("partner")
    admin.create_tenant(org)
    admin.create_tenant(partner)
    org_key = admin.create_key(org, permissions=["read", "write", "admin"]).key
    partner_key = admin.create_key(partner, permissions=["read", "admin"]).key
    with Strata(server.url, org_key) as owner, Strata(server.url, partner_key) as grantee:
        owner.add("the kettle descales monthly", memory_domain="kb")
        share = owner.create_share("kb", tenants=[partner])
        assert (share.tenants, share.accepted) == ([partner], [])
        assert [(s.id, s.via, s.state) for s in grantee.incoming_shares()] == [
            (share.id, "named", "offered")
        ]
        assert len(grantee.search("kettle", include_shared="all")) == 0

        assert grantee.accept_share(share.id).state == "accepted"
        assert owner.list_shares()[0].accepted == [partner]
        hits = grantee.search("kettle", include_shared="all").hits
        assert [h.source for h in hits] == [{"tenant": org, "domain": "kb", "share": share.id}]

        assert grantee.decline_share(share.id).id == share.id
        assert len(grantee.search("kettle", include_shared="all")) == 0
        assert grantee.incoming_shares() == []
        assert owner.list_shares()[0].tenants == []
        try:
            grantee.accept_share(share.id)
            raise AssertionError("a declined share was accepted")
        except NotFoundError:
            pass
