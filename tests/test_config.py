"""Config validation: one clear line naming the key, what was wrong and what is allowed."""

import os
import re
from pathlib import Path

import pytest

from swarmlab import config as configuration, config_edit
from swarmlab.config import ConfigError
from swarmlab.config_values import parse_label
from tests.conftest import swarmlab


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "swarmlab.toml"
    path.write_text(text)
    return configuration.load(path)


def test_defaults_describe_the_embedded_host(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWARMLAB_CONFIG", raising=False)
    c = configuration.load()
    assert c.zone == "lab.swarmlab.test."
    assert c.api_url == "http://127.0.0.1:8081"
    assert c.uri == "qemu:///system"
    assert str(c.gateway) == "10.77.0.1"
    assert c.api_key_path == Path("/var/lib/swarmlab/pdns-api-key")
    assert (c.vcpus, c.memory_mib, c.ttl) == (1, 512, 600)


def test_values_are_read_and_normalised(tmp_path):
    c = load_text(tmp_path, '[dns]\nzone = "Dev.RPulse.locnet"\nttl = 300\n[nodes]\nvcpus = 2\nmemory_mib = 2048\n'
                            '[libvirt]\ncidr = "192.168.100.0/24"\ntemplate = "debian10template"\n')
    assert c.zone == "dev.rpulse.locnet."
    assert (c.ttl, c.vcpus, c.memory_mib, c.template) == (300, 2, 2048, "debian10template")
    assert [str(a) for a in c.dhcp_range] == ["192.168.100.128", "192.168.100.254"]


@pytest.mark.parametrize("text, expected", [
    ('[nodes]\nvcpus = 0\n', "[nodes] vcpus = 0 is invalid; expected an integer from 1 to 64"),
    ('[nodes]\nmemory_mib = "lots"\n', "[nodes] memory_mib = 'lots' is invalid; expected an integer"),
    ('[libvirt]\ncidr = "10.0.0.0/33"\n', "[libvirt] cidr = '10.0.0.0/33' is invalid; expected an IPv4 network"),
    ('[libvirt]\ndomain_type = "xen"\n', "expected one of auto, kvm, qemu"),
    ('[dns]\nzone = "bad zone"\n', "[dns] zone = 'bad zone' is invalid; expected a DNS name"),
    ('[dns]\napi_url = "127.0.0.1:8081"\n', "[dns] api_url = '127.0.0.1:8081' is invalid; expected an http://"),
    ('[dns]\napi_key = "s3cret"\n', "[dns] api_key is not allowed inline"),
    ('[dns]\napikey_file = "/x"\n', "unknown key [dns] apikey_file; allowed: zone, api_url, api_key_file, ttl"),
    ('[dsn]\nzone = "x."\n', "unknown section [dsn]; allowed: [libvirt], [dns], [ssh], [nodes], [engine], [host]"),
    ('[nodes]\nprefix = "Swr_"\n', "[nodes] prefix = 'Swr_' is invalid; expected a DNS label"),
    ('[nodes\n', "not valid TOML"),
    ('[class]\noverhead_mib = 360\n', "[class] overhead_mib is gone: a node no longer holds all of its guest memory; "
                                      "remove it, or set [class] node_mib"),
])
def test_invalid_config_is_one_clear_line(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, text)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    assert "s3cret" not in message


def test_invalid_config_via_cli_exits_2_without_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[nodes]\nvcpus = -1\n")
    proc = swarmlab("doctor", config=path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"swarmlab: {path}: [nodes] vcpus = -1 is invalid; expected an integer from 1 to 64"
    assert "Traceback" not in proc.stderr


def test_missing_config_file_is_named(tmp_path):
    proc = swarmlab("config", config=tmp_path / "nope.toml")
    assert proc.returncode == 2
    assert "nope.toml not found (from SWARMLAB_CONFIG)" in proc.stderr


def test_api_key_from_env_wins_over_file(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    key_file.chmod(0o600)
    c = load_text(tmp_path, f'[dns]\napi_key_file = "{key_file}"\n')
    monkeypatch.delenv(configuration.API_KEY_ENV, raising=False)
    assert c.api_key() == "from-file"
    monkeypatch.setenv(configuration.API_KEY_ENV, "from-env")
    assert c.api_key() == "from-env"


def test_api_key_file_readable_by_others_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(configuration.API_KEY_ENV, raising=False)
    key_file = tmp_path / "key"
    key_file.write_text("topsecret\n")
    key_file.chmod(0o644)
    c = load_text(tmp_path, f'[dns]\napi_key_file = "{key_file}"\n')
    with pytest.raises(ConfigError) as err:
        c.api_key()
    assert f"chmod 600 {key_file}" in str(err.value)
    assert "topsecret" not in str(err.value)


def test_config_show_never_prints_the_key(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("topsecret\n")
    key_file.chmod(0o600)
    path = tmp_path / "c.toml"
    path.write_text(f'[dns]\napi_key_file = "{key_file}"\n')
    proc = swarmlab("config", "--json", config=path, env={"SWARMLAB_PDNS_API_KEY": "envsecret"})
    assert proc.returncode == 0
    assert str(key_file) in proc.stdout
    assert "topsecret" not in proc.stdout + proc.stderr and "envsecret" not in proc.stdout + proc.stderr


def toml_blocks(markdown: str) -> list[str]:
    import re
    return re.findall(r"```toml\n(.*?)```", markdown, re.S)


def test_every_toml_block_of_the_readme_loads(tmp_path):
    """The README's example was refused once ([engine] package = 'docker.io'); docs must not drift."""
    from tests.conftest import ROOT
    blocks = toml_blocks((ROOT / "README.md").read_text())
    assert blocks, "the README shows its configuration"
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme-{i}.toml"
        path.write_text(block)
        config = configuration.load(path)
        assert config.source == str(path)
    assert configuration.load(tmp_path / "readme-0.toml").engine_package == "docker.io"


def test_nodes_wake_by_default_and_may_be_told_to_boot(tmp_path):
    assert configuration.Config().wake is True
    assert load_text(tmp_path, "[nodes]\nwake = false\n").wake is False


@pytest.mark.parametrize("package", ["docker.io", "docker-ce", "containerd.io", "g++"])
def test_engine_package_takes_debian_package_names(tmp_path, package):
    assert load_text(tmp_path, f'[engine]\npackage = "{package}"\n').engine_package == package


@pytest.mark.parametrize("text, expected", [
    ('[engine]\npackage = "docker io"\n', "expected a Debian package name"),
    ('[dns]\nnameserver = "ns1.example.net:53"\n', "expected IP:PORT of the server that answers for the zone"),
    ('[dns]\nnameserver = "127.0.0.1:99999"\n', "expected IP:PORT"),
    ('[nodes]\nlabels = ["swr1:a/b=c"]\n', "label 'swr1:a/b=c' is not NODE:KEY=VALUE"),
    ('[nodes]\nwake = "no"\n', "expected true or false"),
])
def test_more_invalid_values(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        load_text(tmp_path, text)


def test_the_label_grammar_is_the_same_on_the_command_line_and_in_the_file(tmp_path):
    from swarmlab.errors import SwarmlabError
    for spec in ("swr1:placepoint=gdc", "swr2:env=", "swr1:com.example.zone=eu-1"):
        parse_label(spec)
        load_text(tmp_path, f'[nodes]\nlabels = ["{spec}"]\n')
    for spec in ("swr1:a/b=c", "swr1-env-dev", "SWR1:x=y"):
        with pytest.raises(SwarmlabError):
            parse_label(spec)
        with pytest.raises(ConfigError):
            load_text(tmp_path, f'[nodes]\nlabels = ["{spec}"]\n')


def test_a_nameserver_ip_is_accepted(tmp_path):
    assert load_text(tmp_path, '[dns]\nnameserver = "10.0.0.53:53"\n').dns_server == ("10.0.0.53", 53)


def test_a_config_file_others_can_write_is_refused(tmp_path):
    path = tmp_path / "swarmlab.toml"
    path.write_text('[engine]\nimages = ["/etc/shadow"]\n')
    path.chmod(0o666)
    with pytest.raises(ConfigError, match=r"is writable by group or others \(mode 666\).*chmod go-w"):
        configuration.load(path)
    path.chmod(0o644)
    assert configuration.load(path).engine_images


def test_a_config_file_owned_by_someone_else_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    path = tmp_path / "swarmlab.toml"
    path.write_text("[nodes]\nvcpus = 2\n")
    os.chown(path, 4242, 4242)
    with pytest.raises(ConfigError, match="belongs to uid 4242, not to root or you"):
        configuration.load(path)
    proc = swarmlab("config", config=path)
    assert proc.returncode == 2 and "belongs to uid 4242" in proc.stderr


def test_library_logging_never_reaches_the_terminal(tmp_path):
    """paramiko printed `Secsh channel 53 open FAILED` between chaos's lines; it goes to the log."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    script = ("import logging, sys\n"
              "from swarmlab import config\n"
              "from swarmlab.adapters import logfile\n"
              "from swarmlab.core import command\n"
              f"c = config.Config(state_dir=__import__('pathlib').Path({str(tmp_path / 'state')!r}))\n"
              "command.register_secret('SWMTKN-1-top-secret')\n"
              "logfile.setup(c, verbose=sys.argv[1] == 'v')\n"
              "logging.getLogger('paramiko.transport').warning('Secsh channel 53 open FAILED: open failed')\n"
              "logging.getLogger('paramiko.transport').error('Socket exception: token SWMTKN-1-top-secret')\n")
    quiet = subprocess.run([sys.executable, "-c", script, "q"], capture_output=True, text=True, cwd=ROOT)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and quiet.stdout == ""
    log = (tmp_path / "state" / "swarmlab.log").read_text()
    assert "Secsh channel 53 open FAILED" in log and "SWMTKN-1-top-secret" not in log and "<hidden>" in log
    assert (tmp_path / "state" / "swarmlab.log").stat().st_mode & 0o077 == 0
    verbose = subprocess.run([sys.executable, "-c", script, "v"], capture_output=True, text=True, cwd=ROOT)
    assert "Secsh channel 53 open FAILED" in verbose.stderr and "SWMTKN-1-top-secret" not in verbose.stderr


def test_the_log_and_its_rotations_are_0600(tmp_path):
    """Rotated logs were made with the process's umask (0644): they hold what the log holds."""
    import logging
    import os

    from swarmlab.adapters import logfile
    old = os.umask(0o022)
    try:
        logfile.setup(configuration.Config(state_dir=tmp_path), verbose=False)
        handler = logging.getLogger().handlers[0]
        handler.maxBytes = 1000
        for i in range(30):
            logging.getLogger("swarmlab.test").warning("line %d %s", i, "x" * 100)
        handler.close()
    finally:
        os.umask(old)
        logging.getLogger().handlers.clear()
    logs = sorted(p.name for p in tmp_path.glob("swarmlab.log*"))
    assert logs == ["swarmlab.log", "swarmlab.log.1", "swarmlab.log.2"]
    assert {oct((tmp_path / name).stat().st_mode & 0o777) for name in logs} == {"0o600"}


def test_hosts_are_read_with_their_capacity_and_ranges(tmp_path):
    c = load_text(tmp_path, '[class]\nlab_range = "10.90.0.0/16"\n\n'
                            '[[hosts]]\nname = "h1"\nuri = "qemu:///system"\nnodes = 12\n\n'
                            '[[hosts]]\nname = "h2"\nuri = "qemu+tcp://10.0.0.2/system"\nmemory_mib = 65536\n'
                            'lab_range = "10.91.0.0/16"\n')
    h1, h2 = c.lab_hosts
    assert (h1.name, h1.nodes, str(h1.lab_range), h1.local) == ("h1", 12, "10.90.0.0/16", True)
    assert (h2.name, h2.memory_mib, str(h2.lab_range), h2.local) == ("h2", 65536, "10.91.0.0/16", False)
    assert c.host("h2") == h2
    with pytest.raises(ConfigError, match="host h3 is not in swarmlab.toml .hosts: h1, h2.: add it with"):
        c.host("h3")


def test_ssh_to_a_hosts_nodes_jumps_through_its_sshd(tmp_path):
    c = load_text(tmp_path, '[host]\nservices_address = "10.200.0.1"\n\n'
                            '[[hosts]]\nname = "a"\nuri = "qemu+ssh://admin@h2.example:2222/system"\n\n'
                            '[[hosts]]\nname = "b"\nuri = "qemu+tcp://10.0.0.3/system"\nssh = "root@10.0.0.3"\n'
                            'ssh_key = "/root/.ssh/lab"\npool_dir = "/srv/labs"\n\n'
                            '[[hosts]]\nname = "c"\nuri = "qemu+tcp://10.0.0.4/system"\n\n'
                            '[[hosts]]\nname = "d"\nuri = "qemu:///system"\n')
    a, b, c_, d = c.lab_hosts
    assert c.services_address == "10.200.0.1"
    assert a.jump == "admin@h2.example:2222"  # from the qemu+ssh URI
    assert (b.jump, str(b.ssh_key)) == ("root@10.0.0.3:22", "/root/.ssh/lab")
    assert c_.jump is None and d.jump is None and d.local  # no way in named; on this machine
    assert (str(a.pools_at), str(b.pools_at)) == ("/var/lib/libvirt/swarmlab", "/srv/labs")


@pytest.mark.parametrize("text, expected", [
    ('[host]\nservices_address = "h2"\n', "expected an IPv4 address"),
    ('[[hosts]]\nname = "h"\nuri = "qemu+tcp://x/system"\nssh = "h2"\n', "expected user@host"),
    ('[[hosts]]\nname = "h"\nuri = "qemu+tcp://x/system"\nssh = "root@h2:ssh"\n', "expected user@host"),
    ('[[hosts]]\nname = "h"\nuri = "qemu+tcp://x/system"\npool_dir = "labs"\n', "expected an absolute directory"),
    ('[[hosts]]\nname = "h"\nuri = "qemu+tcp://x/system"\npool_dir = "/srv/../etc"\n', "expected an absolute"),
])
def test_bad_remote_host_settings_are_refused_in_one_line(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_text(tmp_path, text)


def test_without_hosts_the_local_host_takes_the_class(tmp_path):
    (only,) = load_text(tmp_path, "").lab_hosts
    assert (only.name, only.uri, str(only.lab_range)) == ("local", "qemu:///system", "10.80.0.0/16")


@pytest.mark.parametrize("text, expected", [
    ('hosts = "h1"\n', "hosts must be a list of tables"),
    ('[[hosts]]\nuri = "qemu:///system"\n', "[[hosts]] #1 has no name"),
    ('[[hosts]]\nname = "h1"\nuri = "a:///x"\ncpus = 2\n', "[[hosts]] #1: unknown key cpus; allowed: name, uri"),
    ('[[hosts]]\nname = "h1"\nuri = "a:///x"\n[[hosts]]\nname = "h1"\nuri = "b:///x"\n', "repeats host h1"),
    ('[[hosts]]\nname = "h1"\nuri = "a:///x"\nlab_range = "10.0.0.0/16"\n'
     '[[hosts]]\nname = "h2"\nuri = "b:///x"\nlab_range = "10.0.4.0/22"\n', "overlaps h1's 10.0.0.0/16"),
    ('[class]\nlab_range = "10.77.0.0/16"\n', "overlaps [libvirt] cidr 10.77.0.0/24"),
    ('[class]\nlab_range = "10.80.0.0/24"\n', "expected an IPv4 range from /16 to /23"),
])
def test_bad_hosts_are_one_clear_line(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, text)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_host_add_and_rm_keep_the_instructors_comments(tmp_path):
    text = '# our lab host\n[dns]\nzone = "lab.example."  # the workshop zone\n'
    current = configuration.parse(configuration.tomllib.loads(text), "f.toml")
    added = config_edit.with_host_added(text, configuration.HostSpec("h2", "qemu+tcp://10.0.0.2/system", nodes=12,
                                                                       ssh="root@10.0.0.2", ssh_key=Path("/k"),
                                                                       pool_dir=configuration.PurePosixPath("/srv")),
                                          "f.toml", current)
    assert added.startswith('# our lab host\n[dns]\nzone = "lab.example."  # the workshop zone\n')
    hosts = configuration.parse(configuration.tomllib.loads(added), "f.toml").lab_hosts
    assert [(h.name, h.uri, h.nodes) for h in hosts] == [("local", "qemu:///system", None),
                                                         ("h2", "qemu+tcp://10.0.0.2/system", 12)]
    assert (hosts[1].jump, hosts[1].ssh_key, str(hosts[1].pools_at)) == ("root@10.0.0.2:22", Path("/k"), "/srv")
    with pytest.raises(ConfigError, match="repeats host h2"):
        config_edit.with_host_added(added, configuration.HostSpec("h2", "qemu+tcp://10.0.0.3/system"), "f.toml",
                                      current)
    removed = config_edit.with_host_removed(added, "h2", "f.toml")
    assert "h2" not in removed and "# the workshop zone" in removed
    with pytest.raises(ConfigError, match="f.toml has no host h9: `swarmlab host ls` lists the hosts"):
        config_edit.with_host_removed(removed, "h9", "f.toml")
