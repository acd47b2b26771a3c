"""What swarmlab asks a guest's qemu-guest-agent: its clock (read and set), small files, and
programs run before the guest has a network (a woken clone's fresh identity).
Mixed into Hypervisor."""

from __future__ import annotations

import json
import time

import libvirt

from swarmlab.adapters.libvirt_errors import HypervisorError, libvirt_errors_as_ours

GUEST_OUTPUT_BYTES = 65536  # what swarmlab's own guest commands print is a few lines
CLOCK_SYNCED = 0.3  # seconds a synced guest clock may be off (the health gate allows 1)


def clock_offset(guest: float, before: float, after: float) -> float:
    """How far at least a guest clock is off, read between `before` and `after` on the host:
    under load the agent may answer seconds late, and that wait is not the guest's error."""
    if guest < before:
        return guest - before
    if guest > after:
        return guest - after
    return 0.0


@libvirt_errors_as_ours
class GuestAgentMixin:
    """Needs `_owned` and `_domain` of the Hypervisor it is mixed into."""

    def sync_clock(self, name: str, tries: int = 3) -> None:
        """The guest clock brought to the host's (a reverted guest's clock stands at snapshot
        time until then). The guest steps its own clock by the offset read through the agent
        (`date -s '+N seconds'`, one process, so no spawn time is lost in between). Not the
        agent's guest-set-time: qemu-ga then runs `hwclock -w`, which took 1-6 s a node right
        after a revert under TCG. Nor `hwclock -s`: the RTC has whole seconds only."""
        dom = self._owned(name)
        for _ in range(tries):
            offset, error = self._clock_reading(dom)
            if abs(offset) + error <= CLOCK_SYNCED:
                return
            if error > CLOCK_SYNCED:
                continue  # the agent answered too slowly to step by this reading: read again
            try:
                code, _ = self.guest_exec(name, ["/bin/date", "-s", f"{-offset:+.6f} seconds"], timeout=10)
            except HypervisorError:
                code = -1
            if code != 0:  # a guest without guest-exec, or without GNU date
                self._set_time(dom, name)
                return

    def _clock_reading(self, dom) -> tuple[float, float]:
        """(guest clock minus host clock at the reading's midpoint, how far that may be off)."""
        before = time.time()
        t = dom.getTime()
        after = time.time()
        return t["seconds"] + t["nseconds"] / 1e9 - (before + after) / 2, (after - before) / 2

    def _set_time(self, dom, name: str) -> None:
        now = time.time()
        try:
            dom.setTime({"seconds": int(now), "nseconds": int((now - int(now)) * 1e9)}, 0)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"syncing the clock of {name} failed (guest agent): "
                                  f"{e.get_error_message()}") from None

    def guest_clock_offset(self, name: str) -> float | None:
        """Guest clock minus host clock in seconds, read through the guest agent; None when the
        agent does not answer."""
        dom = self._domain(name)
        try:
            before = time.time()
            t = dom.getTime()
            after = time.time()
        except libvirt.libvirtError:
            return None
        return clock_offset(t["seconds"] + t["nseconds"] / 1e9, before, after)

    def _agent(self, dom, command: str, timeout: int = 5, **arguments):
        import libvirt_qemu
        reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": command, "arguments": arguments}),
                                              timeout, 0)
        return json.loads(reply)["return"]

    def wait_for_agent(self, name: str, timeout: float) -> None:
        """Until the guest agent answers (it reconnects a moment after a guest wakes or boots)."""
        dom = self._owned(name)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._agent(dom, "guest-ping", timeout=2)
                return
            except libvirt.libvirtError as e:
                if time.monotonic() > deadline:
                    raise HypervisorError(f"the guest agent of {name} did not answer within {timeout:g} s: "
                                          f"{e.get_error_message()}") from None
                time.sleep(0.5)

    def guest_exec(self, name: str, argv: list[str], stdin: bytes = b"", timeout: float = 60,
                   most_bytes: int = GUEST_OUTPUT_BYTES) -> tuple[int, str]:
        """(exit code, stdout and stderr) of a program run inside the guest by its agent, before
        the guest has any network. The output is not logged: callers keep secrets out of it.
        Root in the guest decides what it prints: at most `most_bytes` of each stream is kept
        (qemu-ga itself sends at most 16 MiB)."""
        import base64
        dom = self._owned(name)
        arguments = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin:
            arguments["input-data"] = base64.b64encode(stdin).decode()
        try:
            pid = self._agent(dom, "guest-exec", **arguments)["pid"]
            deadline = time.monotonic() + timeout
            while True:
                status = self._agent(dom, "guest-exec-status", pid=pid)
                if status.get("exited"):
                    break
                if time.monotonic() > deadline:
                    raise HypervisorError(f"{argv[0]} in {name} did not finish within {timeout:g} s")
                time.sleep(0.2)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"running {argv[0]} in {name} through its guest agent failed: "
                                  f"{e.get_error_message()}") from None
        keep = (most_bytes + 2) // 3 * 4  # base64 characters for most_bytes
        output = b"".join(base64.b64decode(status.get(k, "")[:keep]) for k in ("out-data", "err-data"))
        return status.get("exitcode", -1), output.decode(errors="replace")

    def read_guest_file(self, name: str, path: str, limit: int = 65536) -> str | None:
        """A small text file read inside the guest through its agent, or None when the agent
        does not answer or the file is not there (yet)."""
        import base64
        dom = self._owned(name)
        try:
            handle = self._agent(dom, "guest-file-open", path=path, mode="r")
            try:
                data = self._agent(dom, "guest-file-read", handle=handle, count=limit)
            finally:
                self._agent(dom, "guest-file-close", handle=handle)
        except (libvirt.libvirtError, KeyError, ValueError):
            return None
        return base64.b64decode(data.get("buf-b64", "")).decode(errors="replace")
