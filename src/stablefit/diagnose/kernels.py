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

# The update rules of :func:`regular_steps`, with the optimizer's options resolved: Keras's,
# then torch's (each of those covers its optimizer's options through its constants).
SGD, MOMENTUM, NESTEROV, ADAM, ADAMW, RMSPROP, RMSPROP_MOMENTUM, ADAGRAD = range(8)
TORCH_SGD, TORCH_ADAM, TORCH_RMSPROP, TORCH_ADAGRAD = range(8, 12)


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


@kernel(cache=True, nogil=True, error_model="numpy", inline="always")
def _fused(x, y, z):  # pragma: no cover
    """``x·y + z`` as torch's CPU kernels compute it (a fused multiply-add), in float64.

    The product of two float32 numbers is exact in float64, so for a float32 model the
    caller's rounding of this value to float32 is the fused multiply-add's (up to a double
    rounding, vanishingly rare); for a float64 model it is an ordinary multiply-add.
    """
    return np.float64(x) * np.float64(y) + np.float64(z)


@kernel(cache=True, nogil=True, error_model="numpy")
def update_step(rule, theta, grad, lr, first, second, constants, iterations):  # pragma: no cover
    """One optimizer step, in place, for every run.

    Keras's rules follow ``keras/src/optimizers/<name>.py``, torch's the single-tensor
    functions of ``torch/optim/<name>.py`` (the path torch takes on the CPU), their
    operations in their order, element by element. The arguments are those of
    :meth:`~stablefit.diagnose.optimizers.UpdateRule.kernel_arguments`, with the weights
    and the gradient in the model's float type and ``iterations`` the step count before
    this step. Keras rounds the learning rate and every constant to the variable dtype
    first; torch computes scalar expressions (bias corrections, ``lr / ...``) in double and
    rounds them where a tensor operation takes them, and its ``add``/``addcmul``/``lerp``
    kernels fuse a multiply and an add.
    """
    if rule >= TORCH_SGD:
        _torch_step(rule, theta, grad, lr, first, second, constants, iterations)
        return
    f = theta.dtype.type
    runs, p = theta.shape
    if rule == SGD:
        for r in range(runs):
            rate = f(lr[r])
            for j in range(p):
                theta[r, j] = theta[r, j] - grad[r, j] * rate
    elif rule in (MOMENTUM, NESTEROV):
        beta = f(constants[0])
        for r in range(runs):
            rate = f(lr[r])
            for j in range(p):
                g = grad[r, j]
                m = first[r, j] * beta - g * rate
                first[r, j] = m
                if rule == NESTEROV:
                    theta[r, j] = theta[r, j] + (m * beta - g * rate)
                else:
                    theta[r, j] = theta[r, j] + m
    elif rule in (ADAM, ADAMW):
        beta_1, beta_2, one = f(constants[0]), f(constants[1]), f(constants[2])
        keep_1, keep_2 = f(constants[3]), f(constants[4])
        epsilon, decay = f(constants[5]), f(constants[6])
        local_step = f(iterations + 1)
        beta_1_power, beta_2_power = beta_1**local_step, beta_2**local_step
        for r in range(runs):
            rate = f(lr[r])
            alpha = rate * np.sqrt(one - beta_2_power) / (one - beta_1_power)
            for j in range(p):
                t = theta[r, j]
                if rule == ADAMW:
                    t = t - t * decay * rate
                g = grad[r, j]
                m = first[r, j] + (g - first[r, j]) * keep_1
                v = second[r, j] + (g * g - second[r, j]) * keep_2
                first[r, j] = m
                second[r, j] = v
                theta[r, j] = t - (m * alpha) / (np.sqrt(v) + epsilon)
    elif rule in (RMSPROP, RMSPROP_MOMENTUM):
        rho, keep, epsilon = f(constants[0]), f(constants[1]), f(constants[2])
        momentum = f(constants[3])
        for r in range(runs):
            rate = f(lr[r])
            for j in range(p):
                g = grad[r, j]
                velocity = first[r, j] * rho + g * g * keep
                first[r, j] = velocity
                increment = (rate * g) / np.sqrt(velocity + epsilon)
                if rule == RMSPROP_MOMENTUM:
                    increment = second[r, j] * momentum + increment
                    second[r, j] = increment
                theta[r, j] = theta[r, j] - increment
    else:  # ADAGRAD
        epsilon = f(constants[0])
        for r in range(runs):
            rate = f(lr[r])
            for j in range(p):
                g = grad[r, j]
                accumulator = first[r, j] + g * g
                first[r, j] = accumulator
                theta[r, j] = theta[r, j] - (rate * g) / np.sqrt(accumulator + epsilon)


@kernel(cache=True, nogil=True, error_model="numpy")
def _torch_step(rule, theta, grad, lr, first, second, constants, iterations):  # pragma: no cover
    """Torch's update rules (see :func:`update_step`).

    ``param.add_(g, alpha=a)`` is ``fma(g, a, param)``; ``addcmul_(t1, t2, value=v)`` is
    ``fma(v·t1, t2, self)``; ``addcdiv_(t1, t2, value=v)`` is ``self + (v·t1)/t2``;
    ``lerp_(end, w)`` is ``fma(w, end - self, self)`` for ``w < 0.5``.
    """
    f = theta.dtype.type
    runs, p = theta.shape
    if rule == TORCH_SGD:
        momentum, keep, decay, nesterov = constants[0], constants[1], constants[2], constants[3]
        beta, keep_f, decay_f = f(momentum), f(keep), f(decay)
        for r in range(runs):
            step = f(-lr[r])
            for j in range(p):
                g = grad[r, j]
                if decay != 0.0:
                    g = f(_fused(theta[r, j], decay_f, g))
                if momentum != 0.0:
                    # The buffer starts as the first gradient, undamped.
                    buffer = g if iterations == 0 else f(_fused(g, keep_f, f(first[r, j] * beta)))
                    first[r, j] = buffer
                    g = f(_fused(buffer, beta, g)) if nesterov != 0.0 else buffer
                theta[r, j] = _fused(g, step, theta[r, j])
    elif rule == TORCH_ADAM:
        beta_1, beta_2, eps, decay, decoupled = (
            constants[0],
            constants[1],
            constants[2],
            constants[3],
            constants[4],
        )
        count = np.float64(iterations + 1)
        correction_1 = 1.0 - beta_1**count
        root_2 = f((1.0 - beta_2**count) ** 0.5)
        weight = f(1.0 - beta_1)
        beta_2_f, keep_2, eps_f, decay_f = f(beta_2), f(1.0 - beta_2), f(eps), f(decay)
        for r in range(runs):
            step = f(-(lr[r] / correction_1))
            shrink = f(1.0 - lr[r] * decay)
            for j in range(p):
                t = theta[r, j]
                g = grad[r, j]
                if decay != 0.0:
                    if decoupled != 0.0:
                        t = t * shrink
                    else:
                        g = f(_fused(t, decay_f, g))
                m = first[r, j]
                if weight < 0.5:
                    m = f(_fused(weight, g - m, m))
                else:
                    m = f(_fused(-(g - m), f(1.0) - weight, g))
                v = f(_fused(keep_2 * g, g, f(second[r, j] * beta_2_f)))
                first[r, j] = m
                second[r, j] = v
                denominator = np.sqrt(v) / root_2 + eps_f
                theta[r, j] = t + (step * m) / denominator
    elif rule == TORCH_RMSPROP:
        alpha, eps, decay, momentum = constants[0], constants[1], constants[2], constants[3]
        alpha_f, keep, eps_f = f(alpha), f(1.0 - alpha), f(eps)
        decay_f, momentum_f = f(decay), f(momentum)
        for r in range(runs):
            step = f(-lr[r])
            for j in range(p):
                t = theta[r, j]
                g = grad[r, j]
                if decay != 0.0:
                    g = f(_fused(t, decay_f, g))
                square = f(_fused(keep * g, g, f(first[r, j] * alpha_f)))
                first[r, j] = square
                average = np.sqrt(square) + eps_f
                if momentum > 0.0:
                    buffer = f(second[r, j] * momentum_f) + g / average
                    second[r, j] = buffer
                    theta[r, j] = _fused(buffer, step, t)
                else:
                    theta[r, j] = t + (step * g) / average
    else:  # TORCH_ADAGRAD
        lr_decay, decay, eps = constants[0], constants[1], constants[2]
        decay_f, eps_f = f(decay), f(eps)
        for r in range(runs):
            step = f(-(lr[r] / (1.0 + iterations * lr_decay)))
            for j in range(p):
                t = theta[r, j]
                g = grad[r, j]
                if decay != 0.0:
                    g = f(_fused(t, decay_f, g))
                total = f(_fused(g, g, first[r, j]))
                first[r, j] = total
                theta[r, j] = t + (step * g) / (np.sqrt(total) + eps_f)
