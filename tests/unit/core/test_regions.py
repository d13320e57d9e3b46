"""CloudRegion files: good ones parse into a symmetric matrix; every bad one names each
problem's field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeorch.core.regions import InvalidRegions, parse_regions

REPO = Path(__file__).resolve().parents[3]


def region(name: str, body: str = "", provider: str = "other") -> str:
    return (
        "apiVersion: pipeorch.dev/v1alpha1\nkind: CloudRegion\n"
        f"metadata: {{name: {name}}}\nspec:\n  provider: {provider}\n"
        + "".join(f"  {line}\n" for line in body.splitlines() if line.strip())
    )


def regions(*documents: str) -> str:
    return "---\n".join(documents)


TRIO = regions(
    region("aws", "latencyMs: {gcp: 50, azure: 75}\nobjectStore: true", "aws"),
    region("gcp", "latencyMs: {azure: 125}", "gcp"),
    region("azure", "", "azure"),
)

GOOD = {
    "each-pair-once": (TRIO, {("aws", "gcp"): 50, ("aws", "azure"): 75, ("gcp", "azure"): 125}),
    "pairs-on-both-sides-agree": (
        regions(
            region("a", "latencyMs: {b: 20}\nobjectStore: true"),
            region("b", "latencyMs: {a: 20}"),
        ),
        {("a", "b"): 20},
    ),
    "single-region": (region("solo", "objectStore: true"), {}),
    "trailing-separator-and-metadata-extras": (
        region("a", "latencyMs: {b: 30}\nobjectStore: true")
        + "---\n"
        + region("b").replace("{name: b}", "{name: b, uid: u-1, resourceVersion: '7'}")
        + "---\n",
        {("a", "b"): 30},
    ),
}


@pytest.mark.parametrize(("text", "expected"), GOOD.values(), ids=GOOD.keys())
def test_good_files_give_a_symmetric_matrix(text, expected):
    parsed = parse_regions(text)
    for (a, b), rtt in expected.items():
        assert parsed.rtt_ms(a, b) == parsed.rtt_ms(b, a) == rtt
    matrix = parsed.rtt_matrix()
    assert sorted(matrix) == sorted(parsed.names)
    assert all(row.keys() == set(parsed.names) - {name} for name, row in matrix.items())


def test_defaults_and_helpers():
    parsed = parse_regions(
        regions(
            region("aws", "latencyMs: {gcp: 50}\nbandwidthMbps: {gcp: 200}\nobjectStore: true"),
            region("gcp", "jitterMs: 8\nworkers: {replicas: 3, image: 'w:1'}"),
        )
    )
    aws, gcp = parsed.region("aws"), parsed.region("gcp")
    assert (aws.spec.jitterMs, aws.spec.workers.replicas, aws.spec.workers.slots) == (5, 1, 4)
    assert (gcp.spec.workers.replicas, gcp.spec.workers.image) == (3, "w:1")
    assert parsed.store_region == "aws"
    assert parsed.jitter_ms("aws", "gcp") == 8  # the larger of the two sides
    assert parsed.rtt_ms("aws", "aws") == 0
    assert list(parsed.pairs()) == [("aws", "gcp")]
    topology = parsed.topology()
    assert topology.rtt("gcp", "aws") == 50
    assert topology.bandwidth("gcp", "aws") == 200


def test_the_example_file_is_the_default_layout():
    parsed = parse_regions((REPO / "examples" / "regions.yaml").read_text())
    assert parsed.names == ["aws", "gcp", "azure"]
    assert {pair: parsed.rtt_ms(*pair) for pair in parsed.pairs()} == {
        ("aws", "gcp"): 50,
        ("aws", "azure"): 75,
        ("gcp", "azure"): 125,
    }
    assert {name: parsed.region(name).spec.workers.replicas for name in parsed.names} == {
        "aws": 2,
        "gcp": 1,
        "azure": 1,
    }
    assert {parsed.jitter_ms(*pair) for pair in parsed.pairs()} == {5}
    assert parsed.store_region == "aws"


def test_the_built_in_layout_is_the_example_file():
    built_in = REPO / "operator" / "pipeorch" / "local" / "default-regions.yaml"
    assert built_in.read_text() == (REPO / "examples" / "regions.yaml").read_text()


STORE = "objectStore: true"

BAD = [
    ("empty", "", [("(file)", "no CloudRegion documents")]),
    ("invalid-yaml", "a: [", [("line", "invalid YAML")]),
    ("not-a-mapping", "- a\n", [("document[0]", "must be a mapping")]),
    (
        "wrong-kind-and-name",
        region("AWS", STORE).replace("CloudRegion", "Region"),
        [("document[0].kind", "CloudRegion"), ("document[0].metadata.name", "DNS-1123")],
    ),
    (
        "unknown-field-and-provider",
        region("a", STORE + "\ncolour: red", provider="ibm"),
        [("document[0].spec.colour", "unknown field"), ("document[0].spec.provider", "aws")],
    ),
    (
        "bad-numbers",
        regions(
            region("a", "latencyMs: {b: -1}\n" + STORE),
            region("b", "workers: {replicas: -1, slots: 0}\nbandwidthMbps: {a: 0}"),
        ),
        [
            ("document[0].spec.latencyMs.b", "greater than 0"),
            ("document[1].spec.workers.replicas", "greater than or equal to 0"),
            ("document[1].spec.workers.slots", "greater than or equal to 1"),
            ("document[1].spec.bandwidthMbps.a", "greater than 0"),
        ],
    ),
    (
        "jitter-as-large-as-a-round-trip",
        regions(region("a", "latencyMs: {b: 4}\njitterMs: 4\n" + STORE), region("b")),
        [("document[0].spec", "jitterMs (4) must be smaller than every round trip")],
    ),
    (
        "duplicate-name",
        regions(region("a", "latencyMs: {b: 10}\n" + STORE), region("b"), region("a")),
        [("document[2].metadata.name", "duplicate region 'a' (first at document[0])")],
    ),
    (
        "unknown-and-own-region",
        regions(region("a", "latencyMs: {b: 10, ghost: 50, a: 10}\n" + STORE), region("b")),
        [
            ("document[0].spec.latencyMs.ghost", "unknown region 'ghost'"),
            ("document[0].spec.latencyMs.a", "own traffic is direct"),
        ],
    ),
    (
        "unknown-bandwidth-region",
        regions(region("a", "latencyMs: {b: 10}\nbandwidthMbps: {c: 5}\n" + STORE), region("b")),
        [("document[0].spec.bandwidthMbps.c", "unknown region 'c'")],
    ),
    (
        "sides-disagree",
        regions(region("a", "latencyMs: {b: 10}\n" + STORE), region("b", "latencyMs: {a: 12}")),
        [("document[1].spec.latencyMs.a", "12 disagrees with 10 in document[0].spec.latencyMs.b")],
    ),
    (
        "pair-missing",
        regions(region("a", "latencyMs: {b: 10}\n" + STORE), region("b"), region("c")),
        [
            ("document[0].spec.latencyMs", "no round trip to 'c'"),
            ("document[1].spec.latencyMs", "no round trip to 'c'"),
        ],
    ),
    (
        "no-store",
        regions(region("a", "latencyMs: {b: 10}"), region("b")),
        [("(file)", "no region has objectStore: true")],
    ),
    (
        "two-stores",
        regions(region("a", "latencyMs: {b: 10}\n" + STORE), region("b", STORE)),
        [("document[1].spec.objectStore", "'b' also holds the object store (first: 'a')")],
    ),
    (
        "a-broken-document-is-not-an-unknown-region",
        regions(region("a", "latencyMs: {b: 10}\n" + STORE), region("b", "colour: red")),
        [("document[1].spec.colour", "unknown field")],
    ),
]


@pytest.mark.parametrize(("text", "problems"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_files_name_every_problem(text, problems):
    with pytest.raises(InvalidRegions) as raised:
        parse_regions(text)
    reported = [(e.path, e.message) for e in raised.value.errors]
    for path, fragment in problems:
        assert any(p.startswith(path) and fragment in m for p, m in reported), reported
    assert len(reported) == len(problems), reported
    assert str(raised.value).startswith(reported[0][0])
