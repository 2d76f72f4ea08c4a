"""The study store: one Optuna trial per grid point, claimed exactly once, on SQLite or PostgreSQL.

Protocol (every step through Optuna's public storage API):
- The grid (experiment, fixed config, dimensions, direction, extra points) is the study's ``lorainit`` user
  attribute; opening a study with new values of its dimensions or new extra points grows the grid (finished points
  are kept, new ones queued); one with another experiment or fixed config is refused before anything is written.
- Points are queued as WAITING trials (``enqueue_trial``) carrying their key as the ``point`` attribute.
- Claiming (WAITING -> RUNNING) and repairing the queue run under a study-wide lock (``storage``: a file lock
  beside a SQLite file, ``pg_advisory_lock`` on PostgreSQL). Under the lock a worker
  1. fails RUNNING trials whose worker is gone: on the same host (hostname + boot id) its pid no longer
     exists or names a process started later; on any host, no heartbeat for ``grace`` seconds (a lease: a
     stopped or hung worker loses its trials too); or no owner recorded at all (the claimer died in the lock);
  2. re-queues every point that has no finished (COMPLETE, or PRUNED = diverged) and no live trial;
  3. claims up to ``batch`` WAITING trials that share a batch key, failing queued duplicates of points
     already finished.
- A claimed trial carries its owner (host, pid) and a heartbeat timestamp refreshed by a thread.
- A finished point is COMPLETE with the validation metric as its value, or PRUNED with the divergence
  step and reason; details go to user attributes.
A point is done when it has a COMPLETE or PRUNED trial; FAIL trials are lost attempts, kept for the record.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from ..io import config_diff, json_safe
from . import storage
from .dberrors import retrying
from .grid import DONE_STATES, Grid, point_key
from .liveness import host_id, pid_alive, process_start


@dataclass
class Claim:
    trial_id: int
    number: int
    point: dict


class Store:
    def __init__(
        self,
        url: str,
        study: str,
        *,
        heartbeat: float = 10.0,
        grace: float = 120.0,
        must_exist: bool = False,
        lock_timeout: float = 600.0,
        patience: float = 120.0,
        rejoining: bool = False,
    ):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url, self.study_name, self.heartbeat, self.grace = url, study, heartbeat, grace
        self.lock_timeout, self.patience = lock_timeout, patience
        self.shown = storage.redact(url)
        if rejoining:  # a study this worker's folder names: a server that refuses now is likely restarting
            self.kind, self.lock_path, self.storage = self._reconnect(url, grace, must_exist)
        else:  # a new study: a wrong URL or a server not started is one line at once
            self.kind, self.lock_path, self.storage = storage.connect(url, grace=grace, must_exist=must_exist)
        self.host = host_id()
        self.study = None

    @retrying
    def _reconnect(self, url: str, grace: float, must_exist: bool):
        """``storage.connect``, a transient failure waited out for ``patience`` seconds as one mid-sweep is."""
        return storage.connect(url, grace=grace, must_exist=must_exist, raw=True)

    def lock(self):
        """The study-wide lock around claiming and queue repair (``storage.study_lock``)."""
        return storage.study_lock(self, timeout=self.lock_timeout)

    def existing(self) -> dict | None:
        """The grid signature of the study in this storage, None if there is no such study."""
        import optuna

        try:
            return optuna.load_study(study_name=self.study_name, storage=self.storage).user_attrs.get("lorainit", {})
        except KeyError:
            return None

    @retrying
    def load(self) -> dict:
        """Attach to an existing study made by ``lorainit sweep``; returns its grid signature."""
        import optuna

        have = self.existing()
        if not have:
            raise ValueError(
                f"no lorainit sweep study named {self.study_name!r} in {self.shown}; check --study and --storage"
            )
        self.study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        self.grid = Grid(**have)
        return have

    @retrying
    def open(self, grid: Grid) -> None:
        """Create the study or check that it holds ``grid`` (refusing it untouched otherwise), then repair the queue."""
        import optuna

        want = grid.signature()
        with self.lock():
            have = self.existing()
            if have == {} and self._half_made():  # a worker died (or lost its lock) between creating it and naming it
                have = None
            merged = want if have is None else self._grown(have, want)
            self.study = optuna.create_study(
                study_name=self.study_name, storage=self.storage, direction=grid.direction, load_if_exists=True
            )
            if merged != have:
                self.study.set_user_attr("lorainit", merged)
            self.grid = Grid(**merged)
            self._repair()

    def _half_made(self) -> bool:
        """Whether the study without a grid is one of ours left half made: every trial it has (if any) a queued point."""
        import optuna

        trials = optuna.load_study(study_name=self.study_name, storage=self.storage).get_trials(deepcopy=False)
        return all("point" in t.user_attrs for t in trials)

    def _grown(self, have: dict, want: dict) -> dict:
        """The study's grid grown by ``want``'s new values (more LRs, seeds, inits, widths, modes: finished points keep
        their meaning); anything else that differs (the experiment, its fixed config) is refused, naming each field."""
        diff = [
            f"{k}: {have.get(k)!r} there, {want.get(k)!r} now"
            for k in ("experiment", "metric", "direction")
            if have.get(k) != want.get(k)
        ]
        hc, wc = have.get("config", {}), want.get("config", {})
        diff += [f"config.{k}: {hc.get(k)!r} there, {wc.get(k)!r} now" for k in config_diff(hc, wc)]
        if list(have.get("dims", {})) != list(want["dims"]):
            diff.append(f"dimensions: {', '.join(have.get('dims', {})) or 'none'} there, {', '.join(want['dims'])} now")
        if diff:
            raise ValueError(
                f"study {self.study_name!r} in {self.shown} exists with a different setup ({'; '.join(diff)}): "
                "a study grows by more LRs, seeds or inits, not by a change to what its finished points mean; "
                "use another --study or --out"
            )
        dims = {k: list(v) + [x for x in want["dims"][k] if x not in v] for k, v in have["dims"].items()}
        extra = list(have.get("extra", []))
        extra += [e for e in want.get("extra", []) if e not in extra]
        return {**have, "dims": dims, **({"extra": extra} if extra else {})}

    def _stale(self, t, now: float) -> str | None:
        """Why a RUNNING trial's worker has lost it, or None: on this host, a process that is gone (or a new process
        under its pid); anywhere, a lease (heartbeat) older than ``grace`` (a stopped, hung or unreachable worker)."""
        w = t.user_attrs.get("worker")
        if w is None:
            return "claimed with no owner recorded (the claiming worker died)"
        if w["host"] == self.host:
            if not pid_alive(w["pid"]):
                return f"worker pid {w['pid']} on this host is gone"
            if w.get("start") is not None and process_start(w["pid"]) != w["start"]:
                return f"worker pid {w['pid']} on this host is gone (the pid now names another process)"
        quiet = now - t.user_attrs.get("heartbeat", 0.0)
        return (
            f"no heartbeat for {quiet:.0f} s from {w['host'].split('/')[0]} pid {w['pid']}"
            if quiet > self.grace
            else None
        )

    def _repair(self) -> list:
        """Fail trials of lost workers and re-queue points with no live or finished trial (under the lock)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        now = time.time()
        failed = False
        for t in trials:
            if t.state == TrialState.RUNNING and (why := self._stale(t, now)):
                try:
                    self.storage.set_trial_user_attr(t._trial_id, "failure", why)
                    self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                    failed = True
                except UpdateFinishedTrialError:
                    pass
        queued: dict[str, object] = {}
        # a point queued twice (two workers repairing without the lock, one of them having lost it): the later
        # copies go
        for t in sorted(trials, key=lambda t: t.number):
            if t.state != TrialState.WAITING:
                continue
            key = t.user_attrs.get("point")
            if key in queued:
                self.storage.set_trial_user_attr(t._trial_id, "failure", "queued twice")
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                failed = True
            queued.setdefault(key, t)
        if failed:
            trials = self.study.get_trials(deepcopy=False)
        covered = {
            t.user_attrs.get("point")
            for t in trials
            if t.state.name in DONE_STATES or t.state in (TrialState.WAITING, TrialState.RUNNING)
        }
        missing = [(p, key) for p in self.grid.points() if (key := point_key(p)) not in covered]
        for p, key in missing:
            self.study.enqueue_trial(p, user_attrs={"point": key})
        return self.study.get_trials(deepcopy=False) if missing else trials  # re-read only after a change

    @retrying
    def claim(self, batch: int, batch_key) -> list[Claim]:
        """Take up to ``batch`` queued points sharing ``batch_key(point)``; [] when none is queued."""
        from optuna.distributions import CategoricalDistribution
        from optuna.trial import TrialState

        claims: list[Claim] = []
        with self.lock():
            trials = self._repair()
            done = {t.user_attrs.get("point") for t in trials if t.state.name in DONE_STATES}
            busy = {t.user_attrs.get("point") for t in trials if t.state == TrialState.RUNNING}
            for t in sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: t.number):
                key = t.user_attrs.get("point")
                if key in done:  # a queued duplicate of a finished point
                    self.storage.set_trial_user_attr(t._trial_id, "failure", "duplicate of a finished point")
                    self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                    continue
                point = json.loads(key)
                if key in busy or (claims and batch_key(point) != batch_key(claims[0].point)):
                    continue
                if not self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                    continue
                self.storage.set_trial_user_attr(
                    t._trial_id, "worker", {"host": self.host, "pid": os.getpid(), "start": process_start(os.getpid())}
                )
                self.storage.set_trial_user_attr(t._trial_id, "heartbeat", time.time())
                try:  # visible to Optuna's own tools ...
                    for name, values in self.grid.dims.items():
                        dist = CategoricalDistribution(values)
                        self.storage.set_trial_param(t._trial_id, name, dist.to_internal_repr(point[name]), dist)
                except ValueError:  # ... unless the grid grew: Optuna's categorical choices cannot (the point stays)
                    pass
                claims.append(Claim(t._trial_id, t.number, point))
                busy.add(key)
                if len(claims) == batch:
                    break
        return claims

    @retrying
    def finish(self, claim: Claim, value: float | None, attrs: dict) -> bool:
        """Record a trial's result: COMPLETE with ``value``, or PRUNED (diverged) when ``value`` is None.
        False if the trial is no longer this worker's (declared lost meanwhile)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        try:
            for k, v in json_safe(attrs).items():
                self.storage.set_trial_user_attr(claim.trial_id, k, v)
            if value is None:
                self.study.tell(claim.number, state=TrialState.PRUNED)
            else:
                self.study.tell(claim.number, values=[value])
        except (UpdateFinishedTrialError, ValueError, RuntimeError):
            return False
        return True

    @retrying
    def progress(self) -> tuple[int, int, int]:
        """(finished points, running trials, grid size); the grid as stored now (another worker may have widened it)."""
        self.grid = Grid(**self.study.user_attrs["lorainit"])
        trials = self.study.get_trials(deepcopy=False)
        done = {t.user_attrs.get("point") for t in trials if t.state.name in DONE_STATES}
        running = sum(t.state.name == "RUNNING" for t in trials)
        return len(done), running, len(self.grid.points())

    @retrying
    def records(self) -> list[dict]:
        """Every trial as a flat dict: number, state, the point, value and user attributes."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            attrs = {k: v for k, v in t.user_attrs.items() if k not in ("worker", "heartbeat")}
            point = json.loads(attrs.pop("point", "{}"))
            out.append({"number": t.number, "state": t.state.name, **point, "value": t.value, **attrs})
        return out
