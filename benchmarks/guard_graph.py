"""The graph nodes NanGuard's common step adds to a training step on TensorFlow, by feature.

A count, not a timing: on this small model a step costs about as much per executed graph
node as per arithmetic, and node counts do not move with the load of a shared machine, as
the timings of ``bench_guard.py`` do. Counted: the nodes TensorFlow executes for one step
of ``bench_guard.py``'s model (Keras's compiled train function after Grappler and the
lowering of conditions to Switch/Merge, i.e. its partition graphs), for the plain model,
``LossScaleOptimizer`` and ``NanGuard()``. The guard's nodes are split by the name scope
(``stablefit_*``) of the guard feature that made them; the optimizer's own update nodes,
moved into the guard's scope when it puts them under a condition, count as the plain
step's.

Run: ``python benchmarks/guard_graph.py [--batch-size 32] [--nodes]``.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
from bench_guard import VARIANTS, make_data, make_model

#: What each name scope of the guarded step holds (src/stablefit/keras/_step.py).
FEATURES = {
    "stablefit_test": "finiteness test (batch sums, loss, gradient norm) and explosion test",
    "stablefit_update": "update applied only when the step is ok",
    "stablefit_median": "running median of the gradient norm",
    "stablefit_keep": "batch kept in variables for the careful step",
    "stablefit_restore": "metrics restored when the step is not ok",
    "stablefit_counts": "steps and rows fed",
    "stablefit_step_loss": "the step's own loss as an output",
}


def step_nodes(name: str, batch_size: int, x, y) -> list[tuple[str, str]]:
    """(name, op) of every node TensorFlow executes for one step of the variant."""
    import tensorflow as tf
    from tensorflow.python.eager import context

    loss_scale, callbacks = VARIANTS[name]
    model = make_model(loss_scale)
    hooks = keras.callbacks.CallbackList(
        callbacks(), add_history=True, model=model, verbose=0, epochs=1, steps=4
    )
    model.make_train_function()
    hooks.on_train_begin()
    iterator = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size))
    # The graphs are recorded when the function is first run (traced and optimized).
    context.enable_run_metadata()
    try:
        model.train_function(iterator)
        metadata = context.export_run_metadata()
    finally:
        context.disable_run_metadata()
    hooks.on_train_end()
    step = max(
        metadata.function_graphs,
        key=lambda graph: sum(len(part.node) for part in graph.partition_graphs),
    )
    return [(node.name, node.op) for part in step.partition_graphs for node in part.node]


def by_feature(nodes: list[tuple[str, str]]) -> collections.Counter:
    """Nodes per guard feature (``None``: the model's and optimizer's own, and the rest)."""
    counts: collections.Counter = collections.Counter()
    for name, _ in nodes:
        scopes = [part for part in name.split("/") if part.startswith("stablefit_")]
        feature = re.sub(r"_\d+$", "", scopes[-1]) if scopes else None
        if feature == "stablefit_update" and "/then/" in name and not name.startswith("Func/"):
            # The optimizer's own update, moved under the guard's condition (the plain
            # step has it too); the condition's inputs (Func/...) are the guard's.
            feature = None
        counts[feature] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--nodes", action="store_true", help="list the guarded step's nodes")
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("guard_graph.py counts TensorFlow graph nodes: KERAS_BACKEND=tensorflow")
    warnings.simplefilter("ignore")
    x, y = make_data()
    x, y = x[: 4 * args.batch_size], y[: 4 * args.batch_size]
    plain = step_nodes("no callback", args.batch_size, x, y)
    scaled = step_nodes("LossScaleOptimizer", args.batch_size, x, y)
    guarded = step_nodes("NanGuard()", args.batch_size, x, y)
    print(f"Nodes executed for one training step (batch {args.batch_size}):")
    print(f"  no callback          {len(plain)}")
    print(f"  LossScaleOptimizer   {len(scaled)} ({len(scaled) - len(plain):+d})")
    print(f"  NanGuard()           {len(guarded)} ({len(guarded) - len(plain):+d})")
    counts = by_feature(guarded)
    for scope, what in FEATURES.items():
        print(f"    {counts[scope]:+4d}  {what}")
    rest = len(guarded) - len(plain) - sum(counts[scope] for scope in FEATURES)
    print(f"    {rest:+4d}  elsewhere (arguments of the guard's variables, constants)")
    if args.nodes:
        for name, op in guarded:
            print(f"      {op:24s} {name}")


if __name__ == "__main__":
    main()
