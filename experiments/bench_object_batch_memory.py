"""Object batches against the memory model: real runs' activation peak and device peak (the
census + tracked-activation estimate) vs the prediction for the same workload and K.

    .venv/bin/python experiments/bench_object_batch_memory.py results/object-batch/memory-check
"""

from __future__ import annotations

import sys

from sam2tune.memory_model.calibrate import run_inputs
from sam2tune.memory_model.memory import MemoryModel, predict
from sam2tune.results import load_results
from sam2tune.units import fmt_bytes


def main(results_dir: str) -> None:
    m = MemoryModel.load()
    rows = load_results(results_dir).set_index("run_id")
    print(f"object_batch vs the memory model ({results_dir}): measured = the run's census + "
          "tracked-activation estimate; predicted = the memory model (cpu)")
    print(f"{'objects':>7} {'K':>4} {'activations':>12} {'pred.':>10} {'err':>7} "
          f"{'device peak':>12} {'pred.':>10} {'err':>7}")
    for r in sorted(run_inputs(results_dir), key=lambda r: (r.workload.num_objects,
                                                            r.candidate.object_batch or 999)):
        row = rows.loc[r.run_id]
        p = predict(r.workload, r.candidate, m, r.device_kind)
        am, dm = int(row["activation_peak_bytes"]), int(row["est_device_peak_bytes"])
        ap, dp = p.terms["activations"], p.device_peak_bytes
        k = r.candidate.object_batch
        print(f"{r.workload.num_objects:>7} {('all' if k == 0 else k):>4} {fmt_bytes(am):>12} "
              f"{fmt_bytes(ap):>10} {ap / am - 1:>+7.1%} {fmt_bytes(dm):>12} {fmt_bytes(dp):>10} "
              f"{dp / dm - 1:>+7.1%}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/object-batch/memory-check")
