"""Ordering the processes of one save: a value that process 0 chooses and
every process reads (`from_first`), and every process's word to process 0
(`gather`). Each is a barrier: the readers wait for the writer(s).

Through the key-value store of JAX's distributed runtime where there is one
(its reads time out, so a process that died mid-save makes the others fail
with an error instead of waiting forever), else through device collectives
(`jax.experimental.multihost_utils`, which wait without a timeout). Every
process calls `save` the same number of times in the same order, so a
per-process count of saves names each save's barriers alike on all of them.
"""

import itertools

import jax
import numpy as np

from .._module._compat import distributed_client
from ._errors import CheckpointError

# How long a process waits at a barrier for the others (writing a large model
# to a slow file system takes minutes).
TIMEOUT_S = 30 * 60
# How long process 0 waits for every process to call `save` at all: they all
# reach it at about the same point of the same program.
ARRIVAL_TIMEOUT_S = 5 * 60

_saves = itertools.count()
_MAX_VALUE = 4096  # bytes of a shared value, without the distributed client

_STUCK = """\
The save of {path} stopped at its barrier `{name}`: a process did not reach
it within {timeout} s ({error}). Every process of the job must call
`pytreemod.save(path, tree)` with the same arguments, and all of them must
see one shared file system at `path`. The checkpoint at {path} is still the
previous one."""


_ALONE = """\
Process {process} did not call `pytreemod.save` within {timeout} s of process 0
saving {path}. On many processes every process calls `save` with the same
arguments (each writes the shards it holds), not only process 0:
    ptm.save(path, tree)          # on every process, not under
                                  # `if jax.process_index() == 0:`
Nothing was written; {path} holds what it held."""


class Coordinator:
    """The barriers and shared values of one save, named after its number."""

    def __init__(self, path: str):
        self.path = path
        self.index = jax.process_index()
        self.count = jax.process_count()
        self._prefix = f"pytreemod/save/{next(_saves)}"
        self._client = distributed_client() if self.count > 1 else None

    def from_first(self, step: str, value: str) -> str:
        """Process 0's `value` (a short string), on every process."""
        if self.count == 1:
            return value
        name = f"{self._prefix}/{step}"
        if self._client is None:  # pragma: no cover - depends on the JAX version
            from jax.experimental import multihost_utils

            raw = value.encode()[:_MAX_VALUE].ljust(_MAX_VALUE, b"\0")
            got = multihost_utils.broadcast_one_to_all(np.frombuffer(raw, np.uint8))
            return _text(np.asarray(got, np.uint8))
        if self.index == 0:
            self._client.key_value_set(name, value)
            return value
        try:
            return self._client.blocking_key_value_get(name, TIMEOUT_S * 1000)
        except Exception as error:
            raise self._stuck(name, error) from error

    def arrive(self) -> None:
        """Process 0 waits until every process has called `save`."""
        if self.count == 1:
            return
        name = f"{self._prefix}/arrived"
        if self._client is None:  # pragma: no cover - depends on the JAX version
            self.gather("arrived", "ok")
            return
        self._client.key_value_set(f"{name}/{self.index}", "ok")
        if self.index != 0:
            return
        for i in range(1, self.count):
            try:
                self._client.blocking_key_value_get(
                    f"{name}/{i}", ARRIVAL_TIMEOUT_S * 1000
                )
            except Exception as error:
                raise CheckpointError(
                    _ALONE.format(path=self.path, process=i, timeout=ARRIVAL_TIMEOUT_S)
                ) from error

    def gather(self, step: str, value: str) -> list[str]:
        """Every process's `value` (a short string), in process order, on
        process 0; the others get `[]`. Process 0 waits for all of them: the
        barrier of this step, which also says how each process fared."""
        if self.count == 1:
            return [value]
        name = f"{self._prefix}/{step}"
        if self._client is None:  # pragma: no cover - depends on the JAX version
            from jax.experimental import multihost_utils

            raw = value.encode()[:_MAX_VALUE].ljust(_MAX_VALUE, b"\0")
            got = multihost_utils.process_allgather(np.frombuffer(raw, np.uint8))
            rows = np.asarray(got, np.uint8).reshape(self.count, _MAX_VALUE)
            values = [_text(row) for row in rows]
            return values if self.index == 0 else []
        self._client.key_value_set(f"{name}/{self.index}", value)
        if self.index != 0:
            return []
        try:
            return [
                self._client.blocking_key_value_get(f"{name}/{i}", TIMEOUT_S * 1000)
                for i in range(self.count)
            ]
        except Exception as error:
            raise self._stuck(name, error) from error

    def _stuck(self, name: str, error: Exception) -> CheckpointError:
        return CheckpointError(
            _STUCK.format(
                path=self.path,
                name=name,
                timeout=TIMEOUT_S,
                error=str(error).splitlines()[0][:200] if str(error) else error,
            )
        )


def _text(row: np.ndarray) -> str:  # pragma: no cover - depends on the JAX version
    return bytes(row).rstrip(b"\0").decode(errors="replace")
