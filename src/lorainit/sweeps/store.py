"""The study store: one Optuna trial per grid point, claimed exactly once, on SQLite or PostgreSQL.

Protocol (every step through Optuna's public storage API):
- The grid (experiment, fixed config, dimensions, direction) is the study's ``lorainit`` user attribute;
  opening a study with new values of its dimensions grows the grid (finished points are kept, new ones
  queued); one with another experiment or fixed config is refused before anything is written.
- Points are queued as WAITING trials (``enqueue_trial``) carrying their key as the ``point`` attribute.
- Claiming (WAITING -> RUNNING) and repairing the queue run under a study-wide lock: a file lock beside
  a SQLite file (Optuna's SQLite transactions do not lock on read, so two processes could both pop one
  trial), ``pg_advisory_lock`` on PostgreSQL. Under the lock a worker
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

import fcntl
import hashlib
import itertools
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..io import config_diff, json_safe
from .dberrors import retrying
from .liveness import host_id, pid_alive, process_start

DONE_STATES = ("COMPLETE", "PRUNED")


def point_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def sqlite_url(path: Path) -> str:
    """The SQLite URL of a database file, its path quoted (a folder named 'a?b' would otherwise end the path at '?')."""
    from urllib.parse import quote

    return f"sqlite:///{quote(str(path))}"


def redact(url: str) -> str:
    """The storage URL with any password replaced by ***, for messages and files."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: show only its scheme
        return url.split(":", 1)[0] + "://..."


@dataclass(frozen=True)
class Grid:
    """What a study is: the experiment, its fixed config, the grid dimensions and the metric's direction."""

    experiment: str
    dims: dict  # name -> list of values, in enqueue order (outermost first)
    config: dict
    metric: str
    direction: str  # "minimize" or "maximize"

    def points(self) -> list[dict]:
        names = list(self.dims)
        return [dict(zip(names, values)) for values in itertools.product(*self.dims.values())]

    def signature(self) -> dict:
        return json.loads(
            json.dumps(
                {
                    "experiment": self.experiment,
                    "dims": self.dims,
                    "config": self.config,
                    "metric": self.metric,
                    "direction": self.direction,
                }
            )
        )


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
    ):
        import optuna
        import sqlalchemy

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url, self.study_name, self.heartbeat, self.grace = url, study, heartbeat, grace
        self.lock_timeout, self.patience = lock_timeout, patience
        self.shown = redact(url)
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported storage {self.shown!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")
        self.kind = scheme
        kwargs = {}
        if scheme == "sqlite":
            path = (
                (sqlalchemy.engine.make_url(url).database or "") if ":///" in url else ""
            )  # unquoted: a folder may hold '?'
            if not path or path.startswith(":memory:"):
                raise ValueError(f"storage {self.shown!r} is not a file: write sqlite:///PATH/study.db")
            if must_exist and not (Path(path).exists() and Path(path).stat().st_size > 0):
                what = "an empty file" if Path(path).exists() else "no such file"
                raise ValueError(f"no study database at {path} ({what}); check the sweep folder or --storage")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.lock_path = Path(path + ".lock")
            kwargs = {"connect_args": {"timeout": 120}}
        if url.startswith(
            "postgresql://"
        ):  # the psycopg 3 driver (the 'postgres' extra), whatever SQLAlchemy's default
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        if scheme == "postgresql":  # the server ends a session left inside a transaction (a stopped worker's) so that
            # its row locks do not hold the others up for longer than a lease
            kwargs = {
                "connect_args": {
                    "options": f"-c idle_in_transaction_session_timeout={int(1000 * max(10.0, 2 * grace))}"
                }
            }
        kwargs["pool_pre_ping"] = True  # a connection dropped by a server restart is replaced, not used
        try:
            self.storage = self._connect(url, kwargs)
        except ImportError as e:
            raise ValueError(
                f"storage {self.shown} needs the database driver {e.name!r}: pip install 'psycopg[binary]'"
            ) from None
        except sqlalchemy.exc.SQLAlchemyError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"cannot open storage {self.shown}: {first}; check the URL and that the server runs"
            ) from None
        self.host = host_id()
        self.study = None

    def _connect(self, url: str, kwargs: dict):
        """Optuna's RDBStorage; schema creation by several fresh workers at once is serialized (SQLite: under
        the file lock) or retried (PostgreSQL: the loser of a concurrent CREATE TABLE sees an error)."""
        import optuna
        import sqlalchemy

        if self.kind == "sqlite":
            with open(self.lock_path, "a+") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    @contextmanager
    def lock(self):
        """The study-wide lock around claiming and queue repair (held for milliseconds). Waiting for it ends after
        ``lock_timeout`` seconds with one line naming the holder: a stopped or hung worker would hold it forever."""
        deadline, pause = time.monotonic() + self.lock_timeout, 0.01
        if self.kind == "sqlite":
            with open(self.lock_path, "a+") as f:
                while True:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            f.seek(0)
                            holder = f.read().strip() or "another worker"
                            raise ValueError(
                                f"the study's lock {self.lock_path} has been held for {self.lock_timeout:.0f} s "
                                f"by {holder}; a stopped or hung worker holds it: resume or end it, then re-run"
                            ) from None
                        time.sleep(pause)
                        pause = min(2 * pause, 0.5)
                f.seek(0)
                f.truncate()
                f.write(f"pid {os.getpid()} on {self.host.split('/')[0]}")
                f.flush()
                yield
            return
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(self.study_name.encode()).digest()[:8], "big", signed=True)
        with self.storage.engine.connect() as conn:
            while not conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                if time.monotonic() > deadline:
                    raise ValueError(
                        f"the study's lock (advisory lock {key} in {self.shown}) has been held for "
                        f"{self.lock_timeout:.0f} s; a stopped or hung worker's database session holds it: "
                        "resume or end that worker (or pg_terminate_backend its session), then re-run"
                    )
                time.sleep(pause)
                pause = min(2 * pause, 0.5)
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()

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
        return {**have, "dims": dims}

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
        for t in sorted(
            trials, key=lambda t: t.number
        ):  # a point queued twice (two workers repairing without the lock,
            if t.state != TrialState.WAITING:  # one of them having lost it): the later copies go
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
                except (
                    ValueError
                ):  # ... unless the grid grew: Optuna's categorical choices cannot (the point attribute stays)
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
        """(finished points, running trials, grid size)."""
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
