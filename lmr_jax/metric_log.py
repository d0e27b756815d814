"""A run's metrics: workdir/metrics.jsonl, TensorBoard events beside it, and the curves plot."""

from __future__ import annotations

import json
import os

import jax


class MetricLog:
    """Appends metrics to workdir/metrics.jsonl and, as TensorBoard scalars of the same names,
    to event files in workdir/tensorboard (process 0 only); keeps them for plots.

    The events are written by tensorboardX (no TensorFlow) and flushed with every row, so that
    they hold what metrics.jsonl holds even after a kill.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.events_dir = os.path.join(workdir, "tensorboard")
        self.enabled = jax.process_index() == 0
        self._writer = None
        self._purge_step = None

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self._writer is None:  # opened at the first row: a failed start leaves no folder
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(self.events_dir, purge_step=self._purge_step)
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def drop_after(self, step: int) -> None:
        """Drops the rows of steps after `step`: a run resumed from the checkpoint at `step`
        writes them again (they come from steps after the last checkpoint of a stopped run).

        Event files are not rewritten: the new one starts with TensorBoard's restart marker at
        `step + 1` (tensorboardX's `purge_step`), which hides the older files' later events.
        """
        self._purge_step = step + 1
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path + ".tmp", "w") as f:
            f.writelines(lines)
        os.replace(self.path + ".tmp", self.path)

    def read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]


def plot_curves(records: list[dict], path: str) -> None:
    """Training losses and validation errors against the step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if "loss" in r]
    val = [r for r in records if any(k.startswith("val_") for k in r)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    for key in sorted({k for r in train for k in r if k.startswith("loss")}):
        pts = [(r["step"], r[key]) for r in train if key in r]
        axes[0].plot(*zip(*pts, strict=True), label=key)
    axes[0].set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    for key in sorted({k for r in val for k in r if k.startswith("val_")}):
        pts = [(r["step"], r[key]) for r in val if key in r]
        axes[1].plot(*zip(*pts, strict=True), marker="o", label=key)
    axes[1].set(xlabel="step", ylabel="mm", title="validation")
    for ax in axes if val else axes[:1]:  # under the axes: inside they covered the curves' ends
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=5,
                  frameon=False)  # fmt: skip
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
