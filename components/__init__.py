"""Pulumi ComponentResources: thin wiring over the pure model (settings -> render)."""

from .cluster import HaCluster, HaClusterArgs

__all__ = ["HaCluster", "HaClusterArgs"]
