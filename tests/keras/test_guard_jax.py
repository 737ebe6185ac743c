"""NanGuard on Keras's JAX backend, in a subprocess (the backend is chosen at import)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytestmark = [pytest.mark.keras, pytest.mark.slow]

PROGRAM = r"""
import json, sys, warnings
import numpy as np
from keras_cases import (CorruptedBatches, RateJump, all_finite, clean_loss,
                         interrupted_with_a_backup, keras, linear_model, seed_example_1,
                         sine_data, sine_mlp, well_conditioned)
from stablefit.keras import NanGuard, NonFiniteTrainingError

warnings.simplefilter("ignore")
assert keras.backend.backend() == "jax"
out = {}


class Keys(keras.callbacks.Callback):
    # Listed before the guard: the keys of every log it is shown.
    def __init__(self):
        super().__init__()
        self.keys = set()

    def on_train_batch_end(self, batch, logs=None):
        self.keys.update(logs or {})

    def on_epoch_end(self, epoch, logs=None):
        self.keys.update(logs or {})


# A NaN once in x: the row is left out, the run matches the clean one.
x, y = well_conditioned(rows=512)
clean = linear_model(3, keras.optimizers.SGD(0.1))
clean.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
model, guard = linear_model(3, keras.optimizers.SGD(0.1)), NanGuard()
data = CorruptedBatches(x, y, batch_size=16, corrupt={5: "x"})
keys = Keys()
history = model.fit(data, epochs=3, verbose=0, callbacks=[keys, guard])
out["nan_once"] = {"keys": sorted(keys.keys),
                   "causes": [e.cause for e in guard.events], "finite": all_finite(model),
                   "named": guard.events[0].evidence.get("dataset_rows"),
                   "corrupted": data.corrupted,
                   "ratio": clean_loss(model, x, y) / clean_loss(clean, x, y),
                   "bad_rows": history.history["bad_rows"], "loss": history.history["loss"]}

# A permanently bad row of a NumPy array: named by its index in x, once, with a count.
x, y = well_conditioned(rows=128)
x[37, 1] = np.nan
model, guard = linear_model(3, keras.optimizers.SGD(0.1)), NanGuard()
model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[guard])
out["numpy_row"] = [(e.rows, e.columns, e.count) for e in guard.events]

# A non-finite step (a target of 1e30 overflows the squared error: bad data) changes nothing.
x, y = well_conditioned(rows=128)
y[70] = 1e30
model = linear_model(3, keras.optimizers.Adam(0.01))
model.fit(x[:64], y[:64], batch_size=32, epochs=1, shuffle=False, verbose=0)
before = [np.array(v.numpy()) for v in [*model.weights, *model.optimizer.variables]]
guard = NanGuard(on_failure="warn")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    history = model.fit(x[64:96], y[64:96], batch_size=32, epochs=1, verbose=0,
                        callbacks=[guard])
after = [np.array(v.numpy()) for v in [*model.weights, *model.optimizer.variables]]
out["skip"] = {"unchanged": all(np.array_equal(a, b) for a, b in zip(before, after)),
               "skipped": history.history["skipped_steps"], "loss": history.history["loss"],
               "causes": [e.cause for e in guard.events],
               "said": [str(w.message) for w in caught if "skipped (see" in str(w.message)]}

# The seed's Example 1 with SGD: stopped at the first event, with the bound.
x, y = seed_example_1()
model, guard = linear_model(2, keras.optimizers.SGD(0.01)), NanGuard(data=(x, y))
try:
    model.fit(x, y, epochs=30, verbose=0, callbacks=[guard])
    message = ""
except NonFiniteTrainingError as error:
    message = str(error)
out["example_1"] = {"events": [(e.cause, e.action) for e in guard.events],
                    "bound": guard.events[-1].evidence.get("stable_learning_rate"),
                    "message": message, "finite": all_finite(model)}


# The custom train_step of Keras's JAX guide (``x, y = data``) failed at its first step
# ("too many values to unpack": the guard added sample weights to every batch).
class GuideModel(keras.Model):
    def compute_loss_and_updates(self, trainable, non_trainable, x, y):
        y_pred, non_trainable = self.stateless_call(trainable, non_trainable, x, training=True)
        return self.compute_loss(x, y, y_pred), (y_pred, non_trainable)

    def train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x, y = data
        grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
        (loss, (y_pred, non_trainable)), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable)
        new_metrics, logs = [], {}
        for metric in self.metrics:
            held = metrics_variables[len(new_metrics):len(new_metrics) + len(metric.variables)]
            if metric.name == "loss":
                held = metric.stateless_update_state(held, loss)
            logs[metric.name] = metric.stateless_result(held)
            new_metrics += held
        return logs, (trainable, non_trainable, optimizer_variables, new_metrics)


x, y = well_conditioned(rows=256)
x[100, 1] = np.nan
inputs = keras.Input((3,))
model = GuideModel(inputs, keras.layers.Dense(1)(inputs))
model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
keras.utils.set_random_seed(0)
guard = NanGuard()
history = model.fit(x, y, epochs=3, verbose=0, callbacks=[guard])
out["own_step"] = {"events": [(e.cause, e.action, e.rows, e.count) for e in guard.events],
                   "message": guard.events[0].message if guard.events else "",
                   "skipped": history.history["skipped_steps"], "finite": all_finite(model),
                   "loss": history.history["loss"]}

# A train_step of its own computing its loss inline (none compiled, no loss metric): a
# target of 1e20 overflows the loss while the gradients stay finite. That update was
# applied and nothing said.
class InlineLoss(keras.Model):
    def train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x, y = data

        def loss_of(weights):
            y_pred, _ = self.stateless_call(weights, non_trainable, x, training=True)
            return keras.ops.mean((y_pred[:, 0] - y) ** 2)

        loss, grads = jax.value_and_grad(loss_of)(trainable)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable)
        return {"loss": loss}, (trainable, non_trainable, optimizer_variables, metrics_variables)


x, y = well_conditioned(rows=128)
y[100] = 1e20
keras.utils.set_random_seed(0)
inputs = keras.Input((3,))
model = InlineLoss(inputs, keras.layers.Dense(1)(inputs))
model.compile(optimizer=keras.optimizers.SGD(0.01))
model.fit(x[:96], y[:96], batch_size=32, epochs=1, verbose=0)
before = [np.array(v.numpy()) for v in model.weights]
guard = NanGuard(on_failure="warn")
model.fit(x[96:], y[96:], batch_size=32, epochs=1, verbose=0, callbacks=[guard])
out["own_loss_overflow"] = {
    "unchanged": all(np.array_equal(a, np.array(v.numpy())) for a, v in zip(before, model.weights)),
    "events": [(e.batch, e.cause) for e in guard.events]}


# The guarded step has no effect JAX must keep (jax.debug.callback's would be one): such a
# step leaves JAX's fast dispatch path, which made a small model's epoch 3.8 times as long.
import jax
from stablefit.keras._step import StepGuard

x, y = well_conditioned(rows=16)
model = linear_model(3, keras.optimizers.Adam(0.01))
model.fit(x, y, verbose=0)
StepGuard(model, lambda report: None, on_step_loss=lambda loss: None).install()
state = [[v.value for v in variables] for variables in (
    model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
    model.metrics_variables)]
out["effects"] = [str(e) for e in jax.make_jaxpr(model.train_step)(state, (x, y)).effects]

# A run resumed by BackupAndRestore whose learning rate jumps in its first epoch: one
# rollback, to the weights it resumed from. Each step's loss was read as a difference of
# the epoch's float32 loss sums: after the divergence's losses (4e9) it came out as 0.0,
# the guard kept a 'best' at a smoothed loss of 0.29 and rolled back to it at the end.
import tempfile

x, y = sine_data()
backup = tempfile.mkdtemp() + "/backup"
interrupted_with_a_backup(sine_mlp(0.05), x, y, backup)
model, guard = sine_mlp(0.05), NanGuard()
model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[
    guard, keras.callbacks.BackupAndRestore(backup), RateJump(epoch=1, batch=5)])
out["resumed"] = [(e.cause, e.action, e.restored_from) for e in guard.events]
print(json.dumps(out))
"""


def test_the_guard_works_on_the_jax_backend() -> None:
    here = Path(__file__).parent
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(here)}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    out = json.loads(done.stdout.strip().splitlines()[-1])
    nan_once = out["nan_once"]
    assert nan_once["causes"] == ["data"] and nan_once["finite"]
    assert nan_once["bad_rows"][0] == 1 and all(v == v for v in nan_once["loss"])
    assert nan_once["ratio"] <= 1.5
    assert nan_once["keys"] == ["bad_rows", "loss", "skipped_steps"]  # not the guard's own
    assert nan_once["named"] == [[nan_once["corrupted"][0], 0]]
    assert out["numpy_row"] == [[[37], ["x[:, 1]"], 2]]
    skip = out["skip"]
    assert skip["unchanged"] and skip["skipped"] == [1] and skip["causes"] == ["data"]
    # The epoch's only step was skipped: its loss is no value (NaN), and the guard says so.
    assert len(skip["loss"]) == 1 and skip["loss"][0] != skip["loss"][0]
    assert len(skip["said"]) == 1 and "epoch 1: its only step was skipped" in skip["said"][0]
    example = out["example_1"]
    assert example["events"] == [["learning_rate", "stopped"]]
    assert abs(example["bound"] / 2.14e-13 - 1) < 5e-3
    assert "2.14e-13" in example["message"] and "SF201" in example["message"]
    assert example["finite"]
    assert out["effects"] == []
    assert out["resumed"] == [["learning_rate", "rolled_back", [1, -1]]]
    own = out["own_step"]
    # The bad row's batch is skipped whole (no sample weights to give it weight 0).
    assert own["events"] == [["data", "masked", [100], 3]] and own["skipped"] == [1, 1, 1]
    assert "the step of its batch was skipped" in own["message"]
    assert own["finite"] and all(v == v for v in own["loss"]) and own["loss"][-1] < 1.0
    overflow = out["own_loss_overflow"]
    assert overflow["unchanged"] and overflow["events"] == [[0, "precision"]]
