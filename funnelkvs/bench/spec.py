"""What a benchmark runs (:class:`BenchSpec`), what it reports (:class:`BenchReport`), and the keys and
values it uses (``key:%010d``, ``v`` repeated, as the neutral C generator in ``../shared/bench``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from funnelkvs.client.address import parse_addresses

WORKLOADS: Final = ("get", "put", "mix")
#: Share of GETs in the ``mix`` workload.
MIX_GET_RATIO: Final = 0.9
# Shared by the workers' connections and the coordinator's INFO and RING_VIEW calls.
_CONNECT_TIMEOUT: Final = 5.0


def key_name(index: int) -> bytes:
    return b"key:%010d" % index


def value_of(size: int) -> bytes:
    return b"v" * size


# --- what to run and what came out -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchSpec:
    servers: str
    connections: int = 50
    depth: int = 1
    workload: str = "get"
    keys: int = 10_000
    value_size: int = 16
    duration: float = 5.0
    warmup: float = 0.5
    #: Route each request to its key's owner, as the ring-aware client does (see the package docstring).
    smart: bool = False

    def validate(self) -> None:
        parse_addresses(self.servers)
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}")
        for name in ("connections", "depth", "keys"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.value_size < 0 or self.warmup < 0 or self.duration <= 0:
            raise ValueError("value size and warm-up must be >= 0 and the duration > 0")


@dataclass(frozen=True, slots=True)
class BenchReport:
    server: str
    workload: str
    connections: int
    depth: int
    processes: int
    keys: int
    value_size: int
    duration_s: float
    warmup_s: float
    ops: int
    ops_per_s: float
    p50_us: float
    p99_us: float
    p999_us: float
    mean_us: float
    max_us: float
    errors: int
    not_found: int
    #: Ring members the requests were routed over (``--smart`` against a ring); 0: sent as given.
    routed_members: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
