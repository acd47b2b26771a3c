"""Shared fixtures. Everything here is real: pdns_server, libvirtd, VMs.

Real-VM and lab host tests run inside a network namespace of their own (the project's
network rule); the PowerDNS client tests run a pdns_server on the host's loopback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from swarmlab import config as configuration
from swarmlab.adapters import daemons, dns, netns
from swarmlab.host import hoststate

ROOT = Path(__file__).resolve().parent.parent
# Template images are cached across runs, keyed by recipe; the key of the tests' SSH key is
# part of the recipe, so that key lives in the cache too.
TEST_CACHE = Path(os.environ.get("SWARMLAB_TEST_CACHE", "/var/cache/swarmlab"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def swarmlab(*args: str, config: Path | None = None, check: bool = False, timeout: float = 900,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the real CLI as a user would, never with the caller's own SWARMLAB_CONFIG: a test
    must not read, or act on, the lab of whoever runs the suite."""
    full_env = {**{k: v for k, v in os.environ.items() if k != "SWARMLAB_CONFIG"}, **(env or {})}
    if config:
        full_env["SWARMLAB_CONFIG"] = str(config)
    proc = subprocess.run([sys.executable, "-m", "swarmlab", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"swarmlab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_config(path: Path, state_dir: Path, **sections: dict) -> Path:
    base = {
        "libvirt": {"network": "swl-test", "cidr": "10.78.0.0/24", "template": "swl-test-debian13"},
        "dns": {"zone": "lab.swarmlab.test.", "api_url": f"http://127.0.0.1:{free_port()}"},
        "ssh": {"key": str(TEST_CACHE / "test-ssh" / "id_ed25519")},
        "host": {"namespace": "swl-test", "state_dir": str(state_dir), "cache_dir": str(TEST_CACHE),
                 "dns_port": free_port()},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    lines = []
    for section, values in base.items():
        lines.append(f"[{section}]")
        lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {str(v).lower()}" if isinstance(v, bool)
                  else f"{k} = {v!r}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_test_host(directory: Path) -> str:
    """A libvirt test:///FILE host of our own: a swarmlab network with DHCP hosts, node and
    template pools under `directory`, a shut-off owned template and a foreign running domain."""
    for sub in ("images", "volumes"):
        (directory / sub).mkdir(exist_ok=True)
    (directory / "images" / "template.qcow2").write_bytes(b"")
    xml = directory / "testhost.xml"
    xml.write_text((ROOT / "tests/fixtures/testhost.xml.in").read_text().replace("@DIR@", str(directory)))
    return f"test://{xml}"


@pytest.fixture
def pdns_server(tmp_path):
    """A real pdns_server (sqlite3 backend) on free loopback ports; yields (client, server, key)."""
    key = "test-key-" + os.urandom(8).hex()
    server = daemons.PdnsServer(tmp_path / "pdns", free_port(), free_port(), "lab.swarmlab.test.")
    server.prepare(key)
    proc = server.start()
    client = dns.PowerDNS(f"http://127.0.0.1:{server.api_port}", key)
    try:
        server.wait_ready(client, proc)
        yield client, server, key
    finally:
        proc.terminate()
        proc.wait(10)


def pytest_collection_modifyitems(config, items):
    """Unit and PowerDNS tests first, then the lab host lifecycle (which brings its own host up
    and down), then the real-VM modules, which share one session lab host and one 3-manager
    swarm lab, then the tests that remove that lab."""
    def rank(item):
        if item.get_closest_marker("last"):
            return 3  # tests that take the shared swarm lab down
        if item.module.__name__.endswith("test_labhost"):
            return 1
        return 2 if item.get_closest_marker("vm") else 0
    items.sort(key=rank)


EARLIER_RUNS = "swarmlab-test-*"  # in /var/tmp: every test lab host's directory


def down_every_lab(path: Path, check: bool = False) -> None:
    """`swarmlab down` of every lab that `swarmlab ls` lists on the host of config `path`."""
    import json
    for lab in json.loads(swarmlab("ls", "--json", config=path).stdout or "[]"):
        print(f"removing lab {lab['lab']}")
        swarmlab("down", "--lab", lab["lab"], "--yes", config=path, check=check)


@pytest.fixture(scope="session")
def earlier_runs_cleared():
    """A killed run (Ctrl-C, a CI time limit) leaves its labs, pools and daemons behind; its
    own config says which. swarmlab removes them, as a user would, then the directory goes."""
    import shutil
    leftovers = sorted(Path("/var/tmp").glob(f"{EARLIER_RUNS}/swarmlab.toml"), key=lambda p: p.stat().st_mtime,
                       reverse=True)
    for path in leftovers:
        print(f"removing what an earlier run left in {path.parent}")
        if swarmlab("host", "up", "--isolated", config=path).returncode == 0:
            down_every_lab(path)
        swarmlab("host", "down", config=path)  # a host up that failed half way left its daemons
        shutil.rmtree(path.parent, ignore_errors=True)


def lab_host_dir() -> Path:
    """A directory for a test lab host: node volumes live here, so qemu's user must reach it
    (pytest's own tmp dirs are 0700), and the next run finds it if this one is killed."""
    import tempfile
    path = Path(tempfile.mkdtemp(prefix=EARLIER_RUNS.rstrip("*"), dir="/var/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def vm_state_dir(earlier_runs_cleared):
    import shutil
    path = lab_host_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def host_up_or_skip(config_path: Path) -> configuration.Config:
    libvirtd = daemons.find_process("libvirtd")
    config = configuration.load(config_path)
    if libvirtd and not netns.in_netns(config.namespace, libvirtd):
        pytest.fail(f"libvirtd (pid {libvirtd}) already runs outside the test namespace: "
                    "run `swarmlab host down` (or stop libvirtd) before the real-component tests")
    swarmlab("host", "up", "--isolated", config=config_path, check=True)
    return config


@pytest.fixture(scope="session")
def vm_host(vm_state_dir):
    """One isolated lab host with a built template for every real-VM test: (config path, config,
    template build result). Torn down at the end of the session."""
    import json
    path = write_config(vm_state_dir / "swarmlab.toml", vm_state_dir / "state", nodes={"max": 6})
    config = host_up_or_skip(path)
    try:
        # a killed earlier run leaves its libvirt definitions behind: start from no labs
        down_every_lab(path, check=True)
        build = swarmlab("template", "build", "--json", config=path, timeout=1200)
        assert build.returncode == 0, build.stderr
        yield path, config, json.loads(build.stdout)
    finally:
        down_every_lab(path)
        swarmlab("host", "down", config=path)


@pytest.fixture(scope="session")
def lab3(vm_host):
    """The shared 3-node, 3-manager swarm lab `t1` with placement labels: (config path, config,
    `up --json` result)."""
    import json
    path, config, _ = vm_host
    hoststate.enter_host(config)
    proc = swarmlab("up", "3", "--lab", "t1", "--label", "swr1:placepoint=gdc", "--label", "swr2:env=dev",
                    "--json", config=path)
    assert proc.returncode == 0, proc.stderr
    assert "SWMTKN" not in proc.stdout + proc.stderr  # join tokens are never printed
    result = json.loads(proc.stdout)
    figure(f"up 3 of the shared lab t1: {result['seconds']:.0f} s (snapshot {result['snapshot']['seconds']:.1f} s)")
    return path, config, result


def docker_json(path, node: str, *args: str, lab: str = "t1") -> list[dict]:
    """`swarmlab docker NODE -- ARGS --format '{{json .}}'`, as an instructor would run it."""
    import json
    proc = swarmlab("docker", node, "--lab", lab, "--", *args, "--format", "{{json .}}", config=path)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


_module_seconds: dict[str, float] = {}
_test_seconds: dict[str, float] = {}
FIGURES: list[str] = []  # what VM tests measured on the way, printed in the summary


def figure(line: str) -> None:
    """A figure a VM test measured (a command's seconds, say), for the summary at the end."""
    FIGURES.append(line)


class Phases:
    """Seconds each phase of a long VM test took, one figure for the summary: where to look
    when the suite grows."""

    def __init__(self, title: str):
        import time
        self.title, self.last, self.spent = title, time.monotonic(), []

    def done(self, name: str) -> None:
        import time
        now = time.monotonic()
        self.spent.append(f"{name} {now - self.last:.0f} s")
        self.last = now

    def report(self) -> None:
        figure(f"{self.title}: " + ", ".join(self.spent))


_module_cpu: dict[str, list[int]] = {}  # module -> [busy, all] jiffies of the whole machine
_cpu_before: list[tuple[int, int]] = []


def _machine_cpu() -> tuple[int, int]:
    """(busy, all) jiffies of every core since boot, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def pytest_runtest_logreport(report):
    """Each real-VM module's and test's wall time (setup, call and teardown), and how busy the
    machine's cores were meanwhile (what running modules side by side could still win)."""
    if "vm" in report.keywords:
        module = report.nodeid.split("::")[0]
        _module_seconds[module] = _module_seconds.get(module, 0.0) + report.duration
        _test_seconds[report.nodeid] = _test_seconds.get(report.nodeid, 0.0) + report.duration
        now = _machine_cpu()
        if _cpu_before:
            used = _module_cpu.setdefault(module, [0, 0])
            used[0] += now[0] - _cpu_before[-1][0]
            used[1] += now[1] - _cpu_before[-1][1]
        _cpu_before[:] = [now]


def pytest_terminal_summary(terminalreporter):
    if _module_seconds:
        terminalreporter.section("time per VM module")
        for module, seconds in sorted(_module_seconds.items(), key=lambda item: -item[1]):
            busy, every = _module_cpu.get(module, [0, 0])
            cores = f"  cores {100 * busy / every:3.0f}% busy" if every else ""
            terminalreporter.write_line(f"{seconds:8.1f} s  {module}{cores}")
        terminalreporter.write_line(f"{sum(_module_seconds.values()):8.1f} s  in all")
        terminalreporter.section("the ten slowest VM tests (with their share of module fixtures)")
        for nodeid, seconds in sorted(_test_seconds.items(), key=lambda item: -item[1])[:10]:
            terminalreporter.write_line(f"{seconds:8.1f} s  {nodeid}")
    if FIGURES:
        terminalreporter.section("figures measured on the way")
        for line in FIGURES:
            terminalreporter.write_line(line)
