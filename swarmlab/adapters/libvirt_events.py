"""libvirt's domain lifecycle events, timed on this host's monotonic clock: when a node
really stopped or started, for the chaos timelines."""

from __future__ import annotations

import threading
import time

import libvirt

_event_loop_lock = threading.Lock()
_event_loop_started = False


def start_event_loop() -> None:
    """libvirt delivers domain events only to a process that runs its event loop, registered
    before the connection that listens is opened."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop():
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


class LifecycleWatch:
    """Times of STOPPED/STARTED events for one domain, on the host's monotonic clock."""

    def __init__(self, uri: str, domain: str):
        start_event_loop()
        self.times: dict[str, float] = {}
        self.domain = domain
        self.conn = libvirt.open(uri)  # its own: events need a connection opened after the loop

        def callback(_conn, dom, event, _detail, _opaque):
            if dom.name() != self.domain:
                return
            if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                self.times.setdefault("stopped", time.monotonic())
            elif event == libvirt.VIR_DOMAIN_EVENT_STARTED:
                self.times.setdefault("started", time.monotonic())

        self.callback_id = self.conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, callback, None)

    def __enter__(self) -> "LifecycleWatch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait(self, kind: str, timeout: float = 5) -> float | None:
        deadline = time.monotonic() + timeout
        while kind not in self.times and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.times.get(kind)

    def close(self) -> None:
        try:
            self.conn.domainEventDeregisterAny(self.callback_id)
            self.conn.close()
        except libvirt.libvirtError:
            pass
