"""The latency histogram's bounds, shared by every layer that counts request latencies.

The inference server's ``/metrics`` histogram, the per-minute traffic counters and latency SLO
thresholds all use these bounds, so a threshold of 64 ms is the ``le="0.064"`` bucket in
Prometheus and the same count in Shipway's own counters.
"""

from __future__ import annotations

__all__ = ["LATENCY_BUCKETS", "bucket_label"]

# Seconds: sub-millisecond resolution at the bottom, where a lean server answers.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.0,
    2.5,
    5.0,
)


def bucket_label(bound: float) -> str:
    """The ``le`` label Prometheus' Python client writes for ``bound`` (``0.064``, ``1.0``, ``5.0``)."""
    # prometheus_client's floatToGoString: repr of the float, which keeps the ".0" of whole numbers.
    return repr(float(bound))
