"""Training on several JAX processes, with a checkpoint that every process
writes and reads in parallel, restored onto another layout.

Run it as one command; it starts the processes itself, on this machine:

    python examples/many_processes.py                 # 2 processes x 4 CPU devices
    python examples/many_processes.py --processes 4 --devices 2

Or run the same file once per host (or per accelerator), as a cluster job
would, each with its own `--process-id` and the coordinator of process 0:

    python examples/many_processes.py --process-id 0 --processes 2 \\
        --coordinator 10.0.0.1:8476 --folder /shared/run
    python examples/many_processes.py --process-id 1 --processes 2 \\
        --coordinator 10.0.0.1:8476 --folder /shared/run

Every process runs the same program (`run` below): it calls
`jax.distributed.initialize`, builds the model from the same key, places it
on a mesh over the devices of all processes (the MLP's hidden units split
across the processes: tensor parallel), trains, and calls `pytreemod.save`
with the same arguments as every other process. Then all of them restore
the checkpoint onto another mesh (data parallel across the processes) and
train on. The losses equal those of the same training on one process.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def run(process_id: int, processes: int, coordinator: str, folder: str) -> dict:
    """What every process runs."""
    import jax

    if processes > 1:
        # CPU devices talk through gloo; GPUs and TPUs need no such line.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=processes,
            process_id=process_id,
        )
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh

    import pytreemod as ptm
    from pytreemod.sharding import shard

    class Mlp(ptm.Module):
        up: ptm.nn.Linear
        down: ptm.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.up = ptm.nn.Linear(16, 64, key=k1, axes=("mlp", "embed"))
            self.down = ptm.nn.Linear(64, 16, key=k2, axes=("embed", "mlp"))

        def __call__(self, x):
            return self.down(jax.nn.gelu(self.up(x)))

    axis_rules = {"batch": "data", "mlp": "model", "embed": None}
    batch_rules = [(r"\['x'\]", ("batch", None))]
    optimiser = optax.adam(1e-2)

    def loss_fn(model, data):
        x = data["x"]
        return jnp.mean((jax.vmap(model)(x) - jnp.sin(x)) ** 2)

    def trainer(mesh):
        @ptm.filter_jit
        def step(model, opt_state, data):
            loss, grads = ptm.filter_value_and_grad(loss_fn)(model, data)
            updates, opt_state = optimiser.update(grads, opt_state)
            model = ptm.apply_updates(model, updates)
            model = shard(model, mesh, axis_rules)  # keep the layout
            opt_state = shard(opt_state, mesh, axis_rules, like=model)
            return model, opt_state, loss

        def train(model, opt_state, steps):
            losses = []
            for i in steps:
                x = np.random.default_rng(i).normal(size=(16, 16))
                # The same host data on every process; each places its part.
                data = shard({"x": x.astype(np.float32)}, mesh, axis_rules, batch_rules)
                model, opt_state, loss = step(model, opt_state, data)
                losses.append(float(loss))  # replicated: every process reads it
            return model, opt_state, losses

        return train

    def start():
        model = Mlp(jax.random.key(0))
        return model, optimiser.init(model)

    def place(state, mesh):
        model = shard(state[0], mesh, axis_rules)
        return model, shard(state[1], mesh, axis_rules, like=model)

    # Devices in process order: reshaped (processes, devices per process), the
    # first mesh axis spans the processes.
    devices = np.array(jax.devices()).reshape(processes, -1)
    tensor_parallel = Mesh(devices.T, ("data", "model"))  # "model" spans processes
    data_parallel = Mesh(devices.reshape(-1, 1), ("data", "model"))

    with jax.numpy_dtype_promotion("standard"):
        model, opt_state = place(start(), tensor_parallel)
        model, opt_state, before = trainer(tensor_parallel)(model, opt_state, range(3))

        # Every process calls `save` with the same arguments: each writes the
        # shards it holds, process 0 commits when all are done.
        path = os.path.join(folder, "checkpoint")
        ptm.save(path, (model, opt_state), metadata={"step": 3})

        # Restore onto another layout: the `like` is abstract (no memory) and
        # carries the new shardings; each process reads only its shards.
        like = place(ptm.filter_eval_shape(start), data_parallel)
        model, opt_state = ptm.load(path, like)
        model, opt_state, after = trainer(data_parallel)(model, opt_state, range(3, 6))

        # The same six steps on this process alone, for comparison.
        local = np.array(jax.local_devices()).reshape(-1, 1)
        alone = Mesh(local, ("data", "model"))
        _, _, single = trainer(alone)(*place(start(), alone), range(6))
    return {
        "process": jax.process_index(),
        "losses": before + after,
        "single_process": single,
        "restored_mesh": dict(model.up.weight.sharding.mesh.shape),
    }


def launch(processes: int, devices: int, folder: str, timeout: float) -> list[dict]:
    """Start `processes` copies of this script on this machine, each with
    `devices` CPU devices, and return what each printed. Each copy has a hard
    deadline; all are killed at the end, whatever happened."""
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("127.0.0.1", 0))
        coordinator = f"127.0.0.1:{s.getsockname()[1]}"
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    logs = [tempfile.TemporaryFile("w+") for _ in range(processes)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--process-id", str(i),
                "--processes", str(processes),
                "--coordinator", coordinator,
                "--folder", folder,
            ],
            env=env,
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(processes)
    ]  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while any(c.poll() is None for c in children):
            if time.monotonic() > deadline or any(c.poll() for c in children):
                break  # out of time, or one failed (the others would wait)
            time.sleep(0.1)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
            child.wait()
    results = []
    for i, (child, log) in enumerate(zip(children, logs, strict=True)):
        log.seek(0)
        output = log.read()
        if child.returncode != 0:
            raise RuntimeError(f"process {i} failed:\n{output[-3000:]}")
        results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def plot(result: dict, processes: int, devices: int, path: str) -> None:
    """The losses on many processes and on one, with the save and restore."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = range(len(result["losses"]))
    label = f"{processes} processes x {devices} devices"
    ax.plot(steps, result["losses"], "o-", label=label)
    ax.plot(steps, result["single_process"], "x--", label="one process")
    ax.axvline(2.5, color="grey", lw=1)
    ax.text(2.55, max(result["losses"]), " save, then restore\n data parallel",
            va="top", fontsize=8)  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices", type=int, help="per process (default 4)")
    parser.add_argument(
        "--fast", action="store_true", help="2 CPU devices per process (CI)"
    )
    parser.add_argument("--plot", help="save the loss curves to this PNG")
    parser.add_argument("--process-id", type=int, help="run as this process")
    parser.add_argument("--coordinator", default="127.0.0.1:8476")
    parser.add_argument("--folder", help="shared by all processes")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if args.process_id is not None:  # one process of the job
        if args.folder is None:
            parser.error("--process-id needs --folder, one that all processes see")
        out = run(args.process_id, args.processes, args.coordinator, args.folder)
        print(json.dumps(out))
        return
    devices = args.devices or (2 if args.fast else 4)
    folder = args.folder or tempfile.mkdtemp()
    results = launch(args.processes, devices, folder, args.timeout)
    if args.plot:
        plot(results[0], args.processes, devices, args.plot)
    if args.json:
        print(json.dumps(results))
        return
    first = results[0]
    pairs = zip(first["losses"], first["single_process"], strict=True)
    for i, (a, b) in enumerate(pairs):
        print(f"step {i}: loss {a:.6f} on {args.processes} processes, {b:.6f} on one")
    print(f"restored onto the mesh {first['restored_mesh']}")


if __name__ == "__main__":
    main()
