"""The HKMR paper's Fig. 6 and Table of several runs: MPJPE against the degree of occlusion, one
line per run, from each run's workdir/occlusion/results.json.

    python -m lmr_jax.main --config=experiments/lmr_synthetic.py:bench --workdir=RUN \
        --mode=eval --config.eval.occlusion=all          # once per run
    python experiments/benchmarks/occlusion_plot.py RUN_LMR RUN_VIBE RUN_HMR --out=DIR

writes DIR/occlusion.png (`lmr_jax.visualize.occlusion_figure`) and DIR/occlusion.md (the
MPJPE and PA-MPJPE tables). A run is labelled by its model (as the run's own table labels it),
followed by its workdir's name where two runs share a model.
"""

from __future__ import annotations

import argparse
import os
import sys

from lmr_jax import evaluate_occlusion, visualize


def combine(workdirs: list[str], out_dir: str) -> str:
    """Writes out_dir/occlusion.png and occlusion.md for the runs; returns the markdown.

    Raises:
      ValueError: a workdir without occlusion results.
    """
    results = [evaluate_occlusion.read_occlusion_results(w) for w in workdirs]
    labels = [r.get("label", "run") for r in results]
    labels = [
        f"{label} ({os.path.basename(os.path.normpath(w))})" if labels.count(label) > 1 else label
        for label, w in zip(labels, workdirs, strict=True)
    ]
    runs = dict(zip(labels, results, strict=True))
    os.makedirs(out_dir, exist_ok=True)
    visualize.occlusion_figure(runs, os.path.join(out_dir, "occlusion.png"))
    text = "\n\n".join(evaluate_occlusion.occlusion_table(runs, m)
                       for m in evaluate_occlusion.OCC_METRICS)  # fmt: skip
    with open(os.path.join(out_dir, "occlusion.md"), "w") as f:
        f.write(text + "\n")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="runs evaluated with eval.occlusion")
    parser.add_argument("--out", required=True, help="folder of occlusion.png and .md")
    args = parser.parse_args(argv)
    try:
        print(combine(args.workdirs, args.out))
    except ValueError as e:
        print(f"occlusion_plot: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
