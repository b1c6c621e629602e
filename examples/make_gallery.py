"""Run the gallery's examples in full mode and write their plots and figures
into the documentation.

    python examples/make_gallery.py                      # all of them
    python examples/make_gallery.py digits_cnn neural_ode

Each example runs in its own process, as a user would run it, with
`--plot docs/examples/<name>.png --json`; its progress lines are shown as
they come. The results it prints last become `docs/examples/results/<name>.txt`,
a Markdown fragment that the gallery page includes, so the figures on a page
are always those of its committed plot. A full run of all of them takes
about a quarter of an hour on a 2-core CPU.
"""

import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from collections.abc import Callable

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "examples"


def _machine() -> str:
    return (
        f"{platform.machine()} CPU, JAX {jax.__version__}, {time.strftime('%Y-%m-%d')}"
    )


def _digits_cnn(r: dict) -> str:
    return (
        f"| test accuracy | {r['test_accuracy']:.2%} "
        f"({r['n_test']} held-out images) |\n"
        f"| epochs | {r['epochs']} ({r['steps_per_epoch']} steps each, "
        f"{r['n_train']} training images) |\n"
        f"| accuracy after each epoch | "
        + ", ".join(f"{a:.1%}" for a in r["test_accuracies"])
        + " |\n"
        f"| training time | {r['seconds']:.0f} s |\n"
    )


def _char_transformer(r: dict) -> str:
    c = r["config"]
    bits = r["val_loss"] / 0.6931471805599453
    return (
        f"| validation loss | {r['val_loss']:.3f} nats/char ({bits:.2f} bits/char) |\n"
        f"| character frequencies alone | {r['unigram_entropy']:.3f} nats/char |\n"
        f"| model | {r['n_params']:,} parameters: {c['layers']} blocks, width "
        f"{c['embed']}, {c['heads']} heads, context {c['seq_len']} |\n"
        f"| training | {c['steps']} steps of {c['batch']} sequences |\n"
        f"| training time | {r['seconds']:.0f} s |\n"
        "\nThe prompt (held-out text) and the sample that followed it:\n\n"
        f"```text\n{r['prompt']}\n```\n\n```text\n{r['sample']}\n```\n"
    )


def _neural_ode(r: dict) -> str:
    return (
        f"| held-out mean squared error | {r['test_mse']:.3g} "
        f"(untrained: {r['untrained_test_mse']:.3g}) on 32 trajectories |\n"
        f"| training | {r['steps']} steps on {r['n_train']} trajectories |\n"
        f"| training time | {r['seconds']:.0f} s |\n"
    )


def _checkpoint_resume(r: dict) -> str:
    same = r["digest_straight"] == r["digest_resumed"]
    return (
        f"| run | {r['steps']} steps, crash after step {r['crash_at']}, "
        f"resumed from step {r['resumed_from']} |\n"
        f"| model, optimiser state, step, key equal | {r['model_equal']}, "
        f"{r['opt_state_equal']}, {r['step_equal']}, {r['key_equal']} |\n"
        f"| loss curves equal | {r['losses_equal']} |\n"
        f"| SHA-256 of the final states | `{r['digest_straight'][:16]}...` and "
        f"`{r['digest_resumed'][:16]}...`: {'equal' if same else 'DIFFERENT'} |\n"
        f"| final loss | {r['final_loss']:.4f} (first step: {r['first_loss']:.4f}) |\n"
    )


def _sharded_transformer(r: dict) -> str:
    sharded, single = r["sharded"], r["single"]
    worst = max(abs(a - b) / abs(b) for a, b in zip(sharded, single, strict=True))
    return (
        f"| steps | {len(sharded)} |\n"
        f"| loss, first and last step | {sharded[0]:.4f} and {sharded[-1]:.4f} |\n"
        f"| largest relative difference from one device | {worst:.1e} |\n"
        f"| restored checkpoint equal | {r['restored_equal']} |\n"
        f"| `up.weight` restored as | `{r['restored_up_sharding']}`, each shard "
        f"{tuple(r['up_shard_shape'])} |\n"
    )


def _fine_tuning(r: dict) -> str:
    rows = "".join(
        f"| test accuracy, {name} | {acc:.1%} |\n"
        for name, acc in r["accuracy"].items()
    )
    return (
        f"| task | is the digit odd? {r['shots']} labelled images per digit, "
        f"{r['n_test']} test images |\n"
        + rows
        + f"| merged LoRA model predicts as the adapted one | {r['merged_same']} |\n"
        f"| fine-tuning | {r['steps']} steps per way |\n"
        f"| total time | {r['seconds']:.0f} s |\n"
    )


def _many_processes(r: list) -> str:
    first = r[0]
    worst = max(
        abs(a - b) / abs(b)
        for a, b in zip(first["losses"], first["single_process"], strict=True)
    )
    return (
        f"| processes | {len(r)}, training tensor parallel across them |\n"
        f"| loss, first and last step | {first['losses'][0]:.4f} and "
        f"{first['losses'][-1]:.4f} |\n"
        f"| largest relative difference from one process | {worst:.1e} |\n"
        f"| restored onto the mesh | `{first['restored_mesh']}` (data parallel) |\n"
    )


# name -> (extra arguments for the full run, how its results read)
EXAMPLES: dict[str, tuple[list[str], Callable[[dict], str]]] = {
    "digits_cnn": ([], _digits_cnn),
    "char_transformer": ([], _char_transformer),
    "neural_ode": ([], _neural_ode),
    "fine_tuning": ([], _fine_tuning),
    "sharded_transformer": (["--steps", "60"], _sharded_transformer),
    "checkpoint_resume": ([], _checkpoint_resume),
    "many_processes": ([], _many_processes),
}


def run(name: str) -> None:
    extra, describe = EXAMPLES[name]
    (DOCS / "results").mkdir(parents=True, exist_ok=True)
    plot = DOCS / f"{name}.png"
    command = [sys.executable, str(ROOT / "examples" / f"{name}.py"), *extra]
    command += ["--plot", str(plot), "--json"]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        print(f"   {line}", end="", flush=True)
    if process.wait() != 0:
        raise SystemExit(f"{name} failed with exit status {process.returncode}")
    result = json.loads(lines[-1])
    text = (
        f"<!-- written by `python examples/make_gallery.py {name}` -->\n"
        f"Figures of the full run (`python examples/{name}.py"
        f"{''.join(' ' + a for a in extra)}`) "
        f"on a {os.cpu_count()}-core {_machine()}:\n\n"
        "| measure | value |\n|---|---|\n" + describe(result)
    )
    (DOCS / "results" / f"{name}.txt").write_text(text)
    print(f"== {name}: wrote {plot.relative_to(ROOT)} and its figures", flush=True)


def main() -> None:
    names = sys.argv[1:] or list(EXAMPLES)
    unknown = [name for name in names if name not in EXAMPLES]
    if unknown:
        raise SystemExit(f"unknown examples {unknown}; choose from {list(EXAMPLES)}")
    for name in names:
        run(name)


if __name__ == "__main__":
    main()
