"""A channel to a unix socket on an SSH server: OpenSSH's direct-streamlocal@openssh.com, which
sshd answers by connecting to the socket itself. paramiko's open_channel cannot ask for it (it
adds no socket path), so the request is built the way open_channel builds its own; any failure
is the caller's cue to fall back on running a process on the node instead."""

from __future__ import annotations

import threading
import time

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN
from paramiko.message import Message

KIND = "direct-streamlocal@openssh.com"


def open_socket_channel(transport: paramiko.Transport, path: str, timeout: float) -> paramiko.Channel:
    """The channel, connected to `path` on the server; raises paramiko.SSHException (the server
    refused: no such socket, forwarding disabled) or AttributeError (a paramiko without the
    internals used here)."""
    if not transport.active:
        raise paramiko.SSHException("SSH session not active")
    with transport.lock:
        window = transport._sanitize_window_size(None)
        packet = transport._sanitize_packet_size(None)
        chanid = transport._next_channel()
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string(KIND)
        m.add_int(chanid)
        m.add_int(window)
        m.add_int(packet)
        m.add_string(path)
        m.add_string("")  # reserved
        m.add_int(0)  # reserved
        channel = paramiko.Channel(chanid)
        transport._channels.put(chanid, channel)
        transport.channel_events[chanid] = opened = threading.Event()
        transport.channels_seen[chanid] = True
        channel._set_transport(transport)
        channel._set_window(window, packet)
    transport._send_user_message(m)
    deadline = time.monotonic() + timeout
    while not opened.wait(0.1):
        if not transport.active or time.monotonic() > deadline:
            raise transport.get_exception() or paramiko.SSHException(f"no answer opening {path} on the node")
    channel = transport._channels.get(chanid)
    if channel is None:  # refused: the server's reason is the transport's saved exception
        raise transport.get_exception() or paramiko.SSHException(f"the node refused a channel to {path}")
    return channel
