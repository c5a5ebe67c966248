"""SSH test hosts in network namespaces (used by tests/fixtures/ssh_hosts.py and benchmarks/)."""

from flows.standins.sshhosts.hosts import HostPool, TestHost, cleanup_stale, unavailable_reason

__all__ = ["HostPool", "TestHost", "cleanup_stale", "unavailable_reason"]
