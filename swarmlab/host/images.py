"""Offline container images: honest stand-ins built on the lab host from Debian's static
busybox, a `docker save` archive of them (baked into the template, side-loaded otherwise), and
a push of them into the lab host's registry, which every node uses as its Docker Hub mirror.

No registry is reachable here, and a classroom's network is often worse. With the mirror,
`docker service create swarmlab/whoami` resolves its digest like any Hub image: students type
ordinary commands and see no "could not be accessed on a registry" warning.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import requests

from swarmlab.errors import SwarmlabError

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class ImageError(SwarmlabError):
    pass


# --- the stand-ins ---------------------------------------------------------------------------
# Each serves HTTP with busybox httpd; a CGI script at / answers. A shell stays PID 1 (busybox
# applets misbehave as PID 1) and exits on SIGTERM, so `docker stop` is quick. Debian's static
# busybox 1.35 wget segfaults with -T: `timeout 3 wget` bounds it instead.
_SERVE = """#!/bin/sh
trap 'kill $pids 2>/dev/null; exit 0' TERM INT
pids=
for port in $PORTS; do httpd -f -p "$port" -h /www & pids="$pids $!"; done
wait
"""

_CGI_HEAD = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
_ADDRESSES = "ip -o -4 addr show | awk '$2 != \"lo\" {split($4, a, \"/\"); print \"IP: \" a[1]}'\n"

_WHOAMI_ENTRY = """#!/bin/sh
# traefik/whoami's flag: --port N (default 80)
PORTS=80
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORTS=$2; shift 2 ;;
    --port=*) PORTS=${1#*=}; shift ;;
    *) shift ;;
  esac
done
export PORTS
exec /bin/sh /usr/local/bin/serve
"""

_WHOAMI_CGI = _CGI_HEAD + 'echo "Hostname: $(hostname)"\n' + _ADDRESSES + \
    'echo "RemoteAddr: $REMOTE_ADDR"\necho "$REQUEST_METHOD $REQUEST_URI"\n'

_AGENT_CGI = _CGI_HEAD + 'echo "swarmlab agent (stand-in for portainer/agent) on $(hostname)"\n' + _ADDRESSES

_DASHBOARD_ENTRY = """#!/bin/sh
# portainer's flags: -H tcp://AGENT:PORT [--tlsskipverify]; the agents are found through the
# overlay network's DNS (tasks.AGENT), as portainer finds its agents.
AGENT=tcp://agent:9001
while [ $# -gt 0 ]; do
  case "$1" in
    -H|--host) AGENT=$2; shift 2 ;;
    -H=*|--host=*) AGENT=${1#*=}; shift ;;
    *) shift ;;
  esac
done
AGENT=${AGENT#tcp://}
AGENT=${AGENT#tasks.}
printf 'AGENT_HOST=%s\\nAGENT_PORT=%s\\n' "${AGENT%:*}" "${AGENT##*:}" > /tmp/dashboard.env
PORTS="9000 8000" exec /bin/sh /usr/local/bin/serve
"""

_DASHBOARD_CGI = _CGI_HEAD + """. /tmp/dashboard.env
echo "swarmlab dashboard (stand-in for portainer) on $(hostname)"
count=0
for a in $(nslookup "tasks.$AGENT_HOST" 127.0.0.11 2>/dev/null | awk '/^Name:/ {n = 1; next} n && /^Address/ {print $NF}'); do
  count=$((count + 1))
  echo "agent $a: $(timeout 3 wget -q -O- "http://$a:$AGENT_PORT/" 2>/dev/null | head -n 1)"
done
echo "agents: $count"
"""


@dataclass(frozen=True)
class StandIn:
    name: str  # repository:tag
    stands_for: str
    files: dict[str, str] = field(default_factory=dict)  # executable files by absolute path
    config: dict = field(default_factory=dict)  # the image config's "config": Cmd, Entrypoint, ...


STANDINS = (
    # `ping` or `sleep` as PID 1 ignores SIGTERM: each task stopped (an update, a drain, a
    # reset) would wait out the 10 s grace period. A 5-task rolling update: 105 s -> 50 s.
    StandIn("swarmlab/busybox:latest", "alpine", {}, {"Cmd": ["/bin/sh"], "StopSignal": "SIGKILL"}),
    StandIn("swarmlab/whoami:latest", "traefik/whoami",
            {"/usr/local/bin/serve": _SERVE, "/usr/local/bin/whoami": _WHOAMI_ENTRY,
             "/www/cgi-bin/index.cgi": _WHOAMI_CGI},
            {"Entrypoint": ["/bin/sh", "/usr/local/bin/whoami"], "ExposedPorts": {"80/tcp": {}}}),
    StandIn("swarmlab/agent:latest", "portainer/agent",
            {"/usr/local/bin/serve": _SERVE, "/www/cgi-bin/index.cgi": _AGENT_CGI},
            {"Entrypoint": ["/bin/sh", "/usr/local/bin/serve"], "Env": ["PORTS=9001"],
             "ExposedPorts": {"9001/tcp": {}}}),
    StandIn("swarmlab/dashboard:latest", "portainer/portainer-ce",
            {"/usr/local/bin/serve": _SERVE, "/usr/local/bin/dashboard": _DASHBOARD_ENTRY,
             "/www/cgi-bin/index.cgi": _DASHBOARD_CGI},
            {"Entrypoint": ["/bin/sh", "/usr/local/bin/dashboard"],
             "ExposedPorts": {"9000/tcp": {}, "8000/tcp": {}}}),
)
STANDIN_NAMES = tuple(s.name for s in STANDINS)
BAKED_IMAGE = STANDINS[0].name  # in every template: what a drill or a smoke test runs


def busybox_path() -> Path:
    path = Path(shutil.which("busybox") or "/bin/busybox")
    if not path.exists():
        raise ImageError("busybox not found: install Debian's busybox-static (scripts/install-host does)")
    return path


def identity() -> str:
    """Changes when busybox or a stand-in changes: the template's recipe and the cache key."""
    digest = hashlib.sha256(busybox_path().read_bytes())
    digest.update(json.dumps([[s.name, s.files, s.config] for s in STANDINS], sort_keys=True).encode())
    return digest.hexdigest()[:16]


# --- layers ----------------------------------------------------------------------------------
def _dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def busybox_rootfs(fileobj) -> None:
    """A minimal container root filesystem: Debian's static busybox and its applet links."""
    busybox = busybox_path()
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        for d in ("bin", "etc", "proc", "sys", "dev"):
            _dir(tar, d)
        _dir(tar, "tmp", 0o1777)
        info = tar.gettarinfo(str(busybox), "bin/busybox")
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
        with open(busybox, "rb") as f:
            tar.addfile(info, f)
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)


def _files_layer(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        made: set[str] = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made:
                    made.add(d)
                    _dir(tar, d)
            data = files[path].encode()
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class BuiltImage:
    name: str
    layers: list[bytes]  # uncompressed tars, bottom first
    config: bytes

    @property
    def config_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def build_all() -> list[BuiltImage]:
    buf = io.BytesIO()
    busybox_rootfs(buf)
    base = buf.getvalue()
    images = []
    for standin in STANDINS:
        layers = [base] + ([_files_layer(standin.files)] if standin.files else [])
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "config": standin.config,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]},
            "history": [{"created_by": f"swarmlab: Debian busybox-static, stand-in for {standin.stands_for}"}]
            * len(layers)}, sort_keys=True).encode()
        images.append(BuiltImage(standin.name, layers, config))
    return images


def archive(cache_dir: Path) -> Path:
    """Every stand-in in one `docker save` archive (`docker load -i` takes it); the busybox layer
    is stored once."""
    dest = cache_dir / "container-images" / f"standins-{identity()}.tar"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    manifest, written = [], set()
    tmp = dest.with_suffix(f".tmp{id(dest)}")
    with tarfile.open(tmp, "w") as tar:
        for image in build_all():
            paths = []
            for layer in image.layers:
                digest = hashlib.sha256(layer).hexdigest()
                paths.append(f"{digest}/layer.tar")
                if digest not in written:
                    written.add(digest)
                    _add_bytes(tar, paths[-1], layer)
            _add_bytes(tar, image.config_digest[7:] + ".json", image.config)
            manifest.append({"Config": image.config_digest[7:] + ".json", "RepoTags": [image.name], "Layers": paths})
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    tmp.replace(dest)
    return dest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# --- the registry ----------------------------------------------------------------------------
def _blob_url(base: str, repository: str, digest: str) -> str:
    return f"{base}/v2/{repository}/blobs/{digest}"


def push(registry: str, images: list[BuiltImage] | None = None, timeout: float = 30) -> list[str]:
    """Pushes the stand-ins into a registry (host:port, plain HTTP) under their Docker Hub
    names, which is where a node asking its mirror for `swarmlab/whoami` looks. Idempotent:
    blobs the registry has are skipped. Returns the images whose manifest was new."""
    base = f"http://{registry}"
    session = requests.Session()
    pushed = []
    compressed: dict[bytes, tuple[str, bytes]] = {}  # the busybox layer is shared: gzip it once
    try:
        for image in images or build_all():
            repository, tag = image.name.rsplit(":", 1)
            layers = []
            for layer in image.layers:
                key = hashlib.sha256(layer).digest()
                if key not in compressed:
                    blob = gzip.compress(layer, mtime=0)  # deterministic: same digest on every push
                    compressed[key] = ("sha256:" + hashlib.sha256(blob).hexdigest(), blob)
                layers.append(compressed[key])
            for digest, blob in layers + [(image.config_digest, image.config)]:
                if session.head(_blob_url(base, repository, digest), timeout=timeout).status_code == 200:
                    continue
                start = session.post(f"{base}/v2/{repository}/blobs/uploads/", timeout=timeout)
                if start.status_code != 202:
                    raise ImageError(f"registry {registry} refused an upload of {repository}: HTTP {start.status_code}")
                location = start.headers["Location"]
                location = location if location.startswith("http") else base + location
                done = session.put(location + ("&" if "?" in location else "?") + f"digest={digest}", data=blob,
                                   headers={"Content-Type": "application/octet-stream"}, timeout=timeout)
                if done.status_code != 201:
                    raise ImageError(f"registry {registry} refused a blob of {repository}: HTTP {done.status_code}")
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "size": len(image.config), "digest": image.config_digest},
                "layers": [{"mediaType": LAYER_TYPE, "size": len(blob), "digest": digest} for digest, blob in layers],
            }, sort_keys=True).encode()
            url = f"{base}/v2/{repository}/manifests/{tag}"
            have = session.head(url, headers={"Accept": MANIFEST_TYPE}, timeout=timeout)
            if have.status_code == 200 and have.headers.get("Docker-Content-Digest") == \
                    "sha256:" + hashlib.sha256(manifest).hexdigest():
                continue
            put = session.put(url, data=manifest, headers={"Content-Type": MANIFEST_TYPE}, timeout=timeout)
            if put.status_code != 201:
                raise ImageError(f"registry {registry} refused the manifest of {image.name}: HTTP {put.status_code}")
            pushed.append(image.name)
    except requests.RequestException as e:
        raise ImageError(f"registry {registry} did not answer ({type(e).__name__}): "
                         "`swarmlab host status` shows it; `swarmlab host up` starts it") from None
    return pushed
