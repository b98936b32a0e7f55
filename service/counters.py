"""The service's own Prometheus counters, served after the pipeline's on /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest


class ServiceMetrics:
    """Config changes that weakened privacy within the floor, and changes refused (by the
    privacy floor, the file-only sections, or a secret sent to another host). One registry
    per app, so tests and embedders never share counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._weakened = Counter(
            "edgeblur_privacy_weakened",
            "Config changes through the API that moved a privacy setting the weaker way "
            "(within the privacy floor), by setting.",
            ["setting"],
            registry=self.registry,
        )
        self._refused = Counter(
            "edgeblur_config_changes_refused",
            "Config changes through the API refused: privacy_floor, file_only, secret_host.",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("privacy_floor", "file_only", "secret_host"):
            self._refused.labels(reason=reason)

    def weakened(self, settings: list[str]) -> None:
        for setting in settings:
            # Camera ids are dropped from the label: one series per kind of setting.
            kind = setting.split("].", 1)[-1] if setting.startswith("cameras[") else setting
            self._weakened.labels(setting=kind).inc()

    def refused(self, reason: str) -> None:
        self._refused.labels(reason=reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
