"""The PowerDNS client against a real pdns_server; answers checked through the API and DNS."""

import dns.message
import dns.query
import dns.rdatatype
import pytest

from swarmlab.adapters.dns import DnsError, PowerDNS, canonical

ZONE = "lab.swarmlab.test."


def query_a(server, name: str) -> set[str]:
    answer = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=server.dns_port, timeout=3)
    return {rr.address for rrset in answer.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset}


def counted(client: PowerDNS, key: str) -> tuple[PowerDNS, list[str]]:
    """The same API through a session that notes each request's method."""
    import requests
    seen: list[str] = []
    session = requests.Session()
    session.hooks["response"].append(lambda resp, **_: seen.append(resp.request.method))
    return PowerDNS(client.api_url, key, session=session), seen


def test_ensure_zone_creates_once(pdns_server):
    client, server, _ = pdns_server
    assert client.ensure_zone(ZONE) is True
    assert client.ensure_zone(ZONE.rstrip(".")) is False  # same zone, non-canonical spelling
    assert client.zone_exists(ZONE)
    answer = dns.query.udp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=server.dns_port, timeout=3)
    assert answer.answer and answer.answer[0].rdtype == dns.rdatatype.SOA


def test_replace_is_one_patch_whatever_the_count(pdns_server):
    client, server, key = pdns_server
    client.ensure_zone(ZONE)
    records = {f"swr{i}.{ZONE}": f"10.78.0.{10 + i}" for i in range(1, 8)}
    client, requests_made = counted(client, key)
    client.replace_a(ZONE, records, ttl=600)
    assert requests_made == ["PATCH"]
    listed = {r.name: (r.ip, r.ttl) for r in client.list_a(ZONE)}
    assert listed == {name: (ip, 600) for name, ip in records.items()}
    assert query_a(server, "swr3.lab.swarmlab.test.") == {"10.78.0.13"}
    # REPLACE really replaces: the new address is answered, the old one is gone.
    client.replace_a(ZONE, {"swr3.lab.swarmlab.test": "10.78.0.99"}, ttl=60)
    assert query_a(server, "swr3.lab.swarmlab.test.") == {"10.78.0.99"}
    client.rectify(ZONE)


def test_delete_is_one_patch_and_removes_answers(pdns_server):
    client, server, key = pdns_server
    client.ensure_zone(ZONE)
    client.replace_a(ZONE, {f"n{i}.{ZONE}": f"10.78.0.{i}" for i in range(1, 5)}, ttl=600)
    client, requests_made = counted(client, key)
    client.delete_a(ZONE, [f"n1.{ZONE}", f"n2.{ZONE}", f"absent.{ZONE}"])
    assert requests_made == ["PATCH"]
    assert {r.name for r in client.list_a(ZONE)} == {f"n3.{ZONE}", f"n4.{ZONE}"}
    assert query_a(server, f"n1.{ZONE}") == set()
    assert query_a(server, f"n4.{ZONE}") == {"10.78.0.4"}


def test_wrong_key_is_named_and_key_never_shown(pdns_server):
    client, server, key = pdns_server
    wrong = PowerDNS(client.api_url, "not-the-" + key)
    with pytest.raises(DnsError) as err:
        wrong.ensure_zone(ZONE)
    assert "PowerDNS rejected the API key" in str(err.value)
    assert key not in str(err.value) and "not-the-" not in str(err.value)
    assert key not in repr(client)


def test_server_down_names_the_url():
    from tests.conftest import free_port
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DnsError) as err:
        PowerDNS(url, "secret-key-123").zone_exists(ZONE)
    assert url in str(err.value) and "refused" in str(err.value)
    assert "secret-key-123" not in str(err.value)


def test_malformed_name_surfaces_powerdns_error(pdns_server):
    client, _, key = pdns_server
    client.ensure_zone(ZONE)
    with pytest.raises(DnsError) as err:
        client.replace_a(ZONE, {"bad name!.lab.swarmlab.test.": "10.78.0.1"}, ttl=600)
    message = str(err.value)
    assert "422" in message and "unsupported characters" in message
    with pytest.raises(DnsError) as err:
        client.replace_a(ZONE, {"swr1.elsewhere.test.": "10.78.0.1"}, ttl=600)
    assert "out of zone" in str(err.value).lower()
    assert key not in message
    assert client.list_a(ZONE) == []


def test_missing_zone_is_404_text(pdns_server):
    client, _, _ = pdns_server
    with pytest.raises(DnsError) as err:
        client.list_a("nosuch.test.")
    assert "404" in str(err.value) or "422" in str(err.value)


def test_canonical_names():
    assert canonical("SWR1.Lab.Test") == "swr1.lab.test."
    assert canonical("swr1.lab.test.") == "swr1.lab.test."
