"""What swarmlab.toml may say: each section's keys, the Config field each sets, and the
validator its value must pass; the same for each [[hosts]] entry."""

from __future__ import annotations

from typing import Any, Callable

from swarmlab import config_values as values

# TOML section -> {toml key: (Config field, validator)}
SCHEMA: dict[str, dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "libvirt": {
        "uri": ("uri", values.nonempty),
        "network": ("network", values.label),
        "cidr": ("cidr", values.cidr),
        "template": ("template", values.label),
        "domain_type": ("domain_type", values.choice("auto", "kvm", "qemu")),
    },
    "dns": {
        "zone": ("zone", values.zone),
        "api_url": ("api_url", values.url),
        "api_key_file": ("api_key_file", values.optional_path),
        "ttl": ("ttl", values.int_range(1, 86400)),
        "nameserver": ("nameserver", values.host_port),
    },
    "ssh": {
        "user": ("ssh_user", values.label),
        "key": ("ssh_key", values.optional_path),
    },
    "nodes": {
        "vcpus": ("vcpus", values.int_range(1, 64)),
        "memory_mib": ("memory_mib", values.int_range(256, 262144)),
        "tb_cache_mib": ("tb_cache_mib", values.int_range(0, 4096)),
        "wake": ("wake", values.boolean),
        "max": ("max_nodes", values.int_range(1, 64)),
        "lab": ("lab", values.label),
        "boot_timeout": ("boot_timeout", values.int_range(10, 3600)),
        "prefix": ("prefix", values.label),
        "labels": ("labels", values.label_list),
    },
    "engine": {
        "install": ("engine_install", values.choice("bundle", "apt")),
        "package": ("engine_package", values.package),
        "images": ("engine_images", values.path_list),
    },
    "host": {
        "namespace": ("namespace", values.label),
        "state_dir": ("state_dir", values.path),
        "cache_dir": ("cache_dir", values.path),
        "dns_port": ("dns_port", values.int_range(1, 65535)),
        "services_address": ("services_address", values.address),
        "ksm": ("ksm", values.boolean),
    },
    "class": {
        "lab_range": ("lab_range", values.lab_range),
        "parallel": ("parallel", values.int_range(0, 32)),
        "node_mib": ("node_mib", values.int_range(0, 65536)),
        "cpu_cap_percent": ("cpu_cap_percent", values.int_range(0, 6400)),
        "node_disk_gib": ("node_disk_gib", values.int_range(0, 4096)),
        "ends": ("class_ends", values.optional_text),
        "language": ("class_language", values.choice("en", "ru")),
    },
    "portal": {
        "listen": ("portal_listen", values.address),
        "address": ("portal_address", values.optional_text),
        "ssh_port": ("gateway_port", values.int_range(1, 65535)),
        "https_port": ("portal_port", values.int_range(1, 65535)),
        "max_channels": ("max_channels", values.int_range(1, 1000)),
        "max_terminals": ("max_terminals", values.int_range(1, 1000)),
        "checks_at_once": ("checks_at_once", values.int_range(1, 100)),
        "hints_per_minute": ("hints_per_minute", values.int_range(1, 1000)),
        "self_service_every": ("self_service_every", values.int_range(0, 86400)),
        "self_service_at_once": ("self_service_at_once", values.int_range(1, 100)),
        "max_request_kib": ("max_request_kib", values.int_range(1, 65536)),
        "max_connections_per_address": ("max_connections_per_address", values.int_range(1, 100000)),
        "guesses_per_minute": ("guesses_per_minute", values.int_range(1, 100000)),
    },
}
HOST_KEYS: dict[str, Callable[[Any], Any]] = {
    "name": values.label, "uri": values.nonempty, "nodes": values.int_range(1, 4096), "memory_mib": values.int_range(1024, 1 << 24),
    "lab_range": values.lab_range, "ssh": values.user_host_port, "ssh_key": values.optional_path, "pool_dir": values.remote_dir,
}
