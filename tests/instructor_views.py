"""What the class VM test asks of the instructor's views, in the browser and from the CLI:
watching a student's terminal and taking the keyboard, the progress board and a student's
history (commands typed in the portal and over SSH, a secret masked), the CSV report, the
student's own restart, and the class's clock. Windows: Ann's page, Bo's page, the
instructor's page, in that order."""

import csv
import io
import json
import time
from pathlib import Path

from tests.browser import SCREENSHOTS, type_in_terminal, wait_for
from tests.conftest import swarmlab

SECRET = "s3cr3t-of-ann-lee"


def by_css(browser, css: str):
    from selenium.webdriver.common.by import By
    return browser.find_element(By.CSS_SELECTOR, css)


def watch_and_take_the_keyboard(browser) -> None:
    """The instructor opens Ann's terminal: her screen so far, what she types next, and the
    instructor's own typing once the keyboard is taken; her page shows the watch mark."""
    from selenium.webdriver.common.action_chains import ActionChains
    ann, _bo, desk = browser.window_handles
    browser.switch_to.window(desk)
    by_css(browser, "#class tr[data-lab='ann-lee'] button.watch").click()
    wait_for(browser, "#watch-term .xterm-rows", "student@swr1")  # what her terminal showed before
    browser.switch_to.window(ann)
    wait_for(browser, "#watched", "your instructor is watching", timeout=30)
    type_in_terminal(browser, "swr1", "echo typed-by-$((6*7))-ann\n")
    browser.switch_to.window(desk)
    wait_for(browser, "#watch-term .xterm-rows", "typed-by-42-ann", timeout=30)
    by_css(browser, "#watch-term .xterm-screen").click()
    ActionChains(browser).send_keys("echo not-typed\n").perform()  # read-only: nothing reaches her shell
    by_css(browser, "#keyboard").click()
    by_css(browser, "#watch-term .xterm-screen").click()
    ActionChains(browser).send_keys("echo typed-by-$((7*6))-teacher\n").perform()
    browser.switch_to.window(ann)
    wait_for(browser, "#watched", "your instructor is typing", timeout=30)
    shown = wait_for(browser, "#term-swr1 .xterm-rows", "typed-by-42-teacher", timeout=30)
    assert "not-typed" not in shown, shown
    browser.save_screenshot(str(SCREENSHOTS / "student-watched.png"))
    browser.switch_to.window(desk)
    browser.save_screenshot(str(SCREENSHOTS / "instructor-watch.png"))
    by_css(browser, "#keyboard").click()
    by_css(browser, "#watch-close").click()
    browser.switch_to.window(ann)
    deadline = time.monotonic() + 30
    while by_css(browser, "#watched").is_displayed() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not by_css(browser, "#watched").is_displayed(), "the watch mark stayed after the instructor left"


def type_a_secret_and_a_command_over_ssh(browser, ann_folder: Path) -> None:
    from tests.test_classroom_vm import student_ssh
    ann = browser.window_handles[0]
    browser.switch_to.window(ann)
    type_in_terminal(browser, "swr1", f"echo {SECRET} | docker secret create db_pass -\n")
    type_in_terminal(browser, "swr1", "docker secret ls --format 'made:{{.Name}}' | tr a-z A-Z\n")
    wait_for(browser, "#term-swr1 .xterm-rows", "MADE:DB_PASS", timeout=60)
    out = student_ssh(ann_folder, "swr2", "echo over-ssh-$((40+2))")
    assert out.returncode == 0 and out.stdout.strip() == "over-ssh-42", out.stdout + out.stderr


def assert_board_history_and_report(path, browser, config, tmp_path: Path) -> None:
    """The board counts Ann's and Bo's Checks and Hints; Ann's history has what she typed in
    the portal and over SSH, her secret masked; the CSV has a row per student and exercise."""
    desk = browser.window_handles[2]
    browser.switch_to.window(desk)
    board = wait_for(browser, "#board tbody", "Bo", timeout=30)
    rows = {line.split(" (")[0]: line for line in board.splitlines()}
    assert "✓" in rows["Ann Lee"] and "1a 1h" in rows["Ann Lee"], board
    assert "✗" in rows["Bo"] and "1a" in rows["Bo"], board
    by_css(browser, "#board tr:nth-child(1) td.cell").click()
    history = wait_for(browser, "#history-events", "over-ssh", timeout=60)
    assert "check ✓" in history and "hint 1" in history, history
    assert "swr1$ echo typed-by-$((7*6))-teacher" in history, history  # typed into her shell: in her history
    assert "swr1$ echo <hidden> | docker secret create db_pass -" in history and SECRET not in history, history
    assert "swr2$ echo over-ssh-$((40+2))" in history, history
    browser.save_screenshot(str(SCREENSHOTS / "instructor-board.png"))
    everything = json.loads(swarmlab("class", "history", "ann-lee", "--json", config=path).stdout)
    typed = [e["line"] for e in everything if e["kind"] == "command"]
    # before the exercise, over SSH; in the portal; the instructor's typing in her shell too
    assert "id -un; docker node ls --format '{{.Hostname}}'" in typed and "docker node ls" in typed, typed
    assert SECRET not in (config.state_dir / "class-events.jsonl").read_text()
    assert (config.state_dir / "class-events.jsonl").stat().st_mode & 0o777 == 0o600
    report = swarmlab("class", "report", "--csv", "-", config=path)
    assert report.returncode == 0, report.stderr
    grades = {(r["student"], r["exercise"]): r for r in csv.DictReader(io.StringIO(report.stdout))}
    assert set(grades) == {("Ann Lee", "services"), ("Bo", "services")}, grades
    ann, bo = grades[("Ann Lee", "services")], grades[("Bo", "services")]
    assert (ann["attempts"], ann["hints"], ann["passed"], ann["score"]) == ("1", "1", "yes", "1.0"), ann
    assert (bo["attempts"], bo["passed"]) == ("1", "no") and float(bo["score"]) < 1, bo


def restart_from_the_student_page(path, browser) -> None:
    """Ann restarts the exercise herself: confirmed, followed on her page, her terminal ended,
    the exercise's start back in her lab, and the restart in her history."""
    ann = browser.window_handles[0]
    browser.switch_to.window(ann)
    by_css(browser, "#restart").click()
    browser.switch_to.alert.accept()
    wait_for(browser, "#job", "✓ done", timeout=600)
    wait_for(browser, "#term-swr1 .xterm-rows", "session ended: you restarted the exercise", timeout=30)
    type_in_terminal(browser, "swr1", "\n")  # a new shell on the restarted lab
    wait_for(browser, "#term-swr1 .xterm-rows", "[reconnected]", timeout=60)
    services = swarmlab("docker", "swr1", "--lab", "ann-lee", "--", "service", "ls", "--format", "{{.Name}}",
                        config=path)
    assert services.stdout.split() == ["Leftover"], services.stdout + services.stderr
    kinds = [(e["kind"], e.get("by")) for e in
             json.loads(swarmlab("class", "history", "ann-lee", "--json", config=path).stdout)]
    assert ("restart", "student") in kinds, kinds


def assert_the_clock_ends_the_class(path, browser) -> None:
    """A class a minute from its end: Ann's page counts down; the instructor ends it there and
    then (`class end`): her terminal closes with why, Check still answers, and `class extend`
    opens the terminals again."""
    ann = browser.window_handles[0]
    browser.switch_to.window(ann)
    extended = swarmlab("class", "extend", "1", config=path)
    assert extended.returncode == 0, extended.stderr
    browser.refresh()  # a fresh shell, and the page's own clock
    wait_for(browser, "#term-swr1 .xterm-rows", "student@swr1", timeout=60)
    wait_for(browser, "#clock", "left", timeout=15)
    ended = swarmlab("class", "end", config=path)
    assert ended.returncode == 0 and "ended at" in ended.stdout, ended.stdout + ended.stderr
    wait_for(browser, "#term-swr1 .xterm-rows", "the class ended at", timeout=30)
    wait_for(browser, "#clock", "the class ended", timeout=15)
    by_css(browser, "#check").click()
    wait_for(browser, "#verdict", "not yet", timeout=300)  # Check still grades: her lab is at the start
    again = swarmlab("class", "extend", "30", config=path)
    assert again.returncode == 0 and "ends at" in again.stdout, again.stdout + again.stderr
    type_in_terminal(browser, "swr1", "\n")  # the page waits for Enter after a session the portal ended
    wait_for(browser, "#term-swr1 .xterm-rows", "[reconnected]", timeout=60)
