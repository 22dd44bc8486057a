"""The planner evaluation set loads and checks itself; the TaskBench-style scores are right."""

from __future__ import annotations

import dataclasses
import math
import re
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agents.constellation.model import PlanSpec
from agents.planner.decompose import request_words, system_path_allowed
from agents.planner.evaluation import (
    BUILTIN_TOOLS,
    CATEGORIES,
    CaseScore,
    EvalCase,
    EvalDevice,
    EvalSetError,
    case_score,
    default_eval_dir,
    edge_f1,
    expected_edges,
    failed_case_score,
    load_cases,
    load_fleets,
    node_f1,
    parallel_satisfied,
    plan_edges,
    summarise,
    unmentioned_names,
)
from devices.registry import DeviceInfo
from devices.tools import default_tools

LAST_LINE = re.compile(
    r"^valid_rate=\d\.\d\d node_f1=\d\.\d\d\d edge_f1=\d\.\d\d\d run_success=(\d\.\d\d|n/a) "
    r"median_plan_s=\d+\.\d\d model=\S+$"
)

FLEETS_YAML = """\
home:
  - {name: laptop, platform: linux, labels: [desktop], tools: [shell.run, fs.write, sys.info]}
  - {name: nas, platform: linux, labels: [storage], tools: [sys.info, fs.read]}
"""


def plan(*stars: dict[str, Any], lines: list[dict[str, Any]] | None = None) -> PlanSpec:
    return PlanSpec.model_validate({"name": "p", "stars": list(stars), "lines": lines or []})


def star(star_id: str, tool: str, *after: str) -> dict[str, Any]:
    return {"id": star_id, "tool": tool, "args": {}, "after": list(after)}


def case(
    stars: list[dict[str, Any]], parallel: list[list[str]] | None = None, fleet: str = "home"
) -> EvalCase:
    return EvalCase.model_validate(
        {
            "id": "a-case",
            "category": "reporting",
            "fleet": fleet,
            "request": "do it",
            "expected": {"stars": stars, "parallel": parallel or []},
        }
    )


# --- the bundled set ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> tuple[dict[str, list[EvalDevice]], list[EvalCase]]:
    folder = default_eval_dir()
    fleets = load_fleets(folder / "fleets.yaml")
    return fleets, load_cases(folder / "requests.yaml", fleets)


def test_default_eval_dir_is_the_resources_folder() -> None:
    folder = default_eval_dir()
    assert folder.name == "eval"
    assert folder.parent.name == "resources"
    assert (folder / "fleets.yaml").is_file()
    assert (folder / "requests.yaml").is_file()


def test_builtin_tools_match_the_device_tools() -> None:
    assert set(default_tools().names()) == BUILTIN_TOOLS


def test_bundled_fleets(bundled: tuple[dict[str, list[EvalDevice]], list[EvalCase]]) -> None:
    fleets, _ = bundled
    assert 4 <= len(fleets) <= 6
    platforms = {device.platform for fleet in fleets.values() for device in fleet}
    assert platforms == {"linux", "windows", "macos"}
    for fleet in fleets.values():
        assert len({device.name for device in fleet}) == len(fleet)
        for device in fleet:
            assert set(device.tools) <= BUILTIN_TOOLS


def test_bundled_cases_cover_every_category(
    bundled: tuple[dict[str, list[EvalDevice]], list[EvalCase]],
) -> None:
    fleets, cases = bundled
    assert len(cases) >= 40
    assert len({c.id for c in cases}) == len(cases)
    counts = Counter(c.category for c in cases)
    assert set(counts) == set(CATEGORIES)
    assert min(counts.values()) >= 6
    assert {c.fleet for c in cases} == set(fleets)
    # Some fan-out (parallel groups), some chains, some single-device plans.
    assert sum(bool(c.expected.parallel) for c in cases) >= 15
    assert sum(not c.expected.parallel and len(c.expected.stars) >= 3 for c in cases) >= 8


def test_every_bundled_case_is_consistent_with_its_fleet(
    bundled: tuple[dict[str, list[EvalDevice]], list[EvalCase]],
) -> None:
    fleets, cases = bundled
    for c in cases:
        devices = {device.name: device for device in fleets[c.fleet]}
        assert 1 <= len(c.expected.stars) <= 7, c.id
        for s in c.expected.stars:
            if s.on is not None:
                assert s.tool in devices[s.on].tools, (c.id, s.id)
        # The expected plan, written as a PlanSpec, satisfies its own parallel groups and
        # scores perfectly against itself.
        spec = PlanSpec.model_validate(
            {
                "name": c.id,
                "stars": [
                    {"id": s.id, "tool": s.tool, "after": list(s.after)} for s in c.expected.stars
                ],
            }
        )
        score = case_score(c, spec, seconds=1.0, attempts=1)
        assert score.node_f1 == 1.0, c.id
        assert score.edge_f1 == 1.0, c.id
        assert score.parallel_ok in (None, True), c.id
        assert (score.parallel_ok is None) == (not c.expected.parallel), c.id


def test_eval_device_to_device_info() -> None:
    device = EvalDevice(
        name="gpubox",
        platform="linux",
        labels=("gpu",),
        tools=("shell.run", "sys.info"),
        gpu=True,
        vram_free_mb=8000,
    )
    info = device.to_device_info()
    assert isinstance(info, DeviceInfo)
    assert info.name == "gpubox"
    assert info.labels == frozenset({"gpu"})
    assert info.tools == frozenset({"shell.run", "sys.info"})
    assert info.gpu is True
    assert info.vram_free_mb == 8000
    assert info.mismatch(tool="shell.run", gpu=True) is None
    assert info.mismatch(tool="fs.write") == "lacks tool 'fs.write'"


# --- F1 -----------------------------------------------------------------------------------


def test_node_f1_partial_overlap() -> None:
    # overlap 2 (sys.info, fs.write); precision 2/3, recall 2/4 → F1 = 4/7
    expected = ["sys.info", "sys.info", "sys.info", "fs.write"]
    got = ["sys.info", "fs.write", "shell.run"]
    assert node_f1(expected, got) == pytest.approx(4 / 7)


def test_node_f1_counts_duplicates_as_a_multiset() -> None:
    # One sys.info expected, three made: precision 1/3, recall 1 → F1 = 0.5
    assert node_f1(["sys.info"], ["sys.info", "sys.info", "sys.info"]) == pytest.approx(0.5)
    assert node_f1(["a.b", "a.b"], ["a.b", "a.b"]) == 1.0
    assert node_f1(["a.b", "c.d"], ["c.d", "a.b"]) == 1.0


def test_node_f1_empty_and_disjoint() -> None:
    assert node_f1([], []) == 1.0
    assert node_f1(["sys.info"], []) == 0.0
    assert node_f1([], ["sys.info"]) == 0.0
    assert node_f1(["sys.info"], ["fs.write"]) == 0.0


def test_edge_f1_partial_overlap_and_duplicates() -> None:
    expected = [("sys.info", "fs.write"), ("sys.info", "fs.write"), ("shell.run", "fs.write")]
    got = [("sys.info", "fs.write"), ("fs.write", "fs.read")]
    # overlap 1; precision 1/2, recall 1/3 → F1 = 0.4
    assert edge_f1(expected, got) == pytest.approx(0.4)
    assert edge_f1(expected, list(reversed(expected))) == 1.0


def test_edge_f1_empty() -> None:
    assert edge_f1([], []) == 1.0
    assert edge_f1([("a.b", "c.d")], []) == 0.0
    assert edge_f1([], [("a.b", "c.d")]) == 0.0


def test_plan_edges_include_after_and_explicit_lines() -> None:
    spec = plan(
        star("a", "sys.info"),
        star("b", "sys.info"),
        star("c", "fs.write", "a"),
        {"id": "d", "instruction": "tidy up"},
        lines=[{"from": "b", "to": "c"}, {"from": "c", "to": "d", "kind": "completion"}],
    )
    assert Counter(plan_edges(spec)) == Counter(
        [("sys.info", "fs.write"), ("sys.info", "fs.write"), ("fs.write", "agent.do")]
    )


def test_plan_edges_count_a_line_given_both_ways_once() -> None:
    spec = plan(
        star("a", "sys.info"),
        star("b", "fs.write", "a"),
        lines=[{"from": "a", "to": "b", "kind": "completion"}],
    )
    assert plan_edges(spec) == [("sys.info", "fs.write")]


def test_expected_edges() -> None:
    c = case(
        [
            {"id": "a", "tool": "sys.info", "on": "laptop"},
            {"id": "b", "tool": "sys.info", "on": "nas"},
            {"id": "c", "tool": "fs.write", "on": "laptop", "after": ["a", "b"]},
            {"id": "d", "tool": "shell.run", "after": ["c"]},
        ]
    )
    assert expected_edges(c) == [
        ("sys.info", "fs.write"),
        ("sys.info", "fs.write"),
        ("fs.write", "shell.run"),
    ]


# --- parallel groups ----------------------------------------------------------------------


FAN_IN = [
    {"id": "a", "tool": "sys.info", "on": "laptop"},
    {"id": "b", "tool": "sys.info", "on": "nas"},
    {"id": "c", "tool": "fs.write", "on": "laptop", "after": ["a", "b"]},
]


def test_parallel_none_without_groups() -> None:
    assert parallel_satisfied(case(FAN_IN), plan(star("a", "sys.info"))) is None


def test_parallel_satisfied_by_a_fan_in() -> None:
    spec = plan(star("x", "sys.info"), star("y", "sys.info"), star("z", "fs.write", "x", "y"))
    assert parallel_satisfied(case(FAN_IN, [["a", "b"]]), spec) is True


def test_parallel_not_satisfied_by_a_chain() -> None:
    spec = plan(star("x", "sys.info"), star("y", "sys.info", "x"), star("z", "fs.write", "y"))
    assert parallel_satisfied(case(FAN_IN, [["a", "b"]]), spec) is False


def test_parallel_not_satisfied_through_an_indirect_path() -> None:
    # x → m → y: y descends from x although no line joins them directly.
    spec = plan(star("x", "sys.info"), star("m", "shell.run", "x"), star("y", "sys.info", "m"))
    assert parallel_satisfied(case(FAN_IN, [["a", "b"]]), spec) is False


def test_parallel_not_satisfied_with_too_few_stars_of_a_tool() -> None:
    spec = plan(star("x", "sys.info"), star("z", "fs.write", "x"))
    assert parallel_satisfied(case(FAN_IN, [["a", "b"]]), spec) is False


def test_parallel_finds_the_independent_pair_among_several() -> None:
    # s1 → s2 is a chain, s3 stands alone: {s1, s3} or {s2, s3} satisfies the group.
    spec = plan(
        star("s1", "sys.info"),
        star("s2", "sys.info", "s1"),
        star("s3", "sys.info"),
        star("w", "fs.write", "s2", "s3"),
    )
    assert parallel_satisfied(case(FAN_IN, [["a", "b"]]), spec) is True


def test_parallel_mixed_tools_and_every_group_must_hold() -> None:
    stars = [
        {"id": "a", "tool": "sys.info", "on": "nas"},
        {"id": "b", "tool": "shell.run", "on": "laptop"},
        {"id": "c", "tool": "fs.write", "on": "laptop", "after": ["a"]},
        {"id": "d", "tool": "fs.write", "on": "laptop", "after": ["b"]},
    ]
    groups = [["a", "b"], ["c", "d"]]
    good = plan(
        star("i", "sys.info"),
        star("s", "shell.run"),
        star("w1", "fs.write", "i"),
        star("w2", "fs.write", "s"),
    )
    assert parallel_satisfied(case(stars, groups), good) is True
    # The writes are chained: the first group holds, the second does not.
    bad = plan(
        star("i", "sys.info"),
        star("s", "shell.run"),
        star("w1", "fs.write", "i"),
        star("w2", "fs.write", "s", "w1"),
    )
    assert parallel_satisfied(case(stars, groups), bad) is False


# --- summary ------------------------------------------------------------------------------


def score(
    category: str,
    *,
    valid: bool = True,
    node: float = 1.0,
    edge: float = 1.0,
    parallel: bool | None = None,
    seconds: float = 1.0,
) -> CaseScore:
    return CaseScore(
        case_id=f"{category}-{seconds}",
        category=category,
        valid=valid,
        node_f1=node,
        edge_f1=edge,
        parallel_ok=parallel,
        seconds=seconds,
        attempts=1,
        error=None if valid else "rejected",
    )


def test_summarise_means_rates_and_categories() -> None:
    scores = [
        score("files", node=1.0, edge=0.5, parallel=True, seconds=2.0),
        score("files", node=0.5, edge=0.0, parallel=False, seconds=4.0),
        # Invalid: its F1 values count as 0 whatever they say.
        score("build", valid=False, node=0.9, edge=0.9, parallel=False, seconds=10.0),
        score("build", node=1.0, edge=1.0, seconds=1.0),
    ]
    summary = summarise(scores)
    assert summary.cases == 4
    assert summary.valid_rate == pytest.approx(0.75)
    assert summary.node_f1 == pytest.approx((1.0 + 0.5 + 0.0 + 1.0) / 4)
    assert summary.edge_f1 == pytest.approx((0.5 + 0.0 + 0.0 + 1.0) / 4)
    assert summary.parallel_rate == pytest.approx(1 / 3)
    assert summary.median_seconds == pytest.approx(3.0)
    assert list(summary.categories) == ["files", "build"]
    files, build = summary.categories["files"], summary.categories["build"]
    assert (files.cases, files.valid_rate, files.node_f1, files.edge_f1) == (2, 1.0, 0.75, 0.25)
    assert files.parallel_rate == 0.5
    assert (build.valid_rate, build.node_f1, build.edge_f1) == (0.5, 0.5, 0.5)
    assert build.parallel_rate == 0.0
    table = summary.table().splitlines()
    assert table[0].split() == ["category", "cases", "valid", "node_f1", "edge_f1", "par"]
    assert table[2].split() == ["files", "2", "1.00", "0.750", "0.250", "0.50"]
    assert table[-1].split() == ["all", "4", "0.75", "0.625", "0.375", "0.33"]


def test_summarise_without_parallel_groups_and_empty() -> None:
    summary = summarise([score("backup"), score("backup", seconds=3.0)])
    assert summary.parallel_rate is None
    assert summary.categories["backup"].parallel_rate is None
    assert "backup" in summary.table()
    with pytest.raises(ValueError, match="no case scores"):
        summarise([])


def test_failed_case_score_is_zero_and_fails_its_groups() -> None:
    with_groups = failed_case_score(case(FAN_IN, [["a", "b"]]), "cycle", seconds=2, attempts=3)
    assert (with_groups.valid, with_groups.node_f1, with_groups.edge_f1) == (False, 0.0, 0.0)
    assert with_groups.parallel_ok is False
    assert with_groups.error == "cycle"
    assert failed_case_score(case(FAN_IN), "x", seconds=1, attempts=1).parallel_ok is None


def test_case_score_of_a_partial_plan() -> None:
    c = case(FAN_IN, [["a", "b"]])
    spec = plan(star("x", "sys.info"), star("z", "fs.write", "x"))
    result = case_score(c, spec, seconds=0.5, attempts=2)
    assert result.valid is True
    assert result.node_f1 == pytest.approx(0.8)  # overlap 2, precision 1, recall 2/3
    assert result.edge_f1 == pytest.approx(2 / 3)  # overlap 1, precision 1, recall 1/2
    assert result.parallel_ok is False
    assert (result.seconds, result.attempts, result.error) == (0.5, 2, None)


def test_last_line_format() -> None:
    summary = summarise(
        [score("files", node=2 / 3, edge=1 / 3, seconds=1.234), score("build", valid=False)]
    )
    line = summary.last_line("gemma-3-270m-it")
    assert LAST_LINE.match(line), line
    assert line == (
        "valid_rate=0.50 node_f1=0.333 edge_f1=0.167 run_success=n/a median_plan_s=1.12 "
        "model=gemma-3-270m-it"
    )
    assert math.isclose(summary.median_seconds, 1.117)


def test_run_success_counts_every_case_an_invalid_plan_as_failed() -> None:
    ran = dataclasses.replace(score("files"), run_ok=True)
    broken = dataclasses.replace(score("files", seconds=2.0), run_ok=False, run_error="x")
    invalid = dataclasses.replace(score("build", valid=False), run_ok=False)
    summary = summarise([ran, broken, invalid])
    assert summary.run_success == pytest.approx(1 / 3)
    assert "run_success=0.33 " in summary.last_line("m")
    assert LAST_LINE.match(summary.last_line("m"))


def test_unmentioned_names_are_what_the_request_never_named() -> None:
    request = "Back up /etc/nginx from web1 to the vault and write a summary into notes/a.txt"
    spec = PlanSpec.model_validate(
        {
            "name": "p",
            "stars": [
                {
                    "id": "s1",
                    "tool": "shell.run",
                    "args": {"cmd": "tar czf nginx.tar.gz /etc/nginx"},
                },
                {"id": "s2", "tool": "artifact.put", "args": {"path": "web1-nginx.tar.gz"}},
                {"id": "s3", "tool": "fs.write", "args": {"path": "summary.txt", "content": "x"}},
                {"id": "s4", "tool": "fs.write", "args": {"path": "notes/a.txt", "content": "x"}},
                {"id": "s5", "tool": "shell.run", "args": {"cmd": "python -m pytest -q tests/"}},
                {"id": "s6", "tool": "fs.list", "args": {"path": "inbox"}},
                {"id": "s7", "tool": "python.run", "args": {"code": "open('sizes.csv')"}},
                {"id": "s8", "tool": "shell.run", "args": {"cmd": "du -sh /tmp /var/log/nginx"}},
                {"id": "s9", "tool": "shell.run", "args": {"cmd": "cat /etc/passwd ../x/key"}},
                {"id": "s10", "tool": "fs.read", "args": {"path": "~/.ssh/id_rsa"}},
                {"id": "s11", "tool": "fs.list", "args": {"path": "~"}},
            ],
        }
    )
    assert unmentioned_names(request, spec, ["web1", "vault"]) == [
        "tests",
        "inbox",
        "sizes.csv",
        "/etc/passwd",
        "../x/key",
        "~/.ssh/id_rsa",
    ]


def test_system_paths_are_allowed_only_when_the_request_speaks_of_them() -> None:
    words = request_words("Clean up the old nginx logs and check the memory")
    assert system_path_allowed("/tmp/scratch/a.txt", words) is True
    assert system_path_allowed("/var", words) is True
    assert system_path_allowed("/var/log/nginx/", words) is True
    assert system_path_allowed("/etc/nginx/nginx.conf", words) is True
    assert system_path_allowed("/etc/passwd", words) is False
    assert system_path_allowed("/proc/1/environ", words) is False
    assert system_path_allowed("/home/alice/.ssh/id_rsa", words) is False
    assert system_path_allowed("notes/a.txt", words) is None


# --- EvalSetError -------------------------------------------------------------------------


def write_set(tmp_path: Path, cases_yaml: str) -> tuple[Path, Path]:
    fleets = tmp_path / "fleets.yaml"
    fleets.write_text(FLEETS_YAML, encoding="utf-8")
    cases = tmp_path / "requests.yaml"
    cases.write_text(textwrap.dedent(cases_yaml), encoding="utf-8")
    return fleets, cases


def load(tmp_path: Path, cases_yaml: str) -> list[EvalCase]:
    fleets_path, cases_path = write_set(tmp_path, cases_yaml)
    return load_cases(cases_path, load_fleets(fleets_path))


GOOD_CASE = """\
- id: good-one
  category: reporting
  fleet: home
  request: "Disk usage of both machines, written on the laptop."
  expected:
    stars:
      - {id: a, tool: sys.info, on: laptop}
      - {id: b, tool: sys.info, on: nas}
      - {id: c, tool: fs.write, on: laptop, after: [a, b]}
    parallel: [[a, b]]
"""


def test_small_set_loads(tmp_path: Path) -> None:
    (loaded,) = load(tmp_path, GOOD_CASE)
    assert loaded.id == "good-one"
    assert loaded.expected.parallel == (("a", "b"),)
    assert loaded.expected.stars[2].after == ("a", "b")


@pytest.mark.parametrize(
    ("stars", "parallel", "message"),
    [
        (
            "- {id: a, tool: shell.run, on: nas}",
            "[]",
            r"case 'bad-case': star 'a' uses 'shell.run', which device 'nas' lacks",
        ),
        (
            "- {id: a, tool: sys.info, on: printer}",
            "[]",
            r"case 'bad-case': star 'a' runs on unknown device 'printer'",
        ),
        (
            "- {id: a, tool: http.get}",
            "[]",
            r"case 'bad-case': star 'a' uses 'http.get', which no device of fleet 'home' offers",
        ),
        (
            "- {id: a, tool: sys.info, after: [ghost]}",
            "[]",
            r"case 'bad-case': star 'a' waits for unknown star 'ghost'",
        ),
        (
            "- {id: a, tool: sys.info}\n- {id: b, tool: sys.info}",
            "[[a, ghost]]",
            r"case 'bad-case': parallel group \['a', 'ghost'\] names unknown star\(s\) ghost",
        ),
        (
            "- {id: a, tool: sys.info, after: [b]}\n- {id: b, tool: fs.write, after: [a]}",
            "[]",
            r"case 'bad-case': the expected stars form a cycle",
        ),
        (
            "- {id: a, tool: sys.info}\n- {id: b, tool: fs.write, after: [a]}",
            "[[a, b]]",
            r"case 'bad-case': parallel group \['a', 'b'\] cannot run at once",
        ),
        (
            "- {id: a, tool: sys.info}\n- {id: a, tool: fs.write}",
            "[]",
            r"case 'bad-case': two expected stars are called 'a'",
        ),
    ],
)
def test_bad_cases_raise_eval_set_error(
    tmp_path: Path, stars: str, parallel: str, message: str
) -> None:
    star_lines = textwrap.indent(stars, " " * 6)
    bad = (
        "- id: bad-case\n  category: files\n  fleet: home\n  request: x\n  expected:\n"
        f"    stars:\n{star_lines}\n    parallel: {parallel}\n"
    )
    with pytest.raises(EvalSetError, match=message):
        load(tmp_path, GOOD_CASE + bad)


def test_unknown_fleet(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match=r"case 'good-one': unknown fleet 'office'"):
        load(tmp_path, GOOD_CASE.replace("fleet: home", "fleet: office"))


def test_duplicate_case_ids(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match=r"case 'good-one': the id is used twice"):
        load(tmp_path, GOOD_CASE + GOOD_CASE)


def test_schema_problems_name_the_case(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match=r"case 'good-one': category"):
        load(tmp_path, GOOD_CASE.replace("category: reporting", "category: cooking"))
    with pytest.raises(EvalSetError, match=r"case 'good-one': priority: Extra inputs"):
        load(tmp_path, GOOD_CASE.replace("  request:", "  priority: 3\n  request:"))


def test_eval_set_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown fleet"):
        load(tmp_path, GOOD_CASE.replace("fleet: home", "fleet: nowhere"))


def test_bad_fleets(tmp_path: Path) -> None:
    path = tmp_path / "fleets.yaml"
    path.write_text(
        "home:\n  - {name: a, platform: linux, tools: [teleport.now]}\n", encoding="utf-8"
    )
    with pytest.raises(EvalSetError, match=r"fleet 'home', device 'a': unknown tool\(s\) tele"):
        load_fleets(path)
    path.write_text(
        "home:\n  - {name: a, platform: linux, tools: [sys.info]}\n"
        "  - {name: a, platform: macos, tools: [sys.info]}\n",
        encoding="utf-8",
    )
    with pytest.raises(EvalSetError, match=r"fleet 'home': two devices are named 'a'"):
        load_fleets(path)
    path.write_text("home:\n  - {name: a, platform: beos, tools: [sys.info]}\n", "utf-8")
    with pytest.raises(EvalSetError, match=r"fleet 'home', device 0: platform"):
        load_fleets(path)
