"""Students into their own lab only: credentials, the `student` account on the nodes, and the
SSH gateway on the lab host.

Credentials live under <state_dir>/class/<lab>/: an ed25519 key pair (the private key 0600,
handed out on the student's card) and a portal token. `class up` makes them once and keeps
them; `class down` removes the directory, which revokes both: the gateway and the portal read
them at every login and request.

The gateway is an SSH server of swarmlab's own (asyncssh), not an account on the lab host: a
student logs in as their lab's name with their key, gets no shell, no command and no remote
forwarding, and may open connections only to port 22 of their own lab's nodes (what `ssh -J`
asks for). Nothing on the lab host's own sshd or user database changes. On the nodes, the
`student` account is in the docker group and takes the same key.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import shutil
import subprocess
from pathlib import Path

from swarmlab.adapters.keys import write_private
from swarmlab.classroom.limits import AddressLimits, OverLimit, StudentLimits
from swarmlab.config import Config
from swarmlab.lab.model import Lab, jump, known_hosts, lab_config, load_journal

STUDENT_USER = "student"


def credentials_root(config: Config) -> Path:
    return config.state_dir / "class"


def credentials_dir(config: Config, lab: str) -> Path:
    return credentials_root(config) / lab


def ensure_credentials(config: Config, lab: str) -> bool:
    """The student's key pair and portal token; made once, kept on every rerun. True if made."""
    directory = credentials_dir(config, lab)
    key = directory / "id_ed25519"
    made = False
    if not (key.exists() and key.with_suffix(".pub").exists()):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for p in (key, key.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"swarmlab student {lab}",
                        "-f", str(key)], check=True, capture_output=True)
        key.chmod(0o600)
        made = True
    if not (directory / "token").exists():
        write_private(directory / "token", secrets.token_urlsafe(24) + "\n")
        made = True
    return made


def _instructor_token_path(config: Config) -> Path:
    return config.state_dir / "portal" / "instructor-token"


def instructor_token(config: Config) -> str:
    """The instructor's portal token: made when missing, read at every request."""
    path = _instructor_token_path(config)
    if not path.exists():
        return new_instructor_token(config)
    return path.read_text().strip()


def new_instructor_token(config: Config) -> str:
    """A fresh instructor token; the old one stops working at once (a new class, `class down`,
    `portal --new-instructor-token`)."""
    made = secrets.token_urlsafe(24)
    write_private(_instructor_token_path(config), made + "\n")
    return made


def revoke(config: Config, lab: str) -> bool:
    directory = credentials_dir(config, lab)
    if not directory.exists():
        return False
    shutil.rmtree(directory)
    return True


def public_key(config: Config, lab: str) -> str | None:
    try:
        return (credentials_dir(config, lab) / "id_ed25519.pub").read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def token(config: Config, lab: str) -> str | None:
    try:
        return (credentials_dir(config, lab) / "token").read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


# --- the SSH gateway ----------------------------------------------------------------------------
def lab_config_of(config: Config, lab: str) -> Config:
    """The config scoped to the lab's host and network."""
    return lab_config(config, lab)


def student_lab(config: Config, lab: str) -> Lab | None:
    """The lab as its journal names it (nodes, addresses)."""
    return load_journal(lab_config(config, lab), lab)


def allowed_destinations(config: Config, lab: str) -> set[str]:
    """Port 22 of these addresses: the lab's nodes as its journal names them."""
    found = student_lab(config, lab)
    return {n.ip for n in found.nodes} if found else set()


async def _pipe(reader, writer) -> None:
    """Copies until end of file, waiting whenever the far side is slower: with `drain`, a
    flood stays in the sender's SSH window instead of in this process."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def relay(student_reader, student_writer, opener) -> None:
    """One forwarded connection: the student's channel joined to the node's sshd (opened
    directly, or through the lab host's sshd for a lab on another machine). It ends when the
    node's side ends or the student's channel closes; the hop to the lab host goes with it."""
    import asyncssh
    errors = (OSError, asyncssh.Error, asyncio.IncompleteReadError)
    try:
        node_reader, node_writer, tunnel = await opener()
    except errors:
        student_writer.close()
        return
    upstream = asyncio.ensure_future(_pipe(student_reader, node_writer))
    downstream = asyncio.ensure_future(_pipe(node_reader, student_writer))
    closed = asyncio.ensure_future(student_writer.channel.wait_closed())
    try:
        await asyncio.wait({downstream, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (upstream, downstream, closed):
            task.cancel()
        await asyncio.gather(upstream, downstream, closed, return_exceptions=True)
        node_writer.close()
        student_writer.close()
        if tunnel is not None:
            tunnel.close()


def _gateway_classes():
    import asyncssh

    class Gateway(asyncssh.SSHServer):
        def __init__(self, config: Config, labs: callable, limits: StudentLimits, live: set,
                     addresses: AddressLimits | None):
            self.config, self.labs, self.limits, self.lab = config, labs, limits, None
            self.live, self.conn, self.addresses, self.address = live, None, addresses, None

        def connection_made(self, conn):
            self.conn = conn
            self.live.add(conn)
            peer = conn.get_extra_info("peername")
            address = str(peer[0]) if peer else "?"
            if self.addresses is not None:
                if not self.addresses.connect(address):
                    conn.close()  # one address holding every socket: cut off before the key exchange
                    return
                self.address = address

        def connection_lost(self, exc):
            self.live.discard(self.conn)
            if self.address is not None:
                self.addresses.disconnect(self.address)
                self.address = None

        def begin_auth(self, username):
            return True

        def password_auth_supported(self):
            return False

        def kbdint_auth_supported(self):
            return False

        def public_key_auth_supported(self):
            return True

        def validate_public_key(self, username, key):
            if username not in self.labs():
                return False
            wanted = public_key(self.config, username)  # read now: `class down` revokes at once
            if not wanted:
                return False
            ok = hmac.compare_digest(key.export_public_key("openssh").decode().split()[1].encode(),
                                     wanted.split()[1].encode())
            if ok:
                self.lab = username
            return ok

        def session_requested(self):
            return False  # no shell, no command, no subsystem

        def server_requested(self, listen_host, listen_port):
            return False

        def unix_connection_requested(self, dest_path):
            return False

        def unix_server_requested(self, listen_path):
            return False

        def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
            lab = self.lab
            if lab is None or dest_port != 22 or dest_host not in allowed_destinations(self.config, lab):
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                                "only port 22 of your own lab's nodes")
            try:
                self.limits.take("channels", lab)
            except OverLimit as e:
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, str(e)) from None

            async def handler(reader, writer):
                try:
                    await relay(reader, writer, lambda: open_node(self.config, lab, dest_host))
                finally:
                    self.limits.give("channels", lab)
            return handler

    return Gateway


async def _through_host(config: Config, lab: str):
    """An asyncssh connection to the sshd of the lab's host when that host is another machine;
    None for a lab on this one."""
    import asyncssh
    via = jump(lab_config(config, lab))
    if via is None:
        return None
    return await asyncssh.connect(via.host, port=via.port, username=via.user, known_hosts=str(via.known_hosts),
                                  client_keys=[str(via.key)] if via.key else ())


async def open_node(config: Config, lab: str, address: str, port: int = 22):
    """(reader, writer, tunnel) to a node's port: directly (tunnel None), or through the sshd
    of the lab's host; the caller closes the tunnel with the writer."""
    tunnel = await _through_host(config, lab)
    if tunnel is None:
        return (*await asyncio.open_connection(address, port), None)
    try:
        return (*await tunnel.open_connection(address, port), tunnel)
    except BaseException:
        tunnel.close()
        raise


async def connect_as_student(config: Config, lab: str, address: str, timeout: float = 20):
    """An asyncssh connection to a node as `student` with the student's key, the node's host key
    checked against the one swarmlab recorded; through the lab host's sshd for a lab on another
    machine. The caller closes it (and its `.tunnel`, if any)."""
    import asyncssh
    scoped = lab_config(config, lab)
    key = asyncssh.read_private_key(str(credentials_dir(config, lab) / "id_ed25519"))
    tunnel = await _through_host(config, lab)
    try:
        conn = await asyncio.wait_for(asyncssh.connect(address, username=STUDENT_USER, client_keys=[key],
                                                       known_hosts=str(known_hosts(scoped, lab)), tunnel=tunnel),
                                      timeout)
    except BaseException:
        if tunnel is not None:
            tunnel.close()
        raise
    conn.tunnel = tunnel
    return conn


def gateway_host_key(config: Config) -> Path:
    path = config.state_dir / "portal" / "ssh_host_ed25519_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "swarmlab gateway", "-f", str(path)],
                       check=True, capture_output=True)
        path.chmod(0o600)
    return path


GATEWAY_WINDOW = 256 * 1024  # bytes a student may have in flight per channel (asyncssh's default: 2 MiB)


async def start_gateway(config: Config, labs: callable, limits: StudentLimits, host: str = "", port: int = 0,
                        sock=None, addresses: AddressLimits | None = None):
    """The gateway's server on `sock` (bound before the process entered the lab host's
    namespace), or on host:port; `labs()` names the labs whose students may log in now."""
    import asyncssh
    Gateway = _gateway_classes()
    where = {"sock": sock} if sock is not None else {"host": host, "port": port}
    live: set = set()
    server = await asyncssh.create_server(lambda: Gateway(config, labs, limits, live, addresses), **where,
                                          server_host_keys=[str(gateway_host_key(config))],
                                          agent_forwarding=False, x11_forwarding=False, allow_scp=False,
                                          login_timeout=30, keepalive_interval=30, window=GATEWAY_WINDOW)
    server.connections = live  # what stop_gateway ends
    return server


def stop_gateway(server) -> None:
    """Stops listening and ends every open connection. Python 3.11's wait_closed waits for the
    last connection, so one laptop that connected and said nothing would hold a stop up to the
    login timeout."""
    server.close()
    for conn in list(server.connections):
        conn.close()


def ssh_config_text(lab: Lab, gateway_address: str, gateway_port: int) -> str:
    """The student's ssh_config: from inside their folder, `ssh -F ssh_config swr1` reaches swr1
    through the gateway, with their key and the recorded host keys (paths are relative to the
    folder: OpenSSH takes `~` from the password database, not from where the folder is)."""
    first = lab.nodes[0].name if lab.nodes else "swr1"
    common = ["    IdentityFile id_ed25519", "    IdentitiesOnly yes", "    UserKnownHostsFile known_hosts",
              "    StrictHostKeyChecking yes", "    BatchMode yes"]
    lines = [f"# swarmlab: lab {lab.name}. In this folder: ssh -F ssh_config {first}",
             "Host swarmlab-gateway", f"    HostName {gateway_address}", f"    Port {gateway_port}",
             f"    User {lab.name}", *common, ""]
    for node in lab.nodes:
        lines += [f"Host {node.name}", f"    HostName {node.ip}", f"    User {STUDENT_USER}", *common,
                  "    ProxyJump swarmlab-gateway", ""]
    return "\n".join(lines)


def known_hosts_text(config: Config, lab: str, gateway_address: str, gateway_port: int) -> str:
    """The gateway's host key and the nodes' (as swarmlab recorded them, verified through the
    guest agent), so that the student's first contact is verified too."""
    key = gateway_host_key(config).with_suffix(".pub").read_text().split()
    lines = [f"[{gateway_address}]:{gateway_port} {key[0]} {key[1]}"]
    try:
        lines += [line for line in known_hosts(config, lab).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        pass
    return "\n".join(lines) + "\n"
