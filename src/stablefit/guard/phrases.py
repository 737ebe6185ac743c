"""A framework's words for the fixes the guard suggests.

One classification (:func:`~stablefit.guard.classify.classify`) and one policy
(:class:`~stablefit.guard.policy.RemedyPolicy`) serve every adapter; only the words of a
fix differ: a Keras user clips gradients with ``clipnorm=`` on the optimizer, a PyTorch
user with ``torch.nn.utils.clip_grad_norm_``. An adapter hands its :class:`Phrasebook` to
:class:`~stablefit.guard.core.GuardCore`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phrasebook:
    """How the users of one framework do what a fix asks.

    Attributes
    ----------
    guard : str
        The guard as the user called it (names it in the failure message).
    layer : str
        The framework's word for a layer of the model.
    layer_in_float32 : str
        How to run one layer in float32 under mixed precision (``{layer}`` is its name).
    standardize_inputs : str
        How to standardize the model's inputs.
    loss_from_logits : str
        How to compute a loss from logits instead of probabilities.
    clip_gradients : str
        How to clip the gradients by their global norm.
    learning_rate : str
        Where the learning rate is set.
    find_backward_op : str
        How to have the framework name the operation whose gradient is not finite.

    Examples
    --------
    >>> KERAS.clip_gradients
    'clipnorm= on the optimizer'
    >>> TORCH.layer_in_float32.format(layer="'net.0'").split(" (")[0]
    "run module 'net.0' in float32"
    """

    guard: str
    layer: str
    layer_in_float32: str
    standardize_inputs: str
    loss_from_logits: str
    clip_gradients: str
    learning_rate: str
    find_backward_op: str


#: Words that fit any framework (the default when an adapter gives none).
NEUTRAL = Phrasebook(
    guard="the guard",
    layer="layer",
    layer_in_float32="run layer {layer} in float32",
    standardize_inputs=(
        "standardize them (subtract each column's training mean, divide by its standard deviation)"
    ),
    loss_from_logits="compute the loss from logits (no sigmoid/softmax on the output)",
    clip_gradients="by their global norm, before the update",
    learning_rate="the optimizer's learning rate",
    find_backward_op="the framework's anomaly detection names the operation",
)

KERAS = Phrasebook(
    guard="NanGuard",
    layer="layer",
    layer_in_float32="run layer {layer} in float32 (dtype='float32' on the layer)",
    standardize_inputs="standardize them (e.g. with a keras.layers.Normalization layer)",
    loss_from_logits=(
        "compute the loss from logits (from_logits=True, no sigmoid/softmax on the output)"
    ),
    clip_gradients="clipnorm= on the optimizer",
    learning_rate="learning_rate= on the optimizer",
    find_backward_op=(
        "the backend's NaN checks name the operation (tf.debugging.enable_check_numerics() "
        "on TensorFlow, jax_debug_nans on JAX, torch.autograd.detect_anomaly() on PyTorch)"
    ),
)

TORCH = Phrasebook(
    guard="stablefit.torch.guard",
    layer="module",
    layer_in_float32=(
        "run module {layer} in float32 (call it with float32 inputs inside "
        "``with torch.autocast(device_type, enabled=False):``)"
    ),
    standardize_inputs=(
        "standardize them before the model (subtract each column's training mean and divide "
        "by its standard deviation, in the Dataset or the first module)"
    ),
    loss_from_logits=(
        "compute the loss from logits (nn.BCEWithLogitsLoss or nn.CrossEntropyLoss on the "
        "model's raw output, no nn.Sigmoid/nn.Softmax at its end)"
    ),
    clip_gradients=(
        "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm) between "
        "loss.backward() and optimizer.step()"
    ),
    learning_rate="lr= on the optimizer, or its param_groups' 'lr'",
    find_backward_op="with torch.autograd.detect_anomaly(): around one step names the operation",
)
