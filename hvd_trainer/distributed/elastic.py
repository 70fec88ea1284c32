"""Elastic training on Horovod: the loop runs inside `hvd.elastic.run`, with one state object.

Under `horovodrun --min-np/--max-np --host-discovery-script` (Gloo), Horovod keeps the surviving
processes alive when a host is lost and forms a new world when one is added. What survives is what
the state object holds; the trainer decides what that is (`ElasticParticipant`, see
hvd_trainer/elastic_training.py), this module only wires it to Horovod:

  commit()  every `elastic_commit_steps` steps and at each evaluation: a copy in host memory
            (and the point where an added or removed host is noticed: HostsUpdatedInterrupt);
  restore() after HorovodInternalError (a peer died mid-collective): back to the last commit;
  sync()    after the new world has formed: rank 0's state to every rank.

Horovod then re-runs the loop function, which first asks the participant to carry on in the
new world (re-shard the data, rescale the learning rate).
"""
from __future__ import annotations

import logging
import os
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
            on_synced()

    return TrainerState()


def run_elastic(hvd, fn: Callable[[], T], participant: ElasticParticipant, on_state: Callable[[Any], None],
                on_synced: Callable[[], None]) -> T:
    """fn() inside hvd.elastic.run: re-run after every reset, from the restored or synced state."""
    from horovod.torch import elastic

    state = make_state(hvd, participant, on_synced)
    on_state(state)
    try:
        return elastic.run(lambda s: fn())(state)
    finally:
        on_state(None)
