"""libvirt's errors as swarmlab's: one line each, and "there is none" told apart from a host
that went away mid-call."""

from __future__ import annotations

import libvirt

from swarmlab.errors import SwarmlabError


class HypervisorError(SwarmlabError):
    pass


MISSING = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK, libvirt.VIR_ERR_NO_STORAGE_POOL,
            libvirt.VIR_ERR_NO_STORAGE_VOL}


def only_missing(e: libvirt.libvirtError) -> None:
    """A lookup's error that means "there is none" is an answer; any other (a host that went
    away mid-call) is raised, never taken for a missing object."""
    if e.get_error_code() not in MISSING:
        raise e


def libvirt_errors_as_ours(cls):
    """Every public method turns a libvirt error that it does not handle itself into a
    one-line HypervisorError, so no libvirt object or exception leaves this module."""
    import functools

    def wrap(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except libvirt.libvirtError as e:
                hv = args[0] if args else None
                where = f" at {hv.uri}" if getattr(hv, "remote", False) else ""  # which host of a class
                raise HypervisorError(f"libvirt{where}: {e.get_error_message()}") from None
        return wrapper

    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, wrap(value))
    return cls
