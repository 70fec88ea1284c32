"""Elastic training on Horovod: the loop runs inside `hvd.elastic.run`, with one state object.

Under `horovodrun --min-np/--max-np --host-discovery-script` (Gloo), Horovod keeps the surviving
processes alive when a host is lost and forms a new world when one is added. What survives is what
the state object holds; the trainer decides what that is (`ElasticParticipant`, see
hvd_trainer/elastic_training.py), this module only wires it to Horovod:

  commit()  every `elastic_commit_steps` steps and at each evaluation: a copy in host memory
            (and the point where an added or removed host is noticed: HostsUpdatedInterrupt);
  restore() after HorovodInternalError (a peer died mid-collective): back to the last commit, which
            each survivor also saves as the run's latest checkpoint, without a collective (the job may
            never form a new world: see below);
  sync()    after the new world has formed: rank 0's state to every rank.

Between a reset and the new world, every process waits inside hvd.init() for the new rendezvous.
Should fewer than --min-np processes be available for HOROVOD_ELASTIC_TIMEOUT, horovodrun's driver
ends the job: it terminates the processes it started (SIGTERM, then SIGKILL 5 s later; a Python
signal handler would run only once hvd.init() returned), and all it prints is its own
TimeoutException (with a literal '{activity}' in it, a Horovod bug). A watchdog started with the wait
(`RendezvousWatchdog`) fires a little before that timeout and lets the participant say, while it
still can, what happened, where the last commit is saved and how to resume.

Horovod then re-runs the loop function, which first asks the participant to carry on in the
new world (re-shard the data, rescale the learning rate).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, TypeVar

from hvd_trainer.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Set to 1 by horovodrun for the workers of an elastic (Gloo) job.
ELASTIC_ENV = "HOROVOD_ELASTIC"


def elastic_requested(setting: Optional[bool], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this job trains elastically: the launcher decides unless `distributed.elastic` says otherwise.

    true under a launcher that is not elastic is an error: nothing would replace a lost host.
    """
    launched_elastic = environ.get(ELASTIC_ENV) == "1"
    if setting is None:
        return launched_elastic
    if setting and not launched_elastic:
        raise ConfigError(
            "distributed.elastic is true, but this job was not started by an elastic launcher, so a lost host "
            "would still end it. Launch with horovodrun's elastic mode (Gloo), e.g. 'horovodrun -np 2 --min-np 2 "
            "--max-np 3 --host-discovery-script ./discover_hosts.sh python -m hvd_trainer train ...', or remove "
            "distributed.elastic (mpirun, srun and a fixed horovodrun -H run a static job).")
    return bool(setting)


class ElasticParticipant(Protocol):
    """The trainer's side of the state: what a commit holds and how to carry on after a reset."""

    def snapshot(self) -> Dict[str, Any]:
        """A copy of everything a commit keeps (model, optimizer, scheduler, scaler, tracker, RNG)."""

    def apply(self, snapshot: Dict[str, Any]) -> None:
        """Put a snapshot back into the live objects."""

    def shared(self) -> Dict[str, Any]:
        """What rank 0 sends every rank at a sync (everything but the weights)."""

    def receive(self, shared: Dict[str, Any]) -> None:
        """Take rank 0's `shared()` (every rank, rank 0 too)."""

    def model(self) -> Any:
        """The torch module whose parameters and buffers are broadcast at a sync."""

    def join_package(self) -> Dict[str, Any]:
        """What a process that joins the running job needs to set up without collectives (see `greet`)."""

    def save_commit(self, snapshot: Dict[str, Any]) -> None:
        """Save a commit (one of `snapshot`'s) as the run's latest checkpoint, without any collective; never raises."""

    def world_lost(self, waited_s: float, timeout_s: float, snapshot: Dict[str, Any]) -> None:
        """No new world for `waited_s` of horovodrun's `timeout_s`: save `snapshot` if not yet, and say so."""


#: The name of the first collective after every hvd.init() of an elastic job (see `greet`).
JOIN_NAME = "hvd_trainer.elastic_join"


def greet(hvd, package: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The first collective of every new world: each process sends what a newcomer needs to join (a process
    that is new itself sends None); returns the first package sent, None when every process is new (the job's
    start).

    A process that joins a running job must reach its first state sync without any other collective (the
    others are waiting in that sync): the package (the run directory, the data's metadata, the batch sizes,
    what rank 0 read at the start) lets it set up on its own.
    """
    packages = hvd.allgather_object(package, name=JOIN_NAME)
    return next((p for p in packages if p is not None), None)


def make_state(hvd, participant: ElasticParticipant, on_synced: Callable[[], None]):
    """A horovod.common.elastic.State subclass instance around `participant` (built here: horovod is imported lazily)."""
    from horovod.common.elastic import State

    class TrainerState(State):
        def __init__(self):
            super().__init__(bcast_object=lambda obj: hvd.broadcast_object(obj, root_rank=0,
                                                                           name="hvd_trainer.elastic_hosts"),
                             get_rank=hvd.rank)
            self.commits = 0
            #: Whether this world has exchanged greetings (the processes' first world did, at hvd.init()).
            self.greeted = True
            self._saved = participant.snapshot()

        def save(self) -> None:
            self._saved = participant.snapshot()
            self.commits += 1

        def restore(self) -> None:
            participant.apply(self._saved)
            try:
                participant.save_commit(self._saved)
            except Exception:  # noqa: BLE001 - saving is a precaution: the job may still carry on without it
                logger.exception("Elastic: saving the last commit failed")

        @property
        def last_commit(self) -> Dict[str, Any]:
            return self._saved

        def reset(self) -> None:
            self.greeted = False  # Horovod re-initialised: a new world, maybe with newcomers in it

        def sync(self) -> None:
            if not self.greeted:
                greet(hvd, participant.join_package())
                self.greeted = True
            # Horovod: every rank continues from rank 0's weights and state.
            hvd.broadcast_parameters(participant.model().state_dict(), root_rank=0)
            participant.receive(hvd.broadcast_object(participant.shared() if hvd.rank() == 0 else None,
                                                     root_rank=0, name="hvd_trainer.elastic_state"))
            # The world's state now, as Horovod's ObjectState does: a process that just joined holds no
            # commit of this job yet, and a restore must never take anyone back to before this sync.
            self._saved = participant.snapshot()
            on_synced()

    return TrainerState()


#: horovodrun's default for HOROVOD_ELASTIC_TIMEOUT (horovod/runner/elastic/driver.py), in seconds.
DEFAULT_ELASTIC_TIMEOUT_S = 600


def elastic_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """How long horovodrun waits for --min-np processes before it ends the job (its --elastic-timeout option
    is not passed to the workers: only HOROVOD_ELASTIC_TIMEOUT is seen here)."""
    try:
        return float(environ.get("HOROVOD_ELASTIC_TIMEOUT", DEFAULT_ELASTIC_TIMEOUT_S))
    except ValueError:
        return float(DEFAULT_ELASTIC_TIMEOUT_S)


def warning_delay(timeout_s: float) -> float:
    """When the watchdog speaks: a margin before horovodrun's timeout (a fifth of it, 2 s to 30 s).

    The driver's clock starts later than this process's wait (once every survivor has asked for the
    new rendezvous), so the margin is at least this one.
    """
    return max(timeout_s - min(30.0, max(2.0, timeout_s / 5)), 0.0)


class RendezvousWatchdog:
    """A timer from the moment this process starts waiting for a new world; `cancel()` once it formed."""

    def __init__(self, timeout_s: float, on_fire: Callable[[float, float], None]):
        self.timeout_s, self.on_fire = timeout_s, on_fire
        self._started = time.monotonic()
        self._timer = threading.Timer(warning_delay(timeout_s), self._fire)
        self._timer.daemon = True  # never keeps a finished process alive

    def start(self) -> "RendezvousWatchdog":
        self._timer.start()
        return self

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        try:
            self.on_fire(time.monotonic() - self._started, self.timeout_s)
        except Exception:  # noqa: BLE001 - a thread's error would only be printed, without context
            logger.exception("Elastic: reporting the lost world failed")


def run_elastic(hvd, fn: Callable[[], T], participant: ElasticParticipant, on_state: Callable[[Any], None],
                on_synced: Callable[[], None]) -> T:
    """fn() inside Horovod's elastic run: re-run after every reset, from the restored or synced state.

    The reset is horovod.torch.elastic.run's (shutdown, init) with the watchdog around the wait in init.
    """
    from horovod.common.elastic import run_fn

    state = make_state(hvd, participant, on_synced)

    def reset() -> None:
        watchdog = RendezvousWatchdog(elastic_timeout(), lambda waited, timeout: participant.world_lost(
            waited, timeout, state.last_commit)).start()
        try:
            hvd.shutdown()
            hvd.init()
        finally:
            watchdog.cancel()

    on_state(state)
    try:
        return run_fn(lambda s: fn(), reset)(state)
    finally:
        on_state(None)
