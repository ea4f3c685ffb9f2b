"""The latency histogram: log buckets (HDR-like, under 0.4% error), merged across worker processes."""

from __future__ import annotations

from typing import Any, Final


class LatencyHistogram:
    """Counts of latencies (ns) in log buckets: 2**SUB_BITS linear sub-buckets per power of two."""

    SUB_BITS: Final = 8
    _SIZE: Final = 64 << 8

    __slots__ = ("counts", "max_ns", "total", "total_ns")

    def __init__(self) -> None:
        self.counts = [0] * self._SIZE
        self.total = 0
        self.total_ns = 0
        self.max_ns = 0

    def record(self, ns: int) -> None:
        shift = ns.bit_length() - self.SUB_BITS
        if shift <= 0:
            self.counts[ns] += 1
        else:
            self.counts[(shift << self.SUB_BITS) | (ns >> shift)] += 1
        self.total += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns

    @classmethod
    def bucket_value(cls, index: int) -> int:
        """The middle of a bucket, in ns."""
        shift, mantissa = index >> cls.SUB_BITS, index & ((1 << cls.SUB_BITS) - 1)
        if shift == 0:
            return mantissa
        return (mantissa << shift) + (1 << (shift - 1))

    def merge(self, other: LatencyHistogram) -> None:
        counts = self.counts
        for index, count in enumerate(other.counts):
            if count:
                counts[index] += count
        self.total += other.total
        self.total_ns += other.total_ns
        self.max_ns = max(self.max_ns, other.max_ns)

    def percentile(self, fraction: float) -> int:
        """The latency (ns) at ``fraction`` (0.99 for p99) of the sorted samples; 0 when empty."""
        if not self.total:
            return 0
        rank = min(int(self.total * fraction), self.total - 1)  # 0-based, as kvsload indexes
        if rank == self.total - 1:
            return self.max_ns
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen > rank:
                return min(self.bucket_value(index), self.max_ns)
        return self.max_ns

    def mean(self) -> float:
        return self.total_ns / self.total if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": [[i, c] for i, c in enumerate(self.counts) if c],
            "total_ns": self.total_ns,
            "max_ns": self.max_ns,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyHistogram:
        hist = cls()
        for index, count in data["buckets"]:
            hist.counts[int(index)] += int(count)
            hist.total += int(count)
        hist.total_ns = int(data["total_ns"])
        hist.max_ns = int(data["max_ns"])
        return hist
