"""How much one dispatched subscriber runs at once, holds in memory, and waits for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class DispatchOptions:
    """Limits of one dispatched subscriber. Plain values: the caller reads its own settings.

    - `concurrency`: jobs in flight at once (processing started and not ended).
    - `max_buffered_records` / `max_buffered_bytes`: records fetched but not started. At
      either bound the subscriber pauses its partitions (it keeps polling, so it stays in
      its group) and resumes below half of both.
    - `max_uncommitted_records`: records read and not yet below the committed watermark
      (buffered, in flight, or finished behind an older unfinished record). It bounds
      memory and what a crash or rebalance repeats; at the bound fetching pauses too.
    - `commit_interval_ms`: how often the watermark is committed.
    - `revoke_grace_s`: on a rebalance, how long in-flight jobs of revoked partitions may
      finish before they are cancelled. It, plus `commit_timeout_s` and a second for the
      cancelled jobs to unwind, must stay below the consumer's rebalance timeout
      (default: its session timeout, 10 s); `dispatched_subscriber` checks.
    - `shutdown_grace_s`: on stop, how long in-flight jobs may finish before they are
      cancelled. Keep it below the process manager's kill timeout (Docker: 10 s).
    - `commit_timeout_s`: the longest one offset commit may take.
    - `failure_pause_initial_s` / `failure_pause_max_s`: when a job raises (its failure
      could not even be routed to a retry or dead-letter topic), it is run again in
      place after this pause, doubling up to the maximum; its key stays blocked.
    """

    concurrency: int
    max_buffered_records: int = 1_000
    max_buffered_bytes: int = 16 * 1024 * 1024
    max_uncommitted_records: int = 10_000
    commit_interval_ms: int = 500
    revoke_grace_s: float = 5.0
    shutdown_grace_s: float = 8.0
    commit_timeout_s: float = 2.0
    failure_pause_initial_s: float = 0.5
    failure_pause_max_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "max_buffered_records", "max_buffered_bytes", "commit_interval_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("revoke_grace_s", "shutdown_grace_s", "commit_timeout_s", "failure_pause_initial_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.failure_pause_max_s < self.failure_pause_initial_s:
            raise ValueError("failure_pause_max_s must be at least failure_pause_initial_s")
        if self.max_uncommitted_records < self.max_buffered_records + self.concurrency:
            raise ValueError(
                "max_uncommitted_records must be at least max_buffered_records + concurrency "
                f"({self.max_buffered_records + self.concurrency}), got {self.max_uncommitted_records}"
            )
