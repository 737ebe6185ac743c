"""Compiled steps of the training simulation (numba).

A simulated optimizer step is a dozen array operations on arrays of a few dozen numbers, so
as NumPy expressions its cost is Python's overhead: about 60 µs, and a forecast takes up
to ten thousand of them. :func:`regular_steps` runs the step loop compiled for as long as
every run stays *regular* (finite weights whose every prediction is finite), which is
where training spends nearly all of its steps; the caller takes over at the first step
that is not (overflow to ``inf`` and ``NaN``) with its NumPy code.

The two paths agree bit for bit because they share these functions: the loss and gradient
(:func:`loss_and_gradient`), the regularity test (:func:`regular_rows`) and the update rule
(:func:`update_step`, the step of :class:`~stablefit.diagnose.optimizers.UpdateRule`).
Numba keeps ``float32 op float32`` in float32; without fast-math nothing is reassociated
or fused, and ``error_model="numpy"`` divides by zero to ``inf``/``NaN`` as NumPy does.
"""

from __future__ import annotations

import numpy as np

from stablefit.jit import kernel

# The update rules of :func:`regular_steps`, with the optimizer's options resolved.
SGD, MOMENTUM, NESTEROV, ADAM, ADAMW, RMSPROP, RMSPROP_MOMENTUM, ADAGRAD = range(8)


@kernel(cache=True, nogil=True, error_model="numpy")
def loss_and_gradient(
    theta: np.ndarray,
    Q: np.ndarray,
    q: np.ndarray,
    c: float,
    a: np.ndarray,
    a0: float,
    n: int,
    loss: np.ndarray,
    grad: np.ndarray,
) -> None:  # pragma: no cover
    """The MSE and its gradient at each row of ``theta``, in float64, each sum in index order.

    Parameters
    ----------
    theta : ndarray, (runs, p), float64
        The weights of each run.
    Q, q, c, a, a0, n
        The parts of :class:`~stablefit.diagnose.stability.Quadratic`.
    loss : ndarray, (runs,)
        Receives the losses.
    grad : ndarray, (runs, p), float64
        Receives the gradients.
    """
    runs, p = theta.shape
    # θQ first, into grad: row j of Q serves every run while it is in cache.
    grad[:] = 0.0
    for j in range(p):
        for r in range(runs):
            weight = theta[r, j]
            for k in range(p):
                grad[r, k] += weight * Q[j, k]
    scale = 2.0 / n
    for r in range(runs):
        mean_residual = 0.0
        linear = 0.0
        quad = 0.0
        for j in range(p):
            mean_residual += theta[r, j] * a[j]
            linear += theta[r, j] * q[j]
            quad += grad[r, j] * theta[r, j]
        mean_residual -= a0
        centered = (quad - 2.0 * linear + c) / n
        # Rounding can leave the centered part a hair below zero at an exact fit; NaN stays.
        if centered < 0.0:
            centered = 0.0
        loss[r] = centered + mean_residual * mean_residual
        twice = 2.0 * mean_residual
        for k in range(p):
            grad[r, k] = scale * (grad[r, k] - q[k]) + twice * a[k]


@kernel(cache=True, nogil=True, error_model="numpy")
def regular_rows(
    theta: np.ndarray, max_abs: np.ndarray, fmax: float, regular: np.ndarray
) -> None:  # pragma: no cover
    """Whether each row of ``theta`` (float64) keeps every prediction within ``fmax``.

    ``Σ_j |θ_j| max|x_j|`` bounds every prediction; NaN or ``inf`` weights fail the test.
    The answers go to ``regular`` (bool, one per row).
    """
    runs, p = theta.shape
    for r in range(runs):
        bound = 0.0
        for j in range(p):
            bound += abs(theta[r, j]) * max_abs[j]
        regular[r] = bound <= fmax


def _steps_work(theta: np.ndarray, losses: np.ndarray, start: int, end: int, *_: object) -> int:
    """Work of :func:`regular_steps` as Python: each step of each run costs about p²."""
    return (end - start) * theta.size * theta.shape[1]


@kernel(cache=True, nogil=True, error_model="numpy", work=_steps_work)
def regular_steps(
    theta: np.ndarray,
    losses: np.ndarray,
    start: int,
    end: int,
    quadratic: tuple,
    max_abs: np.ndarray,
    fmax: float,
    optimizer: tuple,
    iterations: int,
) -> int:  # pragma: no cover
    """Take optimizer steps ``start, start + 1, ...`` while every run is regular.

    Parameters
    ----------
    theta : ndarray, (runs, p), the model's float type
        The weights of each run, updated in place.
    losses : ndarray, (runs, steps), float64
        Step ``s`` writes the loss of each run at its start to ``losses[:, s]``.
    start, end : int
        The steps to take.
    quadratic : tuple
        ``(Q, q, c, a, a0, n)``, the parts of the loss (see :func:`loss_and_gradient`).
    max_abs : ndarray, (p,)
        The largest ``|value|`` of each weight's column (1 for the bias).
    fmax : float
        The largest finite value of the model's float type.
    optimizer : tuple
        ``(rule, lr, first, second, constants)`` from
        :meth:`~stablefit.diagnose.optimizers.UpdateRule.kernel_arguments`; the slots
        ``first`` and ``second`` are updated in place.
    iterations : int
        The optimizer's step count at ``start``.

    Returns
    -------
    int
        ``end``, or the first step at which some run is not regular; nothing of that step
        is done.
    """
    Q, q, c, a, a0, n = quadratic
    rule, lr, first, second, constants = optimizer
    runs, p = theta.shape
    wide = np.empty((runs, p))
    wide_grad = np.empty((runs, p))
    grad = np.empty_like(theta)
    loss = np.empty(runs)
    regular = np.empty(runs, dtype=np.bool_)
    for step in range(start, end):
        for r in range(runs):
            for j in range(p):
                wide[r, j] = theta[r, j]
        regular_rows(wide, max_abs, fmax, regular)
        if not regular.all():
            return step
        loss_and_gradient(wide, Q, q, c, a, a0, n, loss, wide_grad)
        for r in range(runs):
            losses[r, step] = loss[r]
            for j in range(p):
                grad[r, j] = wide_grad[r, j]  # rounded to the model's type
        update_step(rule, theta, grad, lr, first, second, constants, iterations + step - start)
    return end


@kernel(cache=True, nogil=True, error_model="numpy")
def update_step(rule, theta, grad, lr, first, second, constants, iterations):  # pragma: no cover
    """One optimizer step, in place, for every run: Keras's update rule
    (``keras/src/optimizers/<name>.py``), its operations in its order, element by element.

    The arguments are those of
    :meth:`~stablefit.diagnose.optimizers.UpdateRule.kernel_arguments`, with the weights
    and the gradient in the model's float type and ``iterations`` the step count before
    this step. AdamW's weight decay comes first, as ``_apply_weight_decay`` runs before
    ``update_step`` in Keras.
    """
    runs, p = theta.shape
    if rule == SGD:
        for r in range(runs):
            for j in range(p):
                theta[r, j] = theta[r, j] - grad[r, j] * lr[r]
    elif rule in (MOMENTUM, NESTEROV):
        beta = constants[0]
        for r in range(runs):
            for j in range(p):
                g = grad[r, j]
                m = first[r, j] * beta - g * lr[r]
                first[r, j] = m
                if rule == NESTEROV:
                    theta[r, j] = theta[r, j] + (m * beta - g * lr[r])
                else:
                    theta[r, j] = theta[r, j] + m
    elif rule in (ADAM, ADAMW):
        beta_1, beta_2, one, keep_1, keep_2, epsilon, decay = constants
        local_step = theta.dtype.type(iterations + 1)
        beta_1_power, beta_2_power = beta_1**local_step, beta_2**local_step
        for r in range(runs):
            alpha = lr[r] * np.sqrt(one - beta_2_power) / (one - beta_1_power)
            for j in range(p):
                t = theta[r, j]
                if rule == ADAMW:
                    t = t - t * decay * lr[r]
                g = grad[r, j]
                m = first[r, j] + (g - first[r, j]) * keep_1
                v = second[r, j] + (g * g - second[r, j]) * keep_2
                first[r, j] = m
                second[r, j] = v
                theta[r, j] = t - (m * alpha) / (np.sqrt(v) + epsilon)
    elif rule in (RMSPROP, RMSPROP_MOMENTUM):
        rho, keep, epsilon, momentum = constants
        for r in range(runs):
            for j in range(p):
                g = grad[r, j]
                velocity = first[r, j] * rho + g * g * keep
                first[r, j] = velocity
                increment = (lr[r] * g) / np.sqrt(velocity + epsilon)
                if rule == RMSPROP_MOMENTUM:
                    increment = second[r, j] * momentum + increment
                    second[r, j] = increment
                theta[r, j] = theta[r, j] - increment
    else:  # ADAGRAD
        epsilon = constants[0]
        for r in range(runs):
            for j in range(p):
                g = grad[r, j]
                accumulator = first[r, j] + g * g
                first[r, j] = accumulator
                theta[r, j] = theta[r, j] - (lr[r] * g) / np.sqrt(accumulator + epsilon)
