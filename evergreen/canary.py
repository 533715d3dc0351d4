"""Canary analysis: the gateway's Prometheus counters, differenced over a bake window, canary vs champion.

Everything is computed from what the gateway exposes on ``/metrics`` (the same numbers a Prometheus
server would scrape), so the analysis works against any receiver that exposes these series:

- ``evergreen_gateway_requests_total{version,outcome}``: outcome ``ok`` or ``error``;
- ``evergreen_gateway_latency_seconds`` and ``evergreen_gateway_prediction`` histograms per version;
- ``evergreen_gateway_feedback_total``, ``evergreen_gateway_feedback_log_loss_total`` and
  ``..._log_loss_squared_total`` per version: labels that came back after the fact, for realised
  quality with a confidence interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from evergreen.config import CanaryAnalysisConfig

Snapshot = dict[tuple[str, tuple[tuple[str, str], ...]], float]

REQUESTS = "evergreen_gateway_requests_total"
LATENCY = "evergreen_gateway_latency_seconds"
PREDICTION = "evergreen_gateway_prediction"
FEEDBACK = "evergreen_gateway_feedback_total"
FEEDBACK_LOG_LOSS = "evergreen_gateway_feedback_log_loss_total"
FEEDBACK_LOG_LOSS_SQ = "evergreen_gateway_feedback_log_loss_squared_total"


def scrape_metrics(url: str, timeout: float) -> Snapshot:
    """The gateway's metrics now (GET its Prometheus endpoint)."""
    r = httpx.get(url, timeout=timeout)
    r.raise_for_status()
    return parse_metrics(r.text)


def parse_metrics(text: str) -> Snapshot:
    """Prometheus text exposition -> {(sample name, sorted labels): value}."""
    out: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def delta(after: Snapshot, before: Snapshot) -> Snapshot:
    """Counter increase between two scrapes (a counter that went down means a restart: take ``after``)."""
    out: Snapshot = {}
    for key, value in after.items():
        prev = before.get(key, 0.0)
        out[key] = value - prev if value >= prev else value
    return out


@dataclass
class VersionStats:
    version: str
    requests: float = 0.0
    errors: float = 0.0
    latency_buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)
    prediction_buckets: list[tuple[float, float]] = field(default_factory=list)
    labelled: float = 0.0
    log_loss_sum: float = 0.0
    log_loss_sq_sum: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def latency_p95_ms(self) -> float | None:
        q = quantile(self.latency_buckets, 0.95)
        return None if q is None else q * 1000.0

    @property
    def latency_p50_ms(self) -> float | None:
        q = quantile(self.latency_buckets, 0.5)
        return None if q is None else q * 1000.0

    @property
    def latency_samples(self) -> float:
        """Requests timed (one per call, whatever its number of rows)."""
        return self.latency_buckets[-1][1] if self.latency_buckets else 0.0

    @property
    def mean_log_loss(self) -> float | None:
        return self.log_loss_sum / self.labelled if self.labelled else None

    @property
    def log_loss_var_of_mean(self) -> float:
        """Variance of the mean log loss (sample variance / n), from the running sums."""
        n = self.labelled
        if n < 2:
            return math.inf
        var = max(self.log_loss_sq_sum - self.log_loss_sum**2 / n, 0.0) / (n - 1)
        return var / n

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": int(self.requests),
            "errors": int(self.errors),
            "error_rate": round(self.error_rate, 5),
            "latency_p95_ms": _round(self.latency_p95_ms),
            "labelled": int(self.labelled),
            "mean_log_loss": _round(self.mean_log_loss),
        }


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)


def _buckets(snap: Snapshot, name: str, version: str) -> list[tuple[float, float]]:
    """One version's cumulative buckets, summed over its other labels (a version that served as
    canary and then as champion has one series per role)."""
    sums: dict[float, float] = {}
    for (sample, labels), value in snap.items():
        d = dict(labels)
        if sample == f"{name}_bucket" and d.get("version") == version:
            le = float(d["le"])
            sums[le] = sums.get(le, 0.0) + value
    return sorted(sums.items())


def stats_for(snap: Snapshot, version: str) -> VersionStats:
    s = VersionStats(version)
    for (sample, labels), value in snap.items():
        d = dict(labels)
        if d.get("version") != version:
            continue
        if sample == REQUESTS:
            s.requests += value
            if d.get("outcome") == "error":
                s.errors += value
        elif sample == FEEDBACK:
            s.labelled += value
        elif sample == FEEDBACK_LOG_LOSS:
            s.log_loss_sum += value
        elif sample == FEEDBACK_LOG_LOSS_SQ:
            s.log_loss_sq_sum += value
    s.latency_buckets = _buckets(snap, LATENCY, version)
    s.prediction_buckets = _buckets(snap, PREDICTION, version)
    return s


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus ``histogram_quantile``: linear interpolation inside the bucket holding rank q."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            width = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / width if width else 1.0)
        prev_le, prev_count = le, count
    return prev_le


def histogram_psi(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> tuple[float, float] | None:
    """PSI between two cumulative histograms with the same bucket bounds, and the part of it that
    sampling noise alone explains. Counts get add-half smoothing (an empty bucket is not infinitely
    surprising) and the noise is (k - 1)(1/n_a + 1/n_b) over the k occupied buckets: a canary seen on
    a few dozen requests shows a large raw PSI even when nothing moved. None when either is empty."""
    if not a or not b or a[-1][1] <= 0 or b[-1][1] <= 0:
        return None
    da = [c - p for (_, c), (_, p) in zip(a, [(0.0, 0.0), *a[:-1]], strict=True)]
    db = [c - p for (_, c), (_, p) in zip(b, [(0.0, 0.0), *b[:-1]], strict=True)]
    pairs = [(x, y) for x, y in zip(da, db, strict=True) if x or y]
    k = len(pairs)
    ta, tb = sum(x for x, _ in pairs) + 0.5 * k, sum(y for _, y in pairs) + 0.5 * k
    psi = sum(((x + 0.5) / ta - (y + 0.5) / tb) * math.log(((x + 0.5) / ta) / ((y + 0.5) / tb)) for x, y in pairs)
    return psi, max(k - 1, 0) * (1 / a[-1][1] + 1 / b[-1][1])


@dataclass
class CanaryCheck:
    name: str
    passed: bool
    value: float | None
    limit: float | None
    note: str


@dataclass
class CanaryVerdict:
    passed: bool
    inconclusive: bool
    checks: list[CanaryCheck]
    canary: dict[str, Any]
    champion: dict[str, Any]
    baseline: str

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.note}" for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": self.reasons}


MIN_P95_SAMPLES = 20  # timed calls below which the latency check judges the median instead of the p95


def analyse(
    canary: VersionStats, champion: VersionStats, cfg: CanaryAnalysisConfig, baseline: str = "same window"
) -> CanaryVerdict:
    """Judge the canary's window against the champion's; every check says what it saw and its limit.

    Prediction shift and realised quality depend on the traffic mix (hour of day, airports), so
    they are only judged against champion traffic of the same window; errors and latency are also
    judged against the champion's earlier traffic (e.g. at 100%, when the champion serves nothing).
    """
    concurrent = baseline == "same window"
    checks: list[CanaryCheck] = []
    if canary.requests < cfg.min_requests:
        note = f"{int(canary.requests)} canary requests < min_requests {cfg.min_requests}: inconclusive"
        proceed = cfg.on_inconclusive == "proceed"
        checks.append(CanaryCheck("traffic", proceed, canary.requests, cfg.min_requests, note))
        return CanaryVerdict(proceed, True, checks, canary.summary(), champion.summary(), baseline)

    er = canary.error_rate
    checks.append(
        CanaryCheck(
            "error_rate", er <= cfg.max_error_rate, er, cfg.max_error_rate, f"{er:.2%} vs max {cfg.max_error_rate:.2%}"
        )
    )

    c95, b95 = canary.latency_p95_ms, champion.latency_p95_ms
    if c95 is None or b95 is None:
        checks.append(CanaryCheck("latency_p95", True, c95, None, "no champion latency to compare with: skipped"))
    else:
        # The p95 of a few timed calls is the slowest one: one pause of the host would roll back a
        # healthy canary. The median, under the same rule, still catches a canary slow on every call.
        timed = int(canary.latency_samples)
        name, c, b, label, why = "latency_p95", c95, b95, "", ""
        if timed < MIN_P95_SAMPLES:
            name, label = "latency_p50", "median "
            c, b = canary.latency_p50_ms or 0.0, champion.latency_p50_ms or 0.0
            why = f": {timed} timed calls < {MIN_P95_SAMPLES}, too few for a p95"
        limit = b * cfg.max_latency_p95_ratio + cfg.latency_slack_ms
        note = f"{label}{c:.1f} ms vs limit {limit:.1f} ms (champion {b:.1f}){why}"
        checks.append(CanaryCheck(name, c <= limit, c, limit, note))

    shift = histogram_psi(canary.prediction_buckets, champion.prediction_buckets) if concurrent else None
    if not concurrent:
        checks.append(CanaryCheck("prediction_shift", True, None, None, "no concurrent champion traffic: skipped"))
    elif shift is not None:
        raw, noise = shift
        psi = max(raw - noise, 0.0)
        note = f"PSI {psi:.3f} beyond sampling noise (raw {raw:.3f}, noise {noise:.3f}) vs max {cfg.max_prediction_psi}"
        checks.append(CanaryCheck("prediction_shift", psi <= cfg.max_prediction_psi, psi, cfg.max_prediction_psi, note))
    else:
        checks.append(
            CanaryCheck("prediction_shift", True, None, None, "no champion predictions to compare with: skipped")
        )

    cl, bl = canary.mean_log_loss, champion.mean_log_loss
    if not concurrent:
        checks.append(CanaryCheck("realised_log_loss", True, None, None, "no concurrent champion traffic: skipped"))
    elif (
        canary.labelled >= cfg.min_labelled
        and champion.labelled >= cfg.min_labelled
        and cl is not None
        and bl is not None
    ):
        # Worse only when the whole 95% interval of the difference lies beyond the allowed increase:
        # a few dozen labels are noisy, and a rollback on noise is as wrong as a missed regression.
        diff = cl - bl
        half = 1.96 * math.sqrt(canary.log_loss_var_of_mean + champion.log_loss_var_of_mean)
        note = (
            f"log loss {cl:.4f} vs champion {bl:.4f}: difference {diff:+.4f} "
            f"(95% CI [{diff - half:+.4f}, {diff + half:+.4f}]) vs max increase {cfg.max_log_loss_increase}"
        )
        ok = diff - half <= cfg.max_log_loss_increase
        checks.append(CanaryCheck("realised_log_loss", ok, diff, cfg.max_log_loss_increase, note))
    else:
        n = f"{int(canary.labelled)} / {int(champion.labelled)} labelled (min {cfg.min_labelled})"
        checks.append(CanaryCheck("realised_log_loss", True, None, None, f"{n}: skipped"))

    return CanaryVerdict(all(c.passed for c in checks), False, checks, canary.summary(), champion.summary(), baseline)
