"""A spinning node weighs less than one that answers a student: the rule (core/cpu_weights) from
readings, and the governor (classroom/cpu_share) against a stand-in hypervisor, including a
portal killed while it held weights low."""

import json

from swarmlab import config as configuration
from swarmlab.classroom import cpu_share
from swarmlab.core.cpu_weights import next_readings, weights_to_set


def run_for(seconds: int, busy: dict[str, float], nodes=None, cpu=None, start=0, weights=None):
    """Readings every 5 s while each node uses `busy[name]` of a CPU; returns the nodes and
    their CPU seconds."""
    first = start + 5 if nodes else start  # going on from earlier readings
    nodes, cpu = nodes or {}, cpu or {name: 100.0 for name in busy}
    for t in range(first, start + seconds + 1, 5):
        if t > start:
            cpu = {name: cpu[name] + 5 * share for name, share in busy.items()}
        nodes = next_readings(nodes, {name: (cpu[name], (weights or {}).get(name, 1024)) for name in busy}, t)
    return nodes, cpu


def test_a_node_that_spins_is_weighed_down_within_seconds_and_a_calm_one_is_not():
    nodes, _ = run_for(10, {"spin": 1.0, "calm": 0.07})
    assert nodes["spin"].weight == 64 and nodes["calm"].weight == 1024
    assert weights_to_set(nodes, {"spin": 1024, "calm": 1024}) == {"spin": 64}
    assert weights_to_set(nodes, {"spin": 64, "calm": 1024}) == {}


def test_a_login_burst_does_not_count_as_spinning():
    nodes, cpu = run_for(30, {"n": 0.07})
    nodes, cpu = run_for(5, {"n": 0.4}, nodes, cpu, start=30)  # 2 s of a CPU in 5 s
    nodes, _ = run_for(30, {"n": 0.07}, nodes, cpu, start=35)
    assert all(n.weight == 1024 for n in [nodes["n"]])


def test_a_node_gets_its_weight_back_only_once_it_has_calmed_down():
    nodes, cpu = run_for(30, {"n": 1.0})
    assert nodes["n"].low
    nodes, cpu = run_for(5, {"n": 0.0}, nodes, cpu, start=30)
    assert nodes["n"].low, "a pause of 5 s in a spin is still a spin"
    nodes, _ = run_for(30, {"n": 0.0}, nodes, cpu, start=35)
    assert not nodes["n"].low and nodes["n"].weight == 1024


def test_a_node_restarted_starts_calm_and_a_node_gone_is_forgotten():
    nodes, _ = run_for(30, {"n": 1.0, "m": 1.0})
    nodes = next_readings(nodes, {"n": (1.0, 64)}, 40)  # n's CPU time went back: a new process
    assert set(nodes) == {"n"} and not nodes["n"].low


def test_cgroup_v2_weights_divide_the_same_way():
    nodes, _ = run_for(30, {"n": 1.0}, weights={"n": 100})
    assert nodes["n"].weight == 6


class StandInHost:
    """Two running nodes and what a governor set on them."""
    def __init__(self):
        self.cpu = {"s01-swr1": 10.0, "s02-swr1": 10.0}
        self.weight = {"s01-swr1": 1024, "s02-swr1": 1024}

    def __call__(self, uri):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def node_cpu(self):
        return {name: (self.cpu[name], self.weight[name]) for name in self.cpu}

    def set_cpu_weight(self, name, weight):
        self.weight[name] = weight


def test_the_governor_weighs_down_a_spinning_node_and_a_restarted_portal_gives_it_back(tmp_path, monkeypatch):
    host, now = StandInHost(), [0.0]
    monkeypatch.setattr(cpu_share, "Hypervisor", host)
    config = configuration.Config(state_dir=tmp_path)
    governor = cpu_share.CpuGovernor(config, clock=lambda: now[0])
    said = []
    for _ in range(4):
        said.append(governor.look())
        now[0] += 5
        host.cpu["s01-swr1"] += 5.0  # spins
        host.cpu["s02-swr1"] += 0.3
    assert said == [[], [], ["local/s01-swr1: CPU weight 64"], []], "weighed down 10 s after the spin began"
    assert host.weight == {"s01-swr1": 64, "s02-swr1": 1024}
    assert json.loads((tmp_path / "cpu-weights.json").read_text()) == {"local": {"s01-swr1": 1024}}

    # kill -9, then a new portal: the node is still weighed down, its own weight is on record
    restarted = cpu_share.CpuGovernor(config, clock=lambda: now[0])
    assert restarted.look() == ["local/s01-swr1: CPU weight 1024"]
    assert host.weight["s01-swr1"] == 1024
    assert json.loads((tmp_path / "cpu-weights.json").read_text()) == {}


def test_a_clean_stop_gives_every_weight_back(tmp_path, monkeypatch):
    host, now = StandInHost(), [0.0]
    monkeypatch.setattr(cpu_share, "Hypervisor", host)
    governor = cpu_share.CpuGovernor(configuration.Config(state_dir=tmp_path), clock=lambda: now[0])
    for _ in range(5):
        governor.look()
        now[0] += 5
        host.cpu["s01-swr1"] += 5.0
    governor.look()
    assert host.weight["s01-swr1"] == 64
    governor.give_back()
    assert host.weight["s01-swr1"] == 1024


def test_a_host_out_of_reach_keeps_its_record_until_it_is_read_again(tmp_path, monkeypatch):
    from swarmlab.adapters.libvirt_errors import HypervisorError
    config = configuration.Config(state_dir=tmp_path)
    record = tmp_path / "cpu-weights.json"
    record.write_text(json.dumps({"local": {"s01-swr1": 1024}}))  # a killed portal left it low

    def unreachable(uri):
        raise HypervisorError("libvirt: End of file while reading data")
    monkeypatch.setattr(cpu_share, "Hypervisor", unreachable)
    governor = cpu_share.CpuGovernor(config, clock=lambda: 0.0)
    assert governor.look() == []
    assert json.loads(record.read_text()) == {"local": {"s01-swr1": 1024}}
    host = StandInHost()
    host.weight["s01-swr1"] = 64
    monkeypatch.setattr(cpu_share, "Hypervisor", host)
    assert governor.look() == ["local/s01-swr1: CPU weight 1024"]  # back: its own weight again
    assert json.loads(record.read_text()) == {}
