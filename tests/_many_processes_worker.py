"""One process of a JAX multi-controller job on localhost, for
tests/test_checkpoint_many_processes.py.

    python _many_processes_worker.py SCENARIO PROCESS_ID PROCESSES PORT WORKDIR

Each scenario does several checks in one job (starting JAX processes is the
slow part) and writes what it found to WORKDIR/result-<PROCESS_ID>.json
after each check, so that what was found survives a process that a later
check kills on purpose. The model, data and training step are defined here
and imported by the test, which runs the uninterrupted single-process
training they are compared with.
"""

import functools
import json
import os
import re
import signal
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import pytreemod as ptm
from pytreemod.sharding import shard

EMBED, HIDDEN, OUT, BATCH = 16, 32, 8, 16
AXIS_RULES = {"batch": "data", "mlp": "model", "embed": None}
BATCH_RULES = [(r"\['x'\]|\['y'\]", ("batch", None))]


class Mlp(ptm.Module):
    up: ptm.nn.Linear
    down: ptm.nn.Linear
    head: ptm.nn.Linear
    scale: jax.Array

    def __init__(self, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.up = ptm.nn.Linear(EMBED, HIDDEN, key=k1, axes=("mlp", "embed"))
        self.down = ptm.nn.Linear(HIDDEN, EMBED, key=k2, axes=("embed", "mlp"))
        self.head = ptm.nn.Linear(EMBED, OUT, key=k3)  # unnamed: replicated
        self.scale = jnp.ones(())

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x + self.down(jax.nn.gelu(self.up(x)))
        return self.scale * self.head(h)


optimiser = optax.adam(1e-2)


def batch(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    x = rng.normal(size=(BATCH, EMBED)).astype(np.float32)
    return {"x": x, "y": np.tanh(x[:, :OUT] * 2.0)}


def loss_fn(model: Mlp, data: dict) -> jax.Array:
    return jnp.mean((jax.vmap(model)(data["x"]) - data["y"]) ** 2)


@functools.cache  # one compiled step per mesh (compiling is the slow part)
def make_step(mesh: Mesh | None):
    @ptm.filter_jit
    def step(model, opt_state, data):
        loss, grads = ptm.filter_value_and_grad(loss_fn)(model, data)
        updates, opt_state = optimiser.update(grads, opt_state)
        model = ptm.apply_updates(model, updates)
        if mesh is not None:  # keep the layout
            model = shard(model, mesh, AXIS_RULES)
            opt_state = shard(opt_state, mesh, AXIS_RULES, like=model)
        return model, opt_state, loss

    return step


def start() -> tuple[Mlp, Any]:
    model = Mlp(jax.random.key(0))
    return model, optimiser.init(model)


def train(state: tuple, mesh: Mesh | None, first: int, steps: int):
    """Steps `first ... first + steps - 1` from `state = (model, opt_state)`."""
    model, opt_state = state
    step, losses = make_step(mesh), []
    # optax mixes Python floats with int32 counts, which the tests' strict
    # promotion (conftest.py) refuses.
    with jax.numpy_dtype_promotion("standard"):
        for i in range(first, first + steps):
            data = batch(i)
            if mesh is not None:
                data = shard(data, mesh, AXIS_RULES, BATCH_RULES)
            model, opt_state, loss = step(model, opt_state, data)
            losses.append(float(loss))
    return (model, opt_state), losses


def place(state: tuple, mesh: Mesh) -> tuple:
    model, opt_state = state
    model = shard(model, mesh, AXIS_RULES)
    return model, shard(opt_state, mesh, AXIS_RULES, like=model)


def abstract(mesh: Mesh) -> tuple:
    """The `like` of a restore: no memory, shardings of `mesh`."""
    return place(ptm.filter_eval_shape(start), mesh)


def sums(state: tuple) -> list[float]:
    """A fingerprint of the values: the sum of every array (every process
    can read it: a sum of a sharded array is replicated)."""
    leaves = jax.tree_util.tree_leaves(ptm.filter(state, ptm.is_array))
    return [float(jnp.sum(leaf)) for leaf in leaves]


def mesh_of(shape: tuple[int, int], transpose: bool = False) -> Mesh:
    """A ("data", "model") mesh over all devices, in process order: the first
    axis of `shape` spans processes (the second too if it is longer than a
    process's devices); `transpose` swaps which axis is which."""
    devices = np.array(jax.devices()).reshape(shape)
    return Mesh(devices.T if transpose else devices, ("data", "model"))


def rchar() -> int:
    """Bytes this process has read through read(2) and the like so far."""
    with open("/proc/self/io") as f:
        return int(re.search(r"rchar:\s*(\d+)", f.read()).group(1))


def bytes_read_by_load(work: str) -> dict:
    """Save a model whose every array is split over all devices of all
    processes, then load it on the same layout and count the bytes read."""
    mesh = Mesh(np.array(jax.devices()), ("all",))
    split = NamedSharding(mesh, PartitionSpec("all"))
    rng = np.random.default_rng(1)
    host = {f"w{i}": rng.normal(size=(512, 128)).astype(np.float32) for i in range(4)}
    tree = {
        k: jax.make_array_from_callback(v.shape, split, v.__getitem__)
        for k, v in host.items()
    }
    path = os.path.join(work, "fully_sharded")
    ptm.save(path, tree)
    like = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=split)
        for k, v in host.items()
    }
    before = rchar()
    loaded = ptm.load(path, like)
    read = rchar() - before
    ok = all(
        np.array_equal(np.asarray(s.data), host[k][s.index])
        for k, v in loaded.items()
        for s in v.addressable_shards
    )
    return {
        "bytes_read": read,
        "data_bytes": sum(v.nbytes for v in host.values()),
        "values_ok": ok,
    }


def shard_committed_replicated() -> bool:
    """`shard` of an array committed to this process's first device onto a
    replicated global sharding (JAX's device_put refuses that on CPU)."""
    mesh = mesh_of((jax.process_count(), jax.local_device_count()))
    local = jax.device_put(jnp.arange(8.0), jax.local_devices()[0])
    placed = shard({"w": local}, mesh, AXIS_RULES)["w"]
    return bool(
        placed.sharding.is_fully_replicated
        and not placed.is_fully_addressable
        and all(
            np.array_equal(s.data, np.arange(8.0)) for s in placed.addressable_shards
        )
    )


def kill_during(target: Any, name: str, after: int) -> None:
    """Make `target.name` kill this process (SIGKILL, as a crash) on its call
    number `after + 1`."""
    original, calls = getattr(target, name), [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] > after:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(target, name, wrapper)


class Results:
    def __init__(self, work: str):
        self.path = os.path.join(work, f"result-{jax.process_index()}.json")
        self.found: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.found[key] = value
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.found, f)
        os.replace(self.path + ".tmp", self.path)


def sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def first_one_process(work: str, out: Results) -> None:
    """4 devices in 1 process: train, save a folder for 2 processes to load."""
    mesh = mesh_of((2, 2))
    state, out["trained"] = train(place(start(), mesh), mesh, 0, 2)
    path = os.path.join(work, "ckpt_1p")
    os.makedirs(path)  # a folder: written as a folder by one process too
    ptm.save(path, state, metadata={"step": 2})
    out["sums_at_2"] = sums(state)


def two_processes(work: str, out: Results) -> None:
    """8 devices in 2 processes: train tensor parallel across the processes,
    save, restore data parallel, continue; load a single-process file."""
    across = mesh_of((2, 4), transpose=True)  # "model" (2) spans processes
    state, losses = train(place(start(), across), across, 0, 2)
    ptm.save(os.path.join(work, "ckpt"), state, metadata={"step": 2})
    out["trained"] = losses
    out["sums_at_2"] = sums(state)

    data_parallel = mesh_of((8, 1))
    restored = ptm.load(os.path.join(work, "ckpt"), abstract(data_parallel))
    out["restored_data_spec"] = str(restored[0].up.weight.sharding.spec)
    out["restored_mesh"] = dict(restored[0].up.weight.sharding.mesh.shape)
    _, out["continued"] = train(restored, data_parallel, 2, 2)

    # The folder that 1 process of 4 devices saved, onto 8 in 2 processes.
    from_one = ptm.load(os.path.join(work, "ckpt_1p"), abstract(across))
    out["sums_from_one"] = sums(from_one)
    _, out["continued_from_one"] = train(from_one, across, 2, 2)

    # A single-process file (the test saved it after 2 steps) loads too.
    single = ptm.load(os.path.join(work, "single.ckpt"), abstract(across))
    _, out["continued_from_file"] = train(single, across, 2, 2)

    out["bytes"] = bytes_read_by_load(work)
    out["shard_replicated"] = shard_committed_replicated()
    try:  # a folder cannot replace a file atomically: refused, file intact
        ptm.save(os.path.join(work, "single.ckpt"), state)
        out["save_over_file"] = "saved"
    except ptm.CheckpointError as error:
        out["save_over_file"] = str(error)

    # Process 1 is killed after writing one shard of a save over "ckpt".
    sync("results written")
    if jax.process_index() == 1:
        import zipfile

        kill_during(zipfile.ZipFile, "writestr", after=1)
    trained, _ = train(restored, data_parallel, 2, 1)
    out["saving_killed"] = True
    ptm.save(os.path.join(work, "ckpt"), trained, metadata={"step": 3})
    out["unexpected"] = "the killed save returned"


def one_process(work: str, out: Results) -> None:
    """4 devices in 1 process: restore the 2-process checkpoint, continue,
    save over it (the folder stays a folder, written by one process)."""
    mesh = mesh_of((2, 2))
    path = os.path.join(work, "ckpt")
    restored, metadata = ptm.load(path, abstract(mesh), with_metadata=True)
    out["metadata"] = metadata
    out["sums_at_2"] = sums(restored)
    state, out["continued"] = train(restored, mesh, 2, 2)
    ptm.save(path, state, metadata={"step": 4})
    out["entries"] = sorted(os.listdir(path))
    out["sums_at_4"] = sums(state)


def four_processes(work: str, out: Results) -> None:
    """8 devices in 4 processes, both mesh axes across processes: restore
    the 1-process checkpoint, continue; bytes read; process 0 killed just
    before it commits a save."""
    both = mesh_of((2, 4))  # rows: processes {0,1},{2,3}; columns: 0|1, 2|3
    path = os.path.join(work, "ckpt")
    restored = ptm.load(path, abstract(both))
    out["sums_at_4"] = sums(restored)
    state, out["continued"] = train(restored, both, 4, 2)
    out["bytes"] = bytes_read_by_load(work)
    out["shard_replicated"] = shard_committed_replicated()

    # Process 2 fails to write (a full disk): every process raises, promptly,
    # and the checkpoint stays the previous one.
    import zipfile

    writestr = zipfile.ZipFile.writestr
    if jax.process_index() == 2:

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        zipfile.ZipFile.writestr = full
    try:
        ptm.save(path, state, metadata={"step": 99})
        out["failed_save"] = "saved"
    except Exception as error:
        out["failed_save"] = f"{type(error).__name__}: {error}"
    zipfile.ZipFile.writestr = writestr
    out["after_failed_save"] = ptm.load_metadata(path)

    # Process 0 saves alone (the old habit): an error naming the convention,
    # not a wait of the whole barrier timeout.
    from pytreemod._serialisation import _processes

    _processes.ARRIVAL_TIMEOUT_S = 2
    if jax.process_index() == 0:
        try:
            ptm.save(path, state, metadata={"step": 98})
            out["saved_alone"] = "saved"
        except ptm.CheckpointError as error:
            out["saved_alone"] = str(error)
    else:
        next(_processes._saves)  # count that save here too, as process 0 did
    out["after_saved_alone"] = ptm.load_metadata(path)

    sync("results written")
    if jax.process_index() == 0:
        from pytreemod._serialisation import _folder

        kill_during(_folder, "replace_atomically", after=0)
    out["saving_killed"] = True
    ptm.save(path, state, metadata={"step": 6})
    out["unexpected"] = "the killed save returned"


SCENARIOS = {
    "first": first_one_process,
    "two": two_processes,
    "one": one_process,
    "four": four_processes,
}


def main() -> None:
    scenario, process, processes, port, work = sys.argv[1:6]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if int(processes) > 1:
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=int(processes),
            process_id=int(process),
            initialization_timeout=120,
        )
    out = Results(work)
    SCENARIOS[scenario](work, out)
    out["done"] = True


if __name__ == "__main__":
    main()
