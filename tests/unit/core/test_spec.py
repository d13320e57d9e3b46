"""Pipeline parsing: good documents parse; every bad one names each problem's field path."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from pipeorch.core.spec import InvalidPipeline, PipelineSpec, load_spec, parse_pipeline, spec_json

HEADER = "apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p1}\n"


def doc(spec: str) -> str:
    return HEADER + "spec:\n" + textwrap.indent(textwrap.dedent(spec), "  ")


GOOD = {
    "single-callable": doc("""
        steps:
          - {name: a, run: "mod.sub:fn", params: {n: 3}}
    """),
    "command-with-io": doc("""
        steps:
          - {name: gen, command: [python, -c, "print(1)"], outputs: [readings.csv]}
          - {name: report, run: "m:f", dependsOn: [gen], inputs: [gen/readings.csv]}
    """),
    "diamond-with-transitive-input": doc("""
        maxParallel: 2
        placement: spread
        steps:
          - {name: a, run: "m:f", outputs: [x]}
          - {name: b, run: "m:f", dependsOn: [a]}
          - {name: c, run: "m:f", dependsOn: [a]}
          - {name: d, run: "m:f", dependsOn: [b, c], inputs: [a/x],
             retry: {limit: 3, backoffSeconds: 0.5}, timeoutSeconds: 30}
    """),
    "params-of-every-kind": doc("""
        steps:
          - name: a
            run: "m:f"
            params: {n: 3, x: 2.0, huge: 123456789012345678901234567890, far: .inf, low: -.inf,
                     ok: true, none: null, text: "µs — ünïcode", nested: {list: [1, "2", null]}}
    """),
    "pinned": doc("""
        placement: pinned
        steps:
          - {name: a, run: "m:f", region: aws}
    """),
    "json": '{"apiVersion": "pipeorch.dev/v1alpha1", "kind": "Pipeline", "metadata": '
    '{"name": "p1", "uid": "u-1", "resourceVersion": "7"}, '
    '"spec": {"steps": [{"name": "a", "run": "m:f"}]}}',
}


@pytest.mark.parametrize("text", GOOD.values(), ids=GOOD.keys())
def test_good_pipelines_parse(text):
    pipeline = parse_pipeline(text)
    assert pipeline.name == "p1"
    assert pipeline.spec.steps


BAD = [
    ("cycle", doc("""
        steps:
          - {name: a, run: "m:f", dependsOn: [c]}
          - {name: b, run: "m:f", dependsOn: [a]}
          - {name: c, run: "m:f", dependsOn: [b]}
     """), [("spec.steps[0].dependsOn", "cycle: a -> c -> b -> a")]),
    ("unknown-dependency", doc("""
        steps:
          - {name: a, run: "m:f", dependsOn: [ghost]}
     """), [("spec.steps[0].dependsOn[0]", "unknown step 'ghost'")]),
    ("self-dependency", doc("""
        steps:
          - {name: a, run: "m:f", dependsOn: [a]}
     """), [("spec.steps[0].dependsOn[0]", "cannot depend on itself")]),
    ("duplicate-step", doc("""
        steps:
          - {name: a, run: "m:f"}
          - {name: a, command: [true]}
     """), [("spec.steps[1].name", "duplicate step 'a'")]),
    ("input-not-upstream", doc("""
        steps:
          - {name: a, run: "m:f", outputs: [x]}
          - {name: b, run: "m:f", inputs: [a/x]}
     """), [("spec.steps[1].inputs[0]", "not upstream")]),
    ("input-not-declared", doc("""
        steps:
          - {name: a, run: "m:f", outputs: [x]}
          - {name: b, run: "m:f", dependsOn: [a], inputs: [a/y]}
     """), [("spec.steps[1].inputs[0]", "declares no output 'y'")]),
    ("output-twice", doc("""
        steps:
          - {name: a, run: "m:f", outputs: [x, x]}
     """), [("spec.steps[0].outputs[1]", "declared twice")]),
    ("name-not-dns1123", doc("""
        steps:
          - {name: Step_One, run: "m:f"}
     """), [("spec.steps[0].name", "not a DNS-1123 label")]),
    ("unknown-field", doc("""
        steps:
          - {name: a, run: "m:f", retries: 3}
     """), [("spec.steps[0].retries", "unknown field")]),
    ("run-and-command", doc("""
        steps:
          - {name: a, run: "m:f", command: [ls]}
     """), [("spec.steps[0]", "exactly one of `run` or `command`")]),
    ("neither-run-nor-command", doc("""
        steps:
          - {name: a}
     """), [("spec.steps[0]", "exactly one of `run` or `command`")]),
    ("bad-callable", doc("""
        steps:
          - {name: a, run: "not a callable"}
     """), [("spec.steps[0].run", "pattern")]),
    ("negative-retry", doc("""
        steps:
          - {name: a, run: "m:f", retry: {limit: -1}}
     """), [("spec.steps[0].retry.limit", "greater than or equal to 0")]),
    ("no-steps", doc("""
        steps: []
     """), [("spec.steps", "at least 1")]),
    ("pinned-without-region", doc("""
        placement: pinned
        steps:
          - {name: a, run: "m:f"}
     """), [("spec", "name no region")]),
    ("wrong-kind", HEADER.replace("Pipeline", "Pipe") + "spec: {steps: [{name: a, run: 'm:f'}]}",
     [("kind", "'Pipeline'")]),
    ("invalid-yaml", "apiVersion: [unclosed\n", [("line 2, column 1", "invalid YAML")]),
    ("not-a-mapping", "- just\n- a list\n", [("(document)", "must be a mapping")]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_pipelines_name_the_field(text, expected):
    with pytest.raises(InvalidPipeline) as error:
        parse_pipeline(text)
    reported = [(e.path, e.message) for e in error.value.errors]
    for path, fragment in expected:
        assert any(p == path and fragment in m for p, m in reported), reported


def test_every_problem_is_reported_at_once():
    text = doc("""
        steps:
          - {name: a, run: "m:f", dependsOn: [b], outputs: [x, x], colour: red}
          - {name: b, run: "m:f", dependsOn: [a, ghost]}
          - {name: Bad, command: [true]}
          - {name: a, run: "m:f"}
    """)
    with pytest.raises(InvalidPipeline) as error:
        parse_pipeline(text)
    paths = {e.path for e in error.value.errors}
    assert {
        "spec.steps[0].colour",
        "spec.steps[0].outputs[1]",
        "spec.steps[1].dependsOn[1]",
        "spec.steps[2].name",
        "spec.steps[3].name",
        "spec.steps[0].dependsOn",
    } <= paths
    assert "cycle: a -> b -> a" in str(error.value)
    assert error.value.field == error.value.errors[0].path


def test_json_and_yaml_of_one_pipeline_parse_the_same():
    text = GOOD["diamond-with-transitive-input"]
    as_json = json.dumps(yaml.safe_load(text))
    assert parse_pipeline(as_json) == parse_pipeline(text)
    assert parse_pipeline(as_json.encode()) == parse_pipeline(text)


def test_yaml_flow_mapping_that_is_not_json_still_parses():
    text = "{apiVersion: pipeorch.dev/v1alpha1, kind: Pipeline, metadata: {name: p1},"
    text += " spec: {steps: [{name: a, run: 'm:f'}]}}"
    assert parse_pipeline(text).spec.steps[0].name == "a"


def test_broken_json_is_reported_as_yaml_with_its_line():
    with pytest.raises(InvalidPipeline) as error:
        parse_pipeline('{"apiVersion": "pipeorch.dev/v1alpha1",\n "kind": [}')
    assert "line 2" in str(error.value)


def test_a_long_chain_with_an_input_from_far_upstream_is_valid():
    steps = [{"name": "s0", "run": "m:f", "outputs": ["x"]}]
    steps += [{"name": f"s{i}", "run": "m:f", "dependsOn": [f"s{i - 1}"]} for i in range(1, 3000)]
    steps[-1]["inputs"] = ["s0/x"]
    document = {
        "apiVersion": "pipeorch.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "long"},
        "spec": {"steps": steps},
    }
    assert len(parse_pipeline(json.dumps(document)).spec.steps) == 3000


@pytest.mark.parametrize("text", GOOD.values(), ids=GOOD.keys())
def test_a_spec_loads_back_from_its_json_equal_to_the_parsed_one(text):
    # What every replica applies: the leader's remembered spec and a follower's fresh
    # validation of the same JSON must be the same spec.
    pipeline = parse_pipeline(text)
    written = spec_json(pipeline)
    assert load_spec(written) is pipeline.spec
    # A text this process did not write (one more newline) is validated afresh.
    assert load_spec(written + "\n") == pipeline.spec
    assert PipelineSpec.model_validate(json.loads(written)) == pipeline.spec


def test_the_spec_just_written_is_not_validated_again():
    pipeline = parse_pipeline(GOOD["diamond-with-transitive-input"])
    written = spec_json(pipeline)
    assert load_spec(written) is pipeline.spec
    # JSON this process did not write (a follower's case) is validated: equal, not the same.
    unseen = json.dumps(json.loads(written), indent=1)
    assert unseen != written
    assert load_spec(unseen) == pipeline.spec
    assert load_spec(unseen) is not pipeline.spec


def test_only_the_specs_written_last_are_remembered():
    pipelines = [
        parse_pipeline(doc(f"steps:\n  - {{name: s{i}, run: 'm:f'}}\n")) for i in range(40)
    ]
    texts = [spec_json(p) for p in pipelines]
    assert load_spec(texts[-1]) is pipelines[-1].spec
    assert load_spec(texts[0]) is not pipelines[0].spec  # forgotten, validated again
    assert load_spec(texts[0]) == pipelines[0].spec
