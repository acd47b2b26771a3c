"""The chaos timeline and its HTML report, from a timeline as a real run produces it."""

from swarmlab import chaos


def sample() -> chaos.Timeline:
    t = chaos.Timeline("kill-leader", "t1", "swr1", old_leader="swr1", new_leader="swr2", final_leader="swr2")
    t.started = 100.0
    for event, at, detail in (("killed", 100.0, "swr1 powered off"), ("api-unavailable", 100.4, ""),
                              ("new-leader", 118.2, "swr2"), ("api-back", 118.3, ""),
                              ("node-down", 151.0, "swr1 Down/Unreachable"),
                              ("tasks-rescheduled", 175.5, "hello 5/5")):
        t.mark(event, detail, at=at)
    t.missing = ["rejoined"]
    t.before = {"nodes": [{"node": "swr1", "status": "Ready", "availability": "Active", "manager": "Leader"}],
                "tasks": [{"service": "hello", "task": "hello.1", "node": "swr1", "state": "Running"}]}
    t.after = {"nodes": [{"node": "swr1", "status": "Down", "availability": "Active", "manager": "Unreachable"}],
               "tasks": [{"service": "hello", "task": "hello.1", "node": "swr3", "state": "Running"}]}
    return t


def test_events_are_seconds_since_the_kill_with_expected_windows():
    data = sample().as_dict()
    times = {e["event"]: e["t"] for e in data["events"]}
    assert times == {"killed": 0.0, "api-unavailable": 0.4, "new-leader": 18.2, "api-back": 18.3,
                     "node-down": 51.0, "tasks-rescheduled": 75.5}
    windows = {e["event"]: e["expected"] for e in data["events"]}
    assert windows["new-leader"] == (10, 31) and windows["node-down"] == (15, 60)
    assert data["missing"] == ["rejoined"]


def test_html_report_is_self_contained_with_svg_and_every_event():
    page = chaos.html_report([sample()])
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</svg>" in page
    for event in ("killed", "api-unavailable", "new-leader", "api-back", "node-down", "tasks-rescheduled", "rejoined"):
        assert event in page
    # tasks-rescheduled at 75.5 s is past its 20-70 s window, and only it is marked late
    assert page.count('<span class="late">late</span>') == 1
    row = page[page.index("<td>tasks-rescheduled</td>"):]
    assert row[:row.index("</tr>")].count('class="late"') == 1
    assert "not seen before the timeout" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing to fetch
    assert "hello.1" in page and "swr3" in page


def test_a_report_over_several_timelines_is_one_page():
    second = sample()
    second.exercise, second.target = "start", "swr3"
    page = chaos.html_report([sample(), second])
    assert page.count("<!DOCTYPE html>") == 1 and page.count("<html") == 1 and page.count("</html>") == 1
    assert page.count("<section>") == 2 and page.count("<svg") == 2
    assert "start: swr3 in lab t1" in page and "kill-leader: swr1 in lab t1" in page
