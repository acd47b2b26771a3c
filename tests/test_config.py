"""Config validation: one clear line naming the key, what was wrong and what is allowed."""

import os
from pathlib import Path

import pytest

from swarmlab import config as configuration
from swarmlab.config import ConfigError
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
    assert (c.vcpus, c.memory_mib, c.ttl) == (1, 1024, 600)


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
