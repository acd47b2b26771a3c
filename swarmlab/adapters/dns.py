"""PowerDNS authoritative HTTP API client (zones, A rrsets, rectify).

Names are canonical: lowercase with a trailing dot. The API key goes only into the
X-API-Key header; no message, log line or exception built here contains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import dns.message
import dns.query
import dns.rdatatype
import requests

from swarmlab.config import Config
from swarmlab.errors import SwarmlabError


class DnsError(SwarmlabError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status, when the API answered


class ApiKeyRejected(DnsError):
    pass


def canonical(name: str) -> str:
    return name.strip().lower().rstrip(".") + "."


@dataclass(frozen=True)
class ARecord:
    name: str
    ip: str
    ttl: int


class PowerDNS:
    def __init__(self, api_url: str, api_key: str, server_id: str = "localhost", timeout: float = 10,
                 session: requests.Session | None = None):
        self.base = f"{api_url.rstrip('/')}/api/v1/servers/{server_id}"
        self.api_url = api_url
        self.timeout = timeout
        self._session = session or requests.Session()  # a test's own session sees every request
        self._session.headers["X-API-Key"] = api_key

    @classmethod
    def from_config(cls, config) -> "PowerDNS":
        """The client for [dns] api_url with the configured key (file or environment)."""
        return cls(config.api_url, config.api_key())

    def __repr__(self):
        return f"PowerDNS({self.api_url!r})"

    def _call(self, method: str, path: str, json=None) -> requests.Response:
        url = self.base + path
        try:
            resp = self._session.request(method, url, json=json, timeout=self.timeout)
        except requests.ConnectionError:
            raise DnsError(f"PowerDNS API at {self.api_url} refused the connection: "
                           "is pdns_server running (`swarmlab host up`), and is [dns] api_url right?") from None
        except requests.Timeout:
            raise DnsError(f"PowerDNS API at {self.api_url} did not answer within {self.timeout:g} s") from None
        except requests.RequestException as e:
            raise DnsError(f"PowerDNS API at {self.api_url}: {type(e).__name__}") from None
        if resp.status_code in (401, 403):
            raise ApiKeyRejected(f"PowerDNS rejected the API key ({self.api_url}): check [dns] api_key_file "
                                 "or SWARMLAB_PDNS_API_KEY", resp.status_code)
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("error") or resp.text
            except ValueError:
                detail = resp.text.strip() or resp.reason
            raise DnsError(f"PowerDNS {method} {path}: {resp.status_code} {detail}", resp.status_code)
        return resp

    @staticmethod
    def _zone_path(zone: str) -> str:
        return "/zones/" + quote(canonical(zone), safe="")

    def server_info(self) -> dict:
        return self._call("GET", "").json()

    def zone_exists(self, zone: str) -> bool:
        try:
            self._call("GET", self._zone_path(zone))
        except DnsError as e:
            if e.status in (404, 422):
                return False
            raise
        return True

    def ensure_zone(self, zone: str, nameserver: str | None = None) -> bool:
        """Creates the zone (kind Native) if missing. Returns True when it was created."""
        zone = canonical(zone)
        if self.zone_exists(zone):
            return False
        ns = canonical(nameserver or f"ns1.{zone}")
        self._call("POST", "/zones", json={"name": zone, "kind": "Native", "nameservers": [ns]})
        return True

    def replace_a(self, zone: str, records: dict[str, str], ttl: int) -> None:
        """Sets `name -> ip` for every entry in one PATCH, replacing what was there."""
        rrsets = [{"name": canonical(name), "type": "A", "ttl": ttl, "changetype": "REPLACE",
                   "records": [{"content": ip, "disabled": False}]} for name, ip in records.items()]
        if rrsets:
            self._call("PATCH", self._zone_path(zone), json={"rrsets": rrsets})

    def delete_a(self, zone: str, names: list[str]) -> None:
        """Deletes the A rrsets of every name in one PATCH (absent names are fine)."""
        rrsets = [{"name": canonical(n), "type": "A", "changetype": "DELETE"} for n in names]
        if rrsets:
            self._call("PATCH", self._zone_path(zone), json={"rrsets": rrsets})

    def list_a(self, zone: str) -> list[ARecord]:
        zone_data = self._call("GET", self._zone_path(zone)).json()
        return sorted((ARecord(rr["name"], rec["content"], rr["ttl"])
                       for rr in zone_data.get("rrsets", []) if rr["type"] == "A"
                       for rec in rr["records"] if not rec.get("disabled")),
                      key=lambda r: (r.name, r.ip))

    def rectify(self, zone: str) -> None:
        self._call("PUT", self._zone_path(zone) + "/rectify")


# --- what the zone answers (DNS itself, not the API) ------------------------------------------
def zone_served_at(config: Config, address: str) -> bool:
    """Whether the zone's SOA is answered at address:[host] dns_port (where lab hosts on other
    machines forward the zone)."""
    try:
        reply = dns.query.udp(dns.message.make_query(config.zone, "SOA"), address, port=config.dns_port, timeout=3)
    except Exception:  # timeouts and socket errors
        return False
    return any(rrset.rdtype == dns.rdatatype.SOA for rrset in reply.answer)


def dns_answers(config: Config, name: str) -> set[str]:
    host, port = config.dns_server
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), host, port=port, timeout=3)
    except Exception:  # timeouts and socket errors: treated as "not yet"
        return set()
    return {rr.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset}
