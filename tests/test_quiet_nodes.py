"""Before a new lab's `formed` snapshot: which nodes are still busy with the swarm they just
formed, and how a guest's clock is stepped to the host's after a revert."""

import pytest

from swarmlab.adapters import guest_agent
from swarmlab.adapters.guest_agent import GuestAgentMixin
from swarmlab.adapters.libvirt_errors import HypervisorError
from swarmlab.core.settling import QUIET_SHARE, busy_nodes


def test_a_node_is_busy_above_its_quiet_share_of_a_cpu_and_a_stopped_one_is_not_waited_for():
    used = {"swr1": 0.70, "swr2": 0.15, "swr3": None, "swr4": QUIET_SHARE * 2.0}
    assert busy_nodes(used, 1.0) == ["swr1", "swr4"]
    assert busy_nodes(used, 2.0) == ["swr1"]  # swr4: 0.6 s over 2 s is quiet
    assert busy_nodes({"swr1": 0.12}, 1.0) == []  # an idle formed node under TCG


class GuestClock:
    """A guest's clock and its agent: getTime, and `date -s '+N seconds'` run by guest-exec."""

    def __init__(self, offset: float, has_date: bool = True):
        self.offset, self.has_date, self.set_times, self.steps = offset, has_date, 0, []

    def getTime(self):
        t = guest_agent.time.time() + self.offset
        return {"seconds": int(t), "nseconds": int((t - int(t)) * 1e9)}

    def setTime(self, when, flags):
        self.set_times += 1
        self.offset = when["seconds"] + when["nseconds"] / 1e9 - guest_agent.time.time()


class Agent(GuestAgentMixin):
    def __init__(self, clock: GuestClock):
        self.clock = clock

    def _owned(self, name):
        return self.clock

    def guest_exec(self, name, argv, stdin=b"", timeout=60):
        if not self.clock.has_date:
            raise HypervisorError("guest-exec is disabled")
        assert argv[:2] == ["/bin/date", "-s"] and argv[2].endswith(" seconds")
        step = float(argv[2].split()[0])
        self.clock.steps.append(step)
        self.clock.offset += step
        return 0, ""


def test_a_reverted_guest_steps_its_own_clock_by_the_offset_in_one_step():
    clock = GuestClock(-128.2)  # a guest reverted to a snapshot taken two minutes ago
    Agent(clock).sync_clock("swr1")
    assert len(clock.steps) == 1 and clock.steps[0] == pytest.approx(128.2, abs=0.05)
    assert abs(clock.offset) < guest_agent.CLOCK_SYNCED and clock.set_times == 0
    Agent(clock).sync_clock("swr1")  # already in step: nothing is run
    assert len(clock.steps) == 1


def test_a_guest_without_guest_exec_is_set_through_the_agent_instead():
    clock = GuestClock(42.0, has_date=False)
    Agent(clock).sync_clock("swr1")
    assert clock.set_times == 1 and abs(clock.offset) < guest_agent.CLOCK_SYNCED
