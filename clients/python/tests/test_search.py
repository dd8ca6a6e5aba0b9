"""Search in every mode: text (BM25), vector, and hybrid with per-channel explanations."""

from __future__ import annotations

import pytest

from strata_client import AdaptiveExplain, BadRequestError, NewRecord, Strata


@pytest.fixture
def axes(client: Strata) -> Strata:
    """A 3-dimensional collection with three records along (or near) its axes."""
    client.create_collection("axes", dim=3)
    client.add(
        [
            NewRecord(
                id="x",
                content="the x axis points east",
                vector=[1, 0, 0],
                collection="axes",
                metadata={"axis": "x", "n": 1},
            ),
            NewRecord(
                id="y",
                content="the y axis points north",
                vector=[0, 1, 0],
                collection="axes",
                metadata={"axis": "y", "n": 2},
            ),
            NewRecord(
                id="xy",
                content="a diagonal between east and north",
                vector=[1, 1, 0],
                collection="axes",
                metadata={"axis": "xy", "n": 3},
            ),
        ]
    )
    return client


def test_text_search_ranks_by_bm25(client: Strata) -> None:
    client.add(
        [
            {"content": "the coffee machine on floor 3 is broken"},
            {"content": "coffee, coffee and more coffee"},
            {"content": "the printer is out of toner"},
        ]
    )
    result = client.search("coffee", k=5)
    assert result.mode == "text"
    assert [h.record.content for h in result] == [
        "coffee, coffee and more coffee",
        "the coffee machine on floor 3 is broken",
    ]
    assert result[0].score > result[1].score > 0


def test_vector_search_finds_the_nearest(axes: Strata) -> None:
    result = axes.search(vector=[0.9, 0.1, 0], k=3, collection="axes")
    assert result.mode == "vector"
    assert [h.record.id for h in result] == ["x", "xy", "y"]
    assert result[0].score == pytest.approx(0.9939, abs=1e-3)
    # Search hits do not carry vectors unless `include` names them (a test below).
    assert result[0].record.vector is None


def test_include_chooses_what_hits_carry(axes: Strata) -> None:
    lean = axes.search(vector=[0.9, 0.1, 0], k=2, collection="axes", include=[])
    assert [(h.id, h.record, h.content, h.metadata) for h in lean] == [
        ("x", None, None, None),
        ("xy", None, None, None),
    ]
    # None takes the server's default: text and metadata.
    default = axes.search(vector=[0.9, 0.1, 0], k=1, collection="axes", include=None)
    assert (default[0].content, default[0].metadata) == (
        "the x axis points east",
        {"axis": "x", "n": 1},
    )
    assert default[0].vector is None and default[0].record is None
    # The stored vector, as written (not normalised for cosine).
    with_vectors = axes.search(
        vector=[0.9, 0.1, 0], k=2, collection="axes", include=["vector", "record"]
    )
    assert [h.vector for h in with_vectors] == [[1, 0, 0], [1, 1, 0]]
    assert with_vectors[1].record is not None
    assert with_vectors[1].record.vector == [1, 1, 0]
    with pytest.raises(BadRequestError, match="include"):
        axes.search(vector=[1, 0, 0], collection="axes", include=["everything"])


def test_min_score_and_filters_narrow_results(axes: Strata) -> None:
    close = axes.search(vector=[1, 0, 0], k=3, collection="axes", min_score=0.5)
    assert [h.record.id for h in close] == ["x", "xy"]
    filtered = axes.search(vector=[1, 0, 0], k=3, collection="axes", filter={"n": {"$gte": 2}})
    assert [h.record.id for h in filtered] == ["xy", "y"]
    either = axes.search(
        vector=[1, 0, 0],
        k=3,
        collection="axes",
        filter={"$or": [{"axis": "y"}, {"axis": "x"}]},
    )
    assert [h.record.id for h in either] == ["x", "y"]


def test_hybrid_search_explains_both_channels(axes: Strata) -> None:
    result = axes.search("north", vector=[1, 0, 0], k=3, collection="axes", explain=True)
    assert result.mode == "hybrid"
    by_id = {h.record.id: h for h in result}
    # "y" is last by vector but first by text; "x" is the reverse. Both channels are shown.
    y = by_id["y"].explain
    assert y is not None and y.text_rank == 1 and y.vector_rank == 3
    x = by_id["x"].explain
    assert x is not None and x.vector_rank == 1 and x.text_rank is None
    assert x.vector_score == pytest.approx(1.0)
    # Weighted fusion with all weight on the vector channel ranks as vector search does.
    weighted = axes.search(
        "north",
        vector=[1, 0, 0],
        k=3,
        collection="axes",
        fusion={"method": "weighted", "alpha": 1.0},
    )
    assert [h.record.id for h in weighted][0] == "x"


def test_explicit_modes(axes: Strata) -> None:
    text_only = axes.search("east", vector=[0, 1, 0], k=3, collection="axes", mode="text")
    assert text_only.mode == "text"
    assert [h.record.id for h in text_only] == ["x", "xy"]
    with pytest.raises(BadRequestError, match="vector"):
        axes.search("east", k=3, collection="axes", mode="hybrid")
    with pytest.raises(BadRequestError):
        axes.search(k=3)


def test_feedback_raises_a_used_memory_in_adaptive_search(axes: Strata) -> None:
    def top(domain: str = "default") -> str:
        hits = axes.search(
            vector=[1, 0.2, 0],
            k=1,
            collection="axes",
            rerank="adaptive",
            explain=True,
            include=[],
            memory_domain=domain,
        )
        return hits[0].id

    assert top() == "x"
    for _ in range(5):
        answer = axes.feedback(["y", "no-such-memory"], shown=["x"], collection="axes")
        assert answer == {"memory_domain": "default", "narrative_updated": False}
    # With the default weights one record's pheromone (at most 0.3) cannot beat the base-score
    # gap of a record far from the query (y: about 0.8 here); a heavier pheromone weight can.
    hits = axes.search(
        vector=[1, 0.2, 0],
        k=3,
        collection="axes",
        rerank="adaptive",
        rerank_weights={"pheromone": 2.0},
        explain=True,
        include=[],
    )
    assert hits[0].id == "y"
    assert hits[0].explain is not None and hits[0].explain.adaptive is not None
    adaptive = hits[0].explain.adaptive
    assert isinstance(adaptive, AdaptiveExplain)
    assert adaptive.pheromone > 0 and adaptive.base_rank >= 1
    assert adaptive["pheromone"] == adaptive.pheromone  # as when it was a dict
    assert adaptive["base_rank"] == adaptive.base_rank and isinstance(adaptive["base_rank"], int)
    assert adaptive.get("nothing", 1) == 1 and adaptive.to_dict()["narrative"] == adaptive.narrative
    with pytest.raises(BadRequestError):
        axes.search(vector=[1, 0, 0], collection="axes", rerank_weights={"base": 1})


def test_confidence_and_recency_fold_into_the_score_and_are_explained(axes: Strata) -> None:
    axes.add_evidence("y", contradict=True)
    hits = axes.search(
        vector=[1, 0.2, 0],
        k=3,
        collection="axes",
        confidence_weight=0.5,
        recency_half_life_secs=3600,
        explain=True,
        include=[],
    )
    by_id = {h.id: h for h in hits}
    y = by_id["y"].explain
    assert y is not None and y.base_score is not None
    assert y.confidence == pytest.approx(axes.get("y").confidence.value)
    assert y.confidence < 0.5
    # Just written: no decay to speak of.
    assert y.recency_factor is not None and 0.99 < y.recency_factor <= 1.0
    with pytest.raises(BadRequestError, match="confidence_weight"):
        axes.search(vector=[1, 0, 0], collection="axes", confidence_weight=2.0)
