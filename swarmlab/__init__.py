"""swarmlab: Docker Swarm training labs on a libvirt host."""

__version__ = "0.1.0"
