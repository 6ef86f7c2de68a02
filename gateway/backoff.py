"""The one capped, jittered exponential backoff of the gateway (reopening ports, publishing)."""


def delay(attempt: int, min_s: float, max_s: float, u: float) -> float:
    """Seconds to wait before retry number `attempt` (0 = first).

    Doubling from min_s, capped at max_s, with equal jitter: u (uniform in [0, 1)) places the
    wait in [base/2, base], so gateways and ports that failed together do not retry in step.
    """
    base = min(max_s, min_s * 2.0 ** min(attempt, 64))
    return base * (0.5 + 0.5 * u)
