"""The article's exercises on the shared real-VM swarm: every exercise tests itself (start,
check fails, solve, check passes), a student's near miss is caught with a useful message, and
students' ordinary commands converge offline without registry warnings."""

import json
import time

import pytest

from swarmlab.teach import exercise_files
from tests.conftest import figure, swarmlab

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def lab(lab3):
    path, config, _ = lab3
    yield path
    swarmlab("reset", "--lab", "t1", config=path)  # the next modules expect the formed swarm


def test_a_constraint_on_the_wrong_label_fails_with_what_was_expected_and_found(lab):
    assert swarmlab("exercise", "start", "placement", "--lab", "t1", config=lab).returncode == 0
    d = lambda *args: swarmlab("docker", "swr1", "--lab", "t1", "--", *args, config=lab)  # noqa: E731
    for label, node in (("placepoint=gdc", "swr1"), ("placepoint=rp", "swr2"), ("env=dev", "swr1"), ("env=dev", "swr2")):
        assert d("node", "update", "--label-add", label, node).returncode == 0
    # The article's command, verbatim but for the image: `place` is not the label's key.
    created = d("service", "create", "--detach", "--name", "HelloWorld", "--replicas", "5",
                "--constraint", "node.labels.env==dev", "--constraint", "node.labels.place==gdc",
                "swarmlab/busybox", "ping", "swr1.t1.lab.swarmlab.test")
    assert created.returncode == 0, created.stderr
    # A student's ordinary command converges offline: the registry mirror answers for the image.
    assert "could not be accessed on a registry" not in created.stderr
    proc = swarmlab("exercise", "check", "placement", "--lab", "t1", "--no-wait", "--json", config=lab)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    by_name = {c["check"]: c for c in report["checks"]}
    assert by_name["node swr1"]["ok"] and by_name["node swr2"]["ok"]  # the labels were right
    service = by_name["service HelloWorld"]
    assert not service["ok"]
    assert "running tasks 5" in service["expected"] and "running tasks 0" in service["found"]
    assert "node.labels.place==gdc" in service["found"] and "no suitable node" in service["found"]
    text = swarmlab("exercise", "check", "placement", "--lab", "t1", "--no-wait", config=lab).stdout
    assert "✗ service HelloWorld: expected" in text and "✓ node swr1" in text

    # Hints count per lab, and a new start begins again at the first.
    first = swarmlab("exercise", "hint", "placement", "--lab", "t1", config=lab).stdout
    second = swarmlab("exercise", "hint", "placement", "--lab", "t1", config=lab).stdout
    assert first.startswith("hint 1/3:") and second.startswith("hint 2/3:") and "--constraint" in second


def test_every_exercise_tests_itself(lab, tmp_path):
    """All but failover and quorum, whose setup and solution are drills: the chaos module runs them."""
    chosen = [e.id for e in exercise_files.load_all() if e.id not in ("failover", "quorum")]
    started = time.monotonic()
    proc = swarmlab("exercise", "test", *chosen, "--lab", "t1", "--json", config=lab, timeout=2300)
    results = json.loads(proc.stdout or "[]")
    failed = [(r["exercise"], r["error"]) for r in results if not r["ok"]]
    figure(f"exercise test (all but failover): {time.monotonic() - started:.0f} s; "
          + ", ".join(f"{r['exercise']} {r['seconds']:.0f} s" for r in results))
    assert proc.returncode == 0 and not failed, failed or proc.stderr[-2000:]
    assert [r["exercise"] for r in results] == chosen and len(chosen) == 8
    assert all(r["failed_before_solve"] for r in results)  # each check set failed before its solution
    assert "SWMTKN" not in proc.stdout + proc.stderr  # the cluster exercise's join token stays hidden
    # The last exercise's end state, checked again with a JUnit report.
    junit = tmp_path / "publishing.xml"
    proc = swarmlab("exercise", "check", "publishing", "--lab", "t1", "--junit", str(junit), config=lab)
    assert proc.returncode == 0, proc.stdout
    assert 'failures="0"' in junit.read_text() and 'tests="5"' in junit.read_text()
