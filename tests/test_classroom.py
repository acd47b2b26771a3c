"""Class decisions from facts: roster names, capacity, placement over hosts, subnets; and the
survey of several fake hosts on libvirt's test driver (test:///FILE, one per host). The VM
test (`test_classroom_vm.py`) proves the labs themselves."""

import ipaddress
import json
from pathlib import Path

import pytest

from swarmlab import config as configuration
from swarmlab.classroom import room as classroom
from swarmlab.config import HostSpec
from swarmlab.core import placement, roster
from swarmlab.core.placement import CapacityShort, HostRoom
from swarmlab.core.roster import RosterError, Student
from swarmlab.errors import Refused
from swarmlab.host import lab_hosts
from tests.conftest import ROOT, swarmlab, write_config


def test_roster_names_become_distinct_lab_names():
    students = roster.students_from_roster("# group A\nAnn Lee\n\nJosé  Núñez  # late\nO'Brien, Pat\n", "r.txt")
    assert [(s.name, s.lab) for s in students] == [("Ann Lee", "ann-lee"), ("José  Núñez", "jose-nunez"),
                                                  ("O'Brien, Pat", "o-brien-pat")]
    assert [s.lab for s in roster.students_from_count(3)] == ["s01", "s02", "s03"]
    assert roster.students_from_count(120)[-1].lab == "s120"


@pytest.mark.parametrize("text, expected", [
    ("Ann Lee\nann lee\n", "r.txt:2: 'ann lee' and 'Ann Lee' both become lab ann-lee"),
    ("Ann\n42\n", "r.txt:2: '42' gives no lab name"),
    ("# nobody\n\n", "r.txt names no students"),
])
def test_bad_rosters_name_the_line_and_the_fix(text, expected):
    with pytest.raises(RosterError) as err:
        roster.students_from_roster(text, "r.txt")
    assert expected in str(err.value)


def test_free_nodes_from_nodes_memory_or_what_libvirt_reports():
    spec = HostSpec("h", "test:///x")
    assert placement.free_nodes(HostSpec("h", "u", nodes=12), 0, 5, 1724) == 7
    assert placement.free_nodes(HostSpec("h", "u", memory_mib=20000), 99999, 2, 1724) == 9
    # 24 GiB reported: 90 % of it at 1.7 GiB a node
    assert placement.free_nodes(spec, 24576, 0, 1724) == 12
    assert placement.free_nodes(spec, 24576, 12, 1724) == 0
    # emulated CPUs (no KVM): at most 9 nodes a CPU, whatever the memory; [[hosts]] nodes still rules.
    # The 9 is what idle nodes at the measured 7.9 % of a CPU each may take; cheaper ones, more.
    assert placement.nodes_per_emulated_cpu() == placement.TCG_NODES_PER_CPU == 9
    assert placement.nodes_per_emulated_cpu(3.5) == 20 and placement.nodes_per_emulated_cpu(90) == 1
    assert placement.free_nodes(spec, 24576, 0, 576, emulated_cpus=2) == 18
    assert placement.free_nodes(spec, 24576, 0, 576, emulated_cpus=0) == 38
    assert placement.free_nodes(spec, 24576, 15, 576, emulated_cpus=2) == 3
    assert placement.free_nodes(HostSpec("h", "u", nodes=30), 0, 0, 576, emulated_cpus=2) == 30
    assert placement.room_bound(spec, 24576, 576, 2) == "2 CPUs without KVM (9 nodes a CPU)"
    assert placement.room_bound(spec, 24576, 576, 0) == "memory"
    assert placement.room_bound(spec, 24576, 576, 16) == "memory"
    assert placement.room_bound(HostSpec("h", "u", nodes=30), 0, 576, 2) == "[[hosts]] nodes"
    # the node pool holds every node full: 77 GiB free, 3 nodes holding 1 GiB now, 8.5 GiB each at most
    pool = placement.PoolRoom(77 << 30, 1 << 30, placement.node_disk_bytes(8 << 30, 512))
    assert placement.free_nodes(spec, 24576, 3, 576, emulated_cpus=2, pool=pool) == 6
    assert placement.room_bound(spec, 24576, 576, 2, pool) == "disk (each node may fill 8.5 GiB of the node pool)"
    refusal = str(pytest.raises(CapacityShort, placement.place, ["a", "b"], 3,
                                [placement.HostRoom("local", 3, bound_by="2 CPUs without KVM (9 nodes a CPU)")]).value)
    assert "(local 3 free, bound by 2 CPUs without KVM (9 nodes a CPU))" in refusal
    # The default node: a 256 MiB translation cache and what the bench measured beyond it.
    assert placement.node_cost_mib(0, 256) == 256 + placement.BEYOND_TB_CACHE_MIB
    assert placement.node_cost_mib(0, 0) == 1024 + placement.BEYOND_TB_CACHE_MIB  # QEMU's own 1 GiB cache
    assert placement.node_cost_mib(900, 256) == 900  # [class] node_mib, as the instructor measured it


def test_each_lab_goes_whole_to_the_host_with_most_room():
    rooms = [HostRoom("h1", 7), HostRoom("h2", 6), HostRoom("h3", 40, "unreachable at qemu+tcp://h3/system")]
    assert placement.place(["a", "b", "c", "d"], 3, rooms) == {"a": "h1", "b": "h2", "c": "h1", "d": "h2"}


def test_short_capacity_is_refused_naming_what_is_missing():
    rooms = [HostRoom("h1", 7), HostRoom("h2", 2), HostRoom("h3", 0, "unreachable at qemu+tcp://h3/system (x)")]
    with pytest.raises(CapacityShort) as err:
        placement.place(["a", "b", "c", "d"], 3, rooms)
    message = str(err.value)
    assert "4 labs of 3 nodes need 12 nodes, the hosts take 2 labs" in message
    assert "h1 7 free, h2 2 free, h3: unreachable at qemu+tcp://h3/system" in message
    assert "2 labs (6 nodes) are missing" in message and "\n" not in message


def test_subnets_skip_every_range_already_on_the_host():
    taken = [ipaddress.IPv4Network("10.80.0.0/24"), ipaddress.IPv4Network("10.80.2.0/23")]
    assert str(placement.next_subnet(ipaddress.IPv4Network("10.80.0.0/16"), taken)) == "10.80.1.0/24"
    taken.append(ipaddress.IPv4Network("10.80.1.0/24"))
    assert str(placement.next_subnet(ipaddress.IPv4Network("10.80.0.0/16"), taken)) == "10.80.4.0/24"
    with pytest.raises(CapacityShort, match="no free /24 left"):
        placement.next_subnet(ipaddress.IPv4Network("10.80.0.0/23"), [ipaddress.IPv4Network("10.80.0.0/23")])


# --- several fake hosts ----------------------------------------------------------------------
NODE = """  <domain type="test">
    <name>{name}</name>
    <metadata><swarmlab:resource xmlns:swarmlab="https://swarmlab.dev/xmlns/resource/1" role="node" lab="old"/></metadata>
    <memory unit="MiB">1024</memory>
    <os><type arch="x86_64">hvm</type></os>
  </domain>
</node>"""


def fake_host(directory, memory_gib: int, nodes: int = 0, template: bool = True) -> str:
    """A test:///FILE host with `memory_gib` of memory, `nodes` swarmlab nodes, maybe the template."""
    directory.mkdir()
    for sub in ("images", "volumes"):
        (directory / sub).mkdir()
    xml = (ROOT / "tests/fixtures/testhost.xml.in").read_text().replace("@DIR@", str(directory))
    xml = xml.replace("<memory>25165824</memory>", f"<memory>{memory_gib << 20}</memory>")
    if not template:
        xml = xml.replace("<name>unit-template</name>", "<name>other-template</name>")
    for i in range(nodes):
        xml = xml.replace("</node>", NODE.format(name=f"old-swr{i}"))
    (directory / "host.xml").write_text(xml)
    return f"test://{directory / 'host.xml'}"


@pytest.fixture
def fake_class(tmp_path):
    hosts = [("big", fake_host(tmp_path / "big", 24)), ("small", fake_host(tmp_path / "small", 12, nodes=2)),
             ("bare", fake_host(tmp_path / "bare", 24, template=False)),
             ("gone", f"test://{tmp_path}/missing.xml"), ("far", "qemu+tcp://192.0.2.7/system"),
             ("nodns", "qemu+ssh://root@192.0.2.8/system")]
    path = write_config(tmp_path / "swarmlab.toml", tmp_path / "state",
                        libvirt={"uri": hosts[0][1], "network": "swl-unit", "cidr": "10.79.0.0/24",
                                 "template": "unit-template"},
                        **{"class": {"node_mib": 1724, "node_disk_gib": 4}})  # round figures: 12 nodes on 24 GiB
    text = path.read_text() + "".join(f'\n[[hosts]]\nname = "{n}"\nuri = "{u}"\n' for n, u in hosts)
    path.write_text(text)
    return configuration.load(path)


def test_the_survey_reads_each_hosts_room_and_names_the_ones_that_take_nothing(fake_class):
    rooms = {r.name: r for r in lab_hosts.survey(fake_class)}
    assert rooms["big"].free_nodes == 12 and not rooms["big"].problem
    # 12 GiB: 11059 MiB usable, 2 nodes there take 3448 of it, 1724 each
    assert rooms["small"].free_nodes == 4 and not rooms["small"].problem
    assert rooms["bare"].free_nodes == 0 and "has no template unit-template" in rooms["bare"].problem
    assert rooms["gone"].free_nodes == 0 and rooms["gone"].problem.startswith("unreachable at test://")
    # hosts on another machine are refused before libvirt is asked, naming what is missing
    assert rooms["far"].free_nodes == 0 and 'set ssh = "root@HOST"' in rooms["far"].problem
    assert rooms["nodns"].free_nodes == 0 and "[host] services_address" in rooms["nodns"].problem


def test_a_host_on_another_machine_that_does_not_answer_is_named_in_one_line(tmp_path):
    path = write_config(tmp_path / "swarmlab.toml", tmp_path / "state", host={"services_address": "127.0.0.1"},
                        libvirt={"uri": "test:///default"})
    # loopback port 1: nothing listens, so libvirt's connection is refused at once
    path.write_text(path.read_text() + '\n[[hosts]]\nname = "h9"\nuri = "qemu+tcp://127.0.0.1:1/system"\n'
                    'ssh = "root@127.0.0.1:1"\n')
    config = configuration.load(path)
    room = {r.name: r for r in lab_hosts.survey(config)}["h9"]
    assert room.free_nodes == 0 and room.problem.startswith("unreachable at qemu+tcp://127.0.0.1:1/system")
    assert "\n" not in room.problem and "doctor --host" in room.problem
    made = swarmlab("class", "up", "--students", "2", "--json", config=path)
    assert made.returncode != 0 and "Traceback" not in made.stderr
    assert "h9" in made.stderr and "unreachable at qemu+tcp://127.0.0.1:1/system" in made.stderr


def test_a_labs_failure_on_another_machine_names_that_host_whatever_step_failed(tmp_path):
    """A libvirtd that goes away mid-call says only "End of file while reading data"."""
    path = write_config(tmp_path / "swarmlab.toml", tmp_path / "state", libvirt={"uri": "test:///default"},
                        **{"class": {"parallel": 1}})  # no host is asked how many labs it makes at once
    path.write_text(path.read_text() + '\n[[hosts]]\nname = "h9"\nuri = "qemu+tcp://10.9.9.9/system"\n')
    config = configuration.load(path)
    students = [roster.Student("Ann", "ann", "local", "10.80.1.0/24"),
                roster.Student("Bo", "bo", "h9", "10.80.2.0/24")]

    def work(scoped, student):
        raise classroom.ClassError("starting bo-swr1 failed: End of file while reading data")
    results = {r.lab: r.error for r in classroom.each_lab(config, students, work)}
    assert results == {"ann": "starting bo-swr1 failed: End of file while reading data",
                       "bo": "host h9 (qemu+tcp://10.9.9.9/system): starting bo-swr1 failed: End of file while reading data"}


def test_the_plan_places_labs_over_the_hosts_with_subnets_of_their_own(fake_class):
    room = classroom.plan(fake_class, roster.students_from_count(5), 3)
    assert [(s.lab, s.host) for s in room.students] == [("s01", "big"), ("s02", "big"), ("s03", "big"),
                                                        ("s04", "small"), ("s05", "big")]
    by_host = {}
    for s in room.students:
        by_host.setdefault(s.host, []).append(s.cidr)
    # unique over the whole class, so that a name in the zone points at one node only
    assert by_host == {"big": ["10.80.0.0/24", "10.80.1.0/24", "10.80.2.0/24", "10.80.4.0/24"],
                       "small": ["10.80.3.0/24"]}


def test_a_class_too_big_for_the_hosts_is_refused_before_anything_is_made(fake_class):
    with pytest.raises(CapacityShort, match=r"6 labs of 3 nodes need 18 nodes, the hosts take 5 labs .* "
                                            r"1 lab \(3 nodes\) is missing"):
        classroom.class_up(fake_class, roster.students_from_count(6), 3)
    assert classroom.load(fake_class) is None
    assert not (fake_class.state_dir / "labs").exists()


def test_a_rerun_keeps_every_students_host_and_subnet(fake_class):
    first = classroom.plan(fake_class, roster.students_from_count(2), 3)
    classroom.save(fake_class, first)
    again = classroom.plan(fake_class, roster.students_from_count(3), 3)
    assert again.students[:2] == first.students and again.students[2].lab == "s03"
    assert again.students[2].cidr not in {s.cidr for s in first.students}
    with pytest.raises(Refused, match="keep --nodes 3"):
        classroom.plan(fake_class, roster.students_from_count(3), 2)
    saved = json.loads((fake_class.state_dir / "class.json").read_text())
    assert [s["lab"] for s in saved["students"]] == ["s01", "s02"]


def test_a_students_lab_config_is_scoped_to_its_host_and_network(fake_class):
    student = Student("Ann", "ann", "small", "10.80.5.0/24")
    scoped = classroom.student_config(fake_class, student)
    assert scoped.uri == fake_class.host("small").uri and scoped.network == "swl-unit-ann"
    assert str(scoped.gateway) == "10.80.5.1" and scoped.node_pool == "swl-unit-nodes"
    assert scoped.host_gateway == fake_class.gateway  # the registry mirror stays on the shared network


def test_host_add_ls_rm_through_the_cli(tmp_path):
    from tests.conftest import swarmlab
    first = fake_host(tmp_path / "one", 24)
    path = write_config(tmp_path / "swarmlab.toml", tmp_path / "state",
                        libvirt={"uri": first, "network": "swl-unit", "cidr": "10.79.0.0/24",
                                 "template": "unit-template"},
                        host={"ksm": False}, **{"class": {"node_mib": 1724}})  # KSM is this machine's: its state is not this test's
    path.write_text("# the instructor's own comment\n" + path.read_text())
    second = fake_host(tmp_path / "two", 12)
    added = swarmlab("host", "add", second, "--name", "two", "--nodes", "6", "--lab-range", "10.81.0.0/16",
                     config=path)
    assert added.returncode == 0, added.stderr
    assert path.read_text().startswith("# the instructor's own comment\n")
    rows = {r["host"]: r for r in json.loads(swarmlab("host", "ls", "--json", config=path).stdout)}
    # 12 by memory; the test driver's pool has 100 GiB, and each node may fill its 8 GiB disk and a memory state
    assert (rows["local"]["free_nodes"], rows["two"]["free_nodes"], rows["two"]["capacity"]) == (11, 6, "6 nodes")
    assert rows["local"]["bound_by"] == "disk (each node may fill 8.5 GiB of the node pool)"
    again = swarmlab("host", "add", second, "--name", "two", config=path)
    assert again.returncode == 2 and "repeats host two" in again.stderr
    unreachable = swarmlab("host", "add", f"test://{tmp_path}/nope.xml", "--name", "gone", config=path)
    assert unreachable.returncode == 1 and "is not reachable" in unreachable.stderr
    assert "gone" not in path.read_text()
    doctor = json.loads(swarmlab("doctor", "--host", "two", "--json", config=path).stdout)
    assert {c["check"]: c["ok"] for c in doctor["checks"]} == {
        "libvirt": True, "pool": True, "template": True, "room": True, "lab range": True, "reach": True, "ksm": True}
    removed = swarmlab("host", "rm", "two", config=path)
    assert removed.returncode == 0, removed.stderr
    assert [r["host"] for r in json.loads(swarmlab("host", "ls", "--json", config=path).stdout)] == ["local"]


def test_labs_made_at_once_follow_the_hosts_cpus_unless_set(fake_class):
    import dataclasses
    big = fake_class.host("big")  # the fixture's host has 2 CPUs
    assert classroom.labs_at_once(fake_class, big) == 1
    assert classroom.labs_at_once(dataclasses.replace(fake_class, parallel=3), big) == 3
    assert classroom.labs_at_once(fake_class, fake_class.host("gone")) == 1


def test_labs_planned_but_not_made_yet_keep_their_room(fake_class):
    classroom.save(fake_class, classroom.plan(fake_class, roster.students_from_count(2), 3))
    # big has 12 free and holds 6 for s01 and s02, which do not exist yet; small has 4
    room = classroom.plan(fake_class, roster.students_from_count(5), 3)
    assert [s.host for s in room.students] == ["big", "big", "big", "small", "big"]
    with pytest.raises(CapacityShort, match="the hosts take 3 labs"):
        classroom.plan(fake_class, roster.students_from_count(6), 3)


def test_the_projector_page_reloads_itself_and_escapes_names():
    from swarmlab.render import render
    rows = [{"student": "<b>Ann</b>", "lab": "b-ann-b", "host": "local", "nodes": 3, "ready": 2, "swarm": "unhealthy",
             "down": ["swr2"], "exercise": "services",
             "last_check": {"exercise": "services", "passed": 3, "of": 4, "ok": False}},
            {"student": "Bo", "lab": "bo", "host": "local", "nodes": 0, "ready": 0, "swarm": "unknown",
             "error": "lab bo does not exist", "exercise": None, "last_check": None}]
    from swarmlab.core import progress
    cells = progress.board([{"at": 1, "lab": "b-ann-b", "kind": "start", "exercise": "services"},
                            {"at": 61, "lab": "b-ann-b", "kind": "check", "exercise": "services", "by": "student",
                             "ok": True, "passed": 4, "of": 4}], [("<b>Ann</b>", "b-ann-b"), ("Bo", "bo")], [])
    exercises, grid = progress.grid(cells)
    values = dict(rows=rows, refresh=10, at="10:00:00", clock="ends at 16:30 (42 min left)", exercises=exercises,
                  grid=grid, brief=progress.brief)
    page = render("class-status.html.j2", names=True, **values)
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "&lt;b&gt;Ann&lt;/b&gt;" in page and "<b>Ann</b>" not in page
    assert "0/2 swarms healthy · ends at 16:30 (42 min left)" in page and "2/3 (swr2 down)" in page
    assert "✗ services 3/4" in page and "lab bo does not exist" in page
    assert '<td class="passed">✓ 1:00 1a</td>' in page
    # for the projector, without names: students are numbers, and neither name nor lab shows
    anonymous = render("class-status.html.j2", names=False, **values)
    assert "Ann" not in anonymous and "b-ann-b" not in anonymous and ">Bo<" not in anonymous
    assert '<td class="passed">✓ 1:00 1a</td>' in anonymous and "<td>2</td>" in anonymous


def test_class_down_ends_the_instructors_link(fake_class):
    from swarmlab.classroom import access
    token = access.instructor_token(fake_class)
    classroom.save(fake_class, classroom.Classroom(3, [roster.Student("Ann", "ann", "big", "10.80.0.0/24")]))
    results = classroom.class_down(fake_class)
    assert [r.ok for r in results] == [True] and classroom.load(fake_class) is None
    assert access.instructor_token(fake_class) != token


def test_class_reset_of_a_lab_the_class_does_not_have_names_the_labs_and_touches_nothing(fake_class):
    classroom.save(fake_class, classroom.Classroom(3, [roster.Student("Ann", "ann", "big", "10.80.0.0/24")]))
    proc = swarmlab("class", "reset", "--lab", "bo", config=Path(fake_class.source))
    assert proc.returncode == 3 and proc.stderr.strip().splitlines() == [
        "swarmlab: the class has no lab bo (labs: ann); see `swarmlab class status`"], proc.stderr
    assert [s.lab for s in classroom.load(fake_class).students] == ["ann"]


def test_a_rerun_of_class_up_says_what_it_did_to_each_lab():
    from swarmlab.classroom.student_lab import what_was_done
    from swarmlab.core.swarm import FormReport
    assert what_was_done({}, FormReport(initialized="swr1", joined=["swr2"])) == "made"
    # the instructor's machine restarted: both nodes off, the swarm came back by itself
    assert what_was_done({"swr1": "shut off", "swr2": "shut off"}, FormReport()) == \
        "started swr1, swr2 from their own disks; the swarm is as it was"
    assert what_was_done({"swr1": "running", "swr2": "idle"}, FormReport()) == "already running; the swarm is as it was"
    assert what_was_done({"swr1": "running", "swr2": "shut off"}, FormReport(joined=["swr2 (worker)"])) == \
        "started swr2 from its own disk; the swarm was repaired: joined swr2 (worker)"
    # a student left the swarm on its only manager: a new one is made
    assert what_was_done({"swr1": "running"}, FormReport(initialized="swr1", joined=["swr2 (worker)"])) == \
        "already running; the swarm was repaired: init on swr1; joined swr2 (worker)"


def test_class_grades_as_junit_one_suite_per_student_with_failures_and_unreachable_labs():
    from swarmlab.classroom.class_exercises import junit
    results = [classroom.LabResult("Ann", "s01", "local", ok=False, seconds=3.2, detail={"verdicts": [
                   {"check": "web runs 3 replicas", "ok": True, "expected": "3", "found": "3"},
                   {"check": "db pinned to swr1", "ok": False, "expected": "swr1", "found": "swr2"}]}),
               classroom.LabResult("Bo", "s02", "h2", error="host h2 (qemu+tcp://h2/system): unreachable")]
    xml = junit("services", results)
    ann, bo = xml.split("<testsuite ")[1:]
    assert 'name="Ann" tests="2" failures="1" errors="0"' in ann
    assert '<failure message="expected swr1; found swr2"' in ann and "web runs 3 replicas" in ann
    assert 'name="Bo" tests="1" failures="0" errors="1"' in bo and 'name="lab reachable"' in bo


@pytest.mark.parametrize("setting, percent", [
    (0, None),  # the default: equal cgroup weights share the CPUs out, no quota slows a node down
    (80, 80),  # [class] cpu_cap_percent
    (10, 25),  # a cap below an idle node's need would starve its raft heartbeats: the floor
])
def test_a_class_node_is_capped_only_when_the_instructor_asks(setting, percent):
    from swarmlab.core.placement import node_cpu_percent
    assert node_cpu_percent(setting) == percent


def test_libvirtd_gets_the_machines_cgroup_hierarchies_in_its_own_mount_namespace():
    from swarmlab.adapters.netns import cgroup_mounts, with_cgroups
    mounts = cgroup_mounts("tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n"
                           "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
                           "cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0\n"
                           "proc /proc proc rw 0 0\n")
    assert mounts == [("cgroup", "rw,relatime,cpu", "/sys/fs/cgroup/cpu"),
                      ("cgroup", "rw,relatime,name=systemd", "/sys/fs/cgroup/systemd")]
    cmd = with_cgroups(["libvirtd", "-d"], mounts)
    assert cmd[:2] == ["sh", "-c"] and cmd[-3:] == ["sh", "libvirtd", "-d"]
    assert cmd[2].index("mount -t tmpfs") < cmd[2].index("mount -t cgroup -o rw,relatime,cpu cgroup /sys/fs/cgroup/cpu")
    # a cgroup v2 machine: one mount, no tmpfs; and none at all leaves the command as it is
    assert "tmpfs" not in with_cgroups(["libvirtd"], cgroup_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0"))[2]
    assert with_cgroups(["libvirtd", "-d"], []) == ["libvirtd", "-d"]
