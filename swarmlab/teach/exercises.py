"""The article's exercises run on a lab: start, check, hint, solve, and the exercise's own
test (start, check must fail, solve, check must pass). The files are exercise_files.py;
verdicts come from checks.py (pure); this module reads the facts and carries out steps.
"""

from __future__ import annotations

import http.client
import json
import shlex
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from fabric import Connection

from swarmlab.adapters.engine_api import EngineAPI, EngineAPIBroken
from swarmlab.adapters.remote import Jump, RemoteError, open_stream, run, run_status
from swarmlab.config import Config, ConfigError
from swarmlab.core import check_loop, checks
from swarmlab.core.command import Command, redact, register_secret, sh
from swarmlab.errors import Refused, SwarmlabError
from swarmlab.lab import reset
from swarmlab.lab.formation import Finish
from swarmlab.lab.kept_nodes import KeptNodes
from swarmlab.lab.model import Lab, jump, lab_dir
from swarmlab.lab.session import open_lab
from swarmlab.teach.exercise_actions import ACTIONS
from swarmlab.teach.exercise_files import (DEFAULT_CHECK_TIMEOUT, Exercise, ExerciseError, context, node_of, render,
                                           resolve)

Progress = Callable[[str], None]
RETRY_EVERY = 2


# --- per-lab exercise state: hints seen, leader at start, image choices ------------------------
def _state_path(config: Config, lab: str) -> Path:
    return lab_dir(config, lab) / "exercise.json"


def load_state(config: Config, lab: str) -> dict:
    try:
        return json.loads(_state_path(config, lab).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def save_state(config: Config, lab: str, state: dict) -> None:
    path = _state_path(config, lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


# --- facts and probes ------------------------------------------------------------------------
def gather(conns: dict[str, Connection], lab: Lab, leader_at_start: str | None,
           kept: KeptNodes | None = None) -> checks.Facts:
    """The swarm's state from the first node that answers as a manager (over its kept session,
    when `kept` holds one)."""
    last = "no node answers over SSH"
    for node in lab.nodes:
        conn = conns.get(node.name)
        if conn is None:
            continue
        try:
            if kept is not None and (api := kept.api(node.name)) is not None:
                answers = {part: api.get(path, timeout=30) for part, path in checks.FACT_REQUESTS.items()}
            else:
                with EngineAPI(conn, timeout=30) as api:
                    answers = {part: api.get(path) for part, path in checks.FACT_REQUESTS.items()}
            return checks.Facts.from_answers(answers, leader_at_start=leader_at_start)
        except EngineAPIBroken as e:
            last = str(e)
            if kept is not None:
                kept.drop(node.name)
        except RemoteError as e:  # a worker's answer, or one the engine refused: the session is fine
            last = str(e)
    return checks.Facts(unavailable=f"no node answers as a swarm manager (last: {last})",
                        leader_at_start=leader_at_start)


def _hostname_node(lab: Lab, hostname: str):
    return next((n for n in lab.nodes if n.name == hostname), None)


def http_get(host: str, port: int, jump: Jump | None, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of GET / at host:port: from here, or through the lab host's sshd when the
    lab is on another machine (a user there would browse from that host's side)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = open_stream(host, port, timeout, jump)
    try:
        conn.request("GET", "/", headers={"Host": f"{host}:{port}"})
        response = conn.getresponse()
        return response.status, response.read(65536).decode(errors="replace")
    finally:
        conn.close()


def probe(check: dict, facts: checks.Facts, conns: dict[str, Connection], lab: Lab, via: Jump | None = None):
    """What a check needs beyond the facts; None when it needs nothing."""
    kind = check["type"]
    if kind == "http":
        answers = {}
        for hostname in checks.http_targets(check, facts):
            node = _hostname_node(lab, hostname)
            if node is None:
                continue
            try:
                status, body = http_get(node.ip, int(check["port"]), via)
                answers[hostname] = (status, body[:2000])
            except (OSError, http.client.HTTPException) as e:
                answers[hostname] = (type(e).__name__, "")
        return answers
    if kind == "script":
        conn = conns.get(check["node"])
        if conn is None:
            return (255, f"{check['node']} does not answer over SSH")
        try:
            exited, stdout, stderr = run_status(conn, sh(check["run"]), timeout=60)
        except RemoteError as e:
            return (255, str(e).split(": ", 1)[-1])
        tail = (stderr or stdout).strip().splitlines()[-1:] if exited else []
        return (exited, redact(tail[0])[:200] if tail else "")
    if kind == "mount":
        service = facts.service(check["service"])
        tasks = facts.running_tasks(service) if service else []
        by_id = facts.node_by_id()
        for task in tasks:
            host = by_id.get(task.get("NodeID"), {}).get("Description", {}).get("Hostname")
            container = (task.get("Status", {}).get("ContainerStatus") or {}).get("ContainerID")
            conn = conns.get(host or "")
            if not container or conn is None:
                continue
            try:
                # Digests only: a secret's content never leaves the node.
                path = shlex.quote(check["path"])
                inside = run(conn, Command("docker", "exec", container, "sh", "-c", f"test -s {path} && sha256sum < {path}"),
                             check=False, timeout=30).split()
                result = {"node": host, "inside": inside[0] if inside else None}
                if "same_as" in check:
                    ref = conns.get(check["same_as"]["node"])
                    out = run(ref, Command("sha256sum", check["same_as"]["file"]), timeout=30).split() if ref else []
                    result["reference"] = out[0] if out else "unreadable"
                return result
            except RemoteError as e:
                return {"error": str(e)}
        return None
    return None


# --- steps -----------------------------------------------------------------------------------
def run_steps(config: Config, lab: Lab, exercise: Exercise, steps: list[dict], ctx: dict,
              conns: dict[str, Connection], progress: Progress, what: str) -> None:
    for i, step in enumerate(steps):
        where = f"{exercise.id} {what} step {i + 1}"
        if "action" in step:
            progress(f"[{what}] {step['action']}")
            ACTIONS[step["action"]](config, lab, conns, step, progress, where)
            continue
        node = node_of(lab, step["node"])
        if node.name not in conns:
            raise ExerciseError(f"{where}: {node.name} does not answer over SSH: `swarmlab status --lab {lab.name}`")
        if "copy" in step:
            content = render((exercise.directory / step["copy"]).read_text(), ctx, f"{exercise.directory}/{step['copy']}")
            target = render(step["to"], ctx, where)
            progress(f"[{what}] {node.name}: copy {step['copy']} to {target}")
            with conns[node.name].sftp().open(target, "w") as f:
                f.write(content)
            continue
        shown_ctx = {**ctx, "vars": {k: ("<hidden>" if k in ctx.get("hidden", ()) else v)
                                     for k, v in ctx["vars"].items()}}
        command = render(step["run"], ctx, where)
        progress(f"[{what}] {node.name}# {render(step['run'], shown_ctx, where)}")
        try:
            out = run(conns[node.name], sh(command), timeout=step.get("timeout", 300))
        except RemoteError as e:
            raise ExerciseError(f"{where} on {node.name} failed: {redact(str(e))}") from None
        if "capture" in step:
            value = out.strip()
            if step.get("secret"):
                register_secret(value)  # join tokens: blanked in the log as well
                ctx.setdefault("hidden", set()).add(step["capture"])
            ctx["vars"][step["capture"]] = value


# --- commands --------------------------------------------------------------------------------
def _check_requirements(exercise: Exercise, lab: Lab, facts: checks.Facts | None) -> None:
    """Nodes from the lab (before anything is touched), managers from the swarm after the reset."""
    need = exercise.requires
    if len(lab.nodes) < need["nodes"]:
        raise Refused(f"exercise {exercise.id} needs {need['nodes']} nodes, lab {lab.name} has {len(lab.nodes)}: "
                      f"`swarmlab up {need['nodes']} --lab {lab.name}` adds them")
    if facts is None:
        return
    managers = sum(1 for n in facts.nodes if n.get("Spec", {}).get("Role") == "manager")
    if need.get("managers") and managers < need["managers"]:
        raise Refused(f"exercise {exercise.id} needs {need['managers']} managers, lab {lab.name} has {managers}: "
                      f"`swarmlab swarm form --lab {lab.name} --managers {need['managers']}`")


def start(config: Config, lab_name: str, exercise: Exercise, images: dict[str, str] | None = None,
          progress: Progress = lambda _m: None, finish: Sequence[Finish] = (), kept: KeptNodes | None = None) -> dict:
    """The lab at the exercise's starting point: reset to the formed snapshot (the cheapest level
    that works), then the exercise's setup; the leader at that moment is recorded. `kept`, when
    given, holds the sessions the setup opens, for what follows."""
    unknown = sorted(set(images or {}) - set(exercise.images))
    if unknown:
        raise ConfigError(f"exercise {exercise.id} has no image parameter {unknown[0]} (parameters: "
                          f"{', '.join(exercise.images) or 'none'})")
    with open_lab(config, lab_name) as session:
        _check_requirements(exercise, session.lab, None)
    result = reset.reset(config, lab_name, progress=lambda m: progress(f"[reset] {m}"), finish=finish)
    if not result.ok:
        raise ExerciseError(f"reset of lab {lab_name} failed: {(result.problems or [result.error])[0]}: "
                            f"`swarmlab reset --lab {lab_name}` shows more")
    with open_lab(config, lab_name, None if kept is not None else "answering") as session:
        conns = kept.connect(session.config, session.lab) if kept is not None else session.conns
        facts = gather(conns, session.lab, None)
        _check_requirements(exercise, session.lab, facts)
        previous = load_state(config, lab_name)
        chosen = {**previous.get("images", {}), **(images or {})}
        ctx = context(exercise, session.lab, chosen)
        run_steps(session.config, session.lab, exercise, exercise.setup, ctx, conns, progress, "setup")
        leader = gather(conns, session.lab, None).leader()
    save_state(config, lab_name, {"exercise": exercise.id, "started": time.time(), "hints": 0,
                                  "leader": leader, "images": chosen})
    reset_done = {"levels": result.levels, "reasons": result.reasons, "seconds": result.seconds}
    return {"lab": lab_name, "exercise": exercise.id, "reset": reset_done, "leader": leader}


def check(config: Config, lab_name: str, exercise: Exercise, wait: bool = True,
          progress: Progress = lambda _m: None, kept: KeptNodes | None = None) -> list[checks.Verdict]:
    """Every check, judged together against one reading of the swarm and retried until all pass
    on two readings in a row or a failing check's own timeout is over (Swarm converges over
    time). With wait=False, one pass. `kept` holds the lab's sessions between Checks."""
    state = load_state(config, lab_name)
    with open_lab(config, lab_name, None if kept is not None else "answering") as session:
        conns = kept.connect(session.config, session.lab) if kept is not None else session.conns
        ctx = context(exercise, session.lab, state.get("images"))
        resolved = [resolve(c, ctx) for c in exercise.checks]
        timeouts = [c.get("timeout", DEFAULT_CHECK_TIMEOUT) for c in resolved]

        def read() -> list[checks.Verdict]:
            facts = gather(conns, session.lab, state.get("leader"), kept)
            verdicts = []
            for i, c in enumerate(resolved):  # every check against the same facts: one end state
                result = probe(c, facts, conns, session.lab, jump(session.config))
                if result is not None:
                    facts.probes[i] = result
                verdicts.append(checks.judge(i, c, facts))
            return verdicts
        verdicts = check_loop.settle(read, timeouts, wait, RETRY_EVERY, progress)
    state = load_state(config, lab_name)  # reread: the check took a while
    state["last_check"] = {"exercise": exercise.id, **checks.tally(verdicts), "at": time.time()}
    save_state(config, lab_name, state)
    return verdicts


def hint(config: Config, lab_name: str, exercise: Exercise) -> dict:
    state = load_state(config, lab_name)
    if state.get("exercise") != exercise.id:
        state = {"exercise": exercise.id, "hints": 0, "images": state.get("images", {})}
    if not exercise.hints:
        return {"hint": None, "number": 0, "of": 0}
    seen = min(state.get("hints", 0) + 1, len(exercise.hints))
    state["hints"] = seen
    save_state(config, lab_name, state)
    with open_lab(config, lab_name) as session:
        ctx = context(exercise, session.lab, state.get("images"))
    return {"hint": render(exercise.hints[seen - 1], ctx, f"{exercise.id} hint {seen}"), "number": seen,
            "of": len(exercise.hints)}


def solve(config: Config, lab_name: str, exercise: Exercise, progress: Progress = lambda _m: None,
          kept: KeptNodes | None = None) -> None:
    state = load_state(config, lab_name)
    with open_lab(config, lab_name, None if kept is not None else "answering") as session:
        conns = kept.connect(session.config, session.lab) if kept is not None else session.conns
        ctx = context(exercise, session.lab, state.get("images"))
        run_steps(session.config, session.lab, exercise, exercise.solution, ctx, conns, progress, "solve")


@dataclass
class SelfTest:
    exercise: str
    ok: bool = False
    failed_before: list[str] = field(default_factory=list)  # checks that failed at the start (must be some)
    after: list[dict] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"exercise": self.exercise, "ok": self.ok, "failed_before_solve": self.failed_before,
                "after_solve": self.after, "error": self.error, "seconds": self.seconds}


def self_test(config: Config, lab_name: str, exercise: Exercise, progress: Progress = lambda _m: None) -> SelfTest:
    """start; check must fail; solve; check must pass. One login per node after the reset, kept
    for the setup, the checks and the solution: each login is seconds of emulated CPU under TCG."""
    began = time.monotonic()
    result = SelfTest(exercise.id)
    kept = KeptNodes()
    try:
        progress(f"{exercise.id}: start")
        start(config, lab_name, exercise, progress=progress, kept=kept)
        before = check(config, lab_name, exercise, wait=False, kept=kept)
        result.failed_before = [v.title for v in before if not v.ok]
        if not result.failed_before:
            raise ExerciseError("every check passed before the solution ran: the checks test nothing")
        progress(f"{exercise.id}: {len(result.failed_before)} of {len(before)} checks fail before the solution, as they must")
        solve(config, lab_name, exercise, progress, kept)
        after = check(config, lab_name, exercise, wait=True, progress=lambda m: progress(f"{exercise.id}: {m}"),
                      kept=kept)
        result.after = [v.as_dict() for v in after]
        bad = [v for v in after if not v.ok]
        if bad:
            raise ExerciseError(f"after the solution, {bad[0].title}: expected {bad[0].expected}, found {bad[0].found}")
        result.ok = True
    except SwarmlabError as e:
        result.error = str(e)
    finally:
        kept.close()
    result.seconds = round(time.monotonic() - began, 1)
    return result


def junit(exercise: Exercise, lab_name: str, verdicts: list[checks.Verdict], seconds: float) -> str:
    suite = ET.Element("testsuite", name=f"swarmlab.{exercise.id}", tests=str(len(verdicts)),
                       failures=str(sum(not v.ok for v in verdicts)), time=f"{seconds:.1f}")
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"{lab_name}.{exercise.id}", name=v.title)
        if not v.ok:
            ET.SubElement(case, "failure", message=f"expected {v.expected}; found {v.found}")
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
