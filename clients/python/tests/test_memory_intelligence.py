"""Confidence evidence, links and recall with spreading activation through the client."""

from __future__ import annotations

import pytest

from strata_client import BadRequestError, NewRecord, NotFoundError, Strata


@pytest.fixture
def chain(client: Strata) -> Strata:
    """a → b → c, each on its own axis, so only ``a`` matches a query along x."""
    client.create_collection("chain", dim=3)
    client.add(
        [
            NewRecord(id="a", vector=[1, 0, 0], collection="chain", content="start"),
            NewRecord(id="b", vector=[0, 1, 0], collection="chain"),
            NewRecord(id="c", vector=[0, 0, 1], collection="chain"),
        ]
    )
    client.link("a", "b", relation="next")
    client.link("b", "c", relation="next", weight=0.5)
    return client


def test_evidence_moves_confidence(chain: Strata) -> None:
    r = chain.add_evidence("a", corroborate=True)
    assert r.confidence.value == pytest.approx(2 / 3)
    assert (r.confidence.evidence_count, r.confidence.corroborations) == (1, 1)
    r = chain.add_evidence("a", signal=0.0)
    assert r.confidence.value == pytest.approx(0.5)
    with pytest.raises(BadRequestError):
        chain.add_evidence("a", signal=2.0)
    with pytest.raises(BadRequestError):
        chain.add_evidence("a")
    with pytest.raises(NotFoundError):
        chain.add_evidence("missing", contradict=True)


def test_links_and_recall(chain: Strata) -> None:
    links = chain.links("b")
    assert [(k.source, k.relation) for k in links.incoming] == [("a", "next")]
    assert [(k.target, k.weight) for k in links.outgoing] == [("c", 0.5)]
    with pytest.raises(NotFoundError):
        chain.link("a", "nowhere")

    search = chain.search(vector=[1, 0, 0], collection="chain", k=3)
    assert search.hits[0].id == "a"
    result = chain.recall(vector=[1, 0, 0], collection="chain", k=3, seeds=1, threshold=0.01)
    assert [h.id for h in result] == ["a", "b", "c"]
    assert result.depth == 3
    assert result[0].via == "seed"
    assert [step["to"] for step in result[2].via] == ["b", "c"]
    assert result[1].activation > result[2].activation
    assert result[2].record is not None

    capped = chain.recall(vector=[1, 0, 0], collection="chain", k=3, seeds=1, depth=1)
    assert [h.id for h in capped] == ["a", "b"]
    chain.unlink("a", "b", relation="next")
    assert [h.id for h in chain.recall(vector=[1, 0, 0], collection="chain", k=3, seeds=1)] == [
        "a"
    ]


def test_link_runs_chains_a_session(client: Strata) -> None:
    client.create_collection("session", dim=2, link_runs=True, initial_confidence=0.8)
    for rid, v in [("t1", [1, 0]), ("t2", [0, 1]), ("t3", [-1, 0.2])]:
        client.add(NewRecord(id=rid, vector=v, collection="session"), run_id="chat-1")
    assert [k.target for k in client.links("t1").outgoing] == ["t2"]
    assert [k.source for k in client.links("t3").incoming] == ["t2"]
    assert client.get("t1").confidence.value == pytest.approx(0.8)
    result = client.recall(vector=[1, 0], collection="session", k=3, seeds=1, threshold=0.01)
    assert [h.id for h in result] == ["t1", "t2", "t3"]
