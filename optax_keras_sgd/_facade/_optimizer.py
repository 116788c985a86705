"""`SGD`: the Keras 2 legacy optimizer's API over the functional core.

This class speaks Keras and delegates: hyperparameters to descriptors
(`_hyperparameters`), the step count and slots to a `SlotStore`, input checks
and donation to the binding chosen at first use (`_binding`), and each step
to one compiled call of `optax_keras_sgd.sgd` (`_runner`). No arithmetic
happens here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_keras_sgd import _config, _momentum, _validation
from optax_keras_sgd._facade import _binding, _gradients, _inputs, _runner
from optax_keras_sgd._facade import _hyperparameters as _hyper
from optax_keras_sgd._facade._slots import SlotStore
from optax_keras_sgd._facade._weights import KerasWeights
from optax_keras_sgd._variable import Variable


class SGD(KerasWeights):
  """Gradient descent with momentum: Keras 2's `optimizers.legacy.SGD` in JAX.

  .. math::
    v \\leftarrow m v - \\eta_t g, \\qquad w \\leftarrow w + v
    \\;\\; (\\text{Nesterov: } w + m v - \\eta_t g)

  The same constructor, methods, weights and configs as the reference, over
  `Variable`s (Keras style) or over pytrees (`update`, JAX style). Each step
  is one compiled call for all variables; changing `learning_rate` or
  `momentum` (numbers, arrays, or zero-argument callables) never recompiles.

  Args:
    learning_rate: a number, scalar array, schedule (callable of the step,
      e.g. `optax_keras_sgd.schedules.ExponentialDecay`), or zero-argument
      callable read anew every step. Defaults to 0.01.
    momentum: a number in [0, 1], scalar array, schedule (callable of the
      step), or zero-argument callable.
    nesterov: whether to use Nesterov momentum.
    name: the optimizer's name.
    skip_non_finite: not in Keras: when True, a step whose gradients are not
      all finite changes nothing (variables, slots, `iterations`) and is
      counted in `skipped_steps`. Keras's behaviour (NaN propagates) is the
      default.
    gradient_aggregator: as in Keras, a callable that takes the list of
      `(gradient, Variable)` pairs of a step and returns the pairs to apply
      (before clipping). Defaults to none: the pairs as given.
    **kwargs: `clipvalue`, `clipnorm`, `global_clipnorm`, `decay`, or `lr`
      (a deprecated alias of `learning_rate`), as in Keras.

  Raises:
    TypeError: for any other keyword argument.
    ValueError: as the reference (negative kwargs, momentum outside [0, 1],
      both `clipnorm` and `global_clipnorm`).

  Examples:
    The seed's example, with `Variable` in place of `tf.Variable`:

    >>> from optax_keras_sgd import SGD, Variable
    >>> opt = SGD(learning_rate=0.1)
    >>> var = Variable(1.0)
    >>> loss = lambda: (var ** 2) / 2.0  # d(loss)/d(var) = var
    >>> step_count = opt.minimize(loss, [var]).numpy()
    >>> var.numpy()
    array(0.9, dtype=float32)
  """

  learning_rate = _hyper.Held("learning_rate", _validation.check_learning_rate)
  lr = learning_rate
  momentum = _hyper.Held("momentum", _hyper.check_momentum)
  clipvalue = _hyper.Threshold()
  clipnorm = _hyper.Threshold()
  global_clipnorm = _hyper.Threshold()

  def __init__(
    self,
    learning_rate: optax.ScalarOrSchedule = 0.01,
    momentum: optax.ScalarOrSchedule = 0.0,
    nesterov: bool = False,
    name: str = "SGD",
    *,
    skip_non_finite: bool = False,
    gradient_aggregator: Callable[[list[Any]], Any] | None = None,
    **kwargs: Any,
  ):
    learning_rate = _hyper.check_kwargs(kwargs, learning_rate)
    _validation.check_bool("skip_non_finite", skip_non_finite)
    _hyper.check_aggregator(gradient_aggregator)
    self._hyper: dict[str, Any] = {}
    self.learning_rate = learning_rate
    self.momentum = momentum
    self.nesterov = nesterov
    self.clipvalue = kwargs.get("clipvalue")
    self.clipnorm = kwargs.get("clipnorm")
    self.global_clipnorm = kwargs.get("global_clipnorm")
    self._name = name
    self._decay = float(kwargs.get("decay", 0.0))
    self._skip_non_finite = bool(skip_non_finite)
    self.gradient_aggregator = gradient_aggregator
    # Keras decides once whether momentum slots exist.
    self._use_momentum = _momentum.has_velocity(
      momentum if not callable(momentum) else jnp.zeros(())
    )
    self._store = SlotStore()
    self._binding: _binding.VariableBinding | _binding.PytreeBinding | None = None
    self._runner = _runner.StepRunner()
    self._skipped = Variable(jnp.zeros((), jnp.int32), name="skipped", trainable=False)

  # -- hyperparameters and names ---------------------------------------------

  @property
  def nesterov(self) -> bool:
    return self._nesterov

  @nesterov.setter
  def nesterov(self, value: bool) -> None:
    _validation.check_bool("nesterov", value)
    self._nesterov = bool(value)

  @property
  def decay(self) -> float:
    return self._decay

  @property
  def name(self) -> str:
    return self._name

  @property
  def skipped_steps(self) -> int:
    """Steps skipped for non-finite gradients (with `skip_non_finite=True`)."""
    return int(self._skipped)

  # -- weights (the rest of the surface is in `KerasWeights`) ---------------

  def build(self, var_list: Any) -> None:
    """Creates iterations and slots for `var_list` (Variables or a pytree)
    now, so `set_weights` works before the first step."""
    self._store.counter()  # created even for an empty list
    if isinstance(var_list, (list, tuple)) and all(
      isinstance(v, Variable) for v in var_list
    ):
      binding = self._bind(_binding.VariableBinding)
      for v in var_list:
        binding.add(v)
    else:
      self._bind(_binding.PytreeBinding, var_list)

  def _refuse_other(self, kind: type) -> None:
    """The one place that refuses to train Variables and a pytree with one
    optimizer: raises if the binding exists and is not a `kind`."""
    if self._binding is not None and not isinstance(self._binding, kind):
      raise ValueError(_binding.BOTH)

  def _bind(self, kind: type, params: Any = None) -> Any:
    """The binding, made on first use."""
    self._refuse_other(kind)
    if self._binding is None:
      self._binding = _binding.make(kind, self._store, self._use_momentum, params)
    return self._binding

  # -- steps -------------------------------------------------------------------

  def minimize(
    self,
    loss: Callable[[], Any],
    var_list: Any,
    grad_loss: Any = None,
    name: str | None = None,
    tape: Any = None,
  ) -> Variable:
    """Minimizes `loss` (a zero-argument callable) over `var_list`.

    Returns:
      The new step count (an object with `.numpy()`).
    """
    grads_and_vars = _gradients.compute_gradients(loss, var_list, grad_loss, tape)
    return self.apply_gradients(grads_and_vars, name=name)

  def get_gradients(self, loss: Callable[[], Any], params: Any) -> list[Any]:
    """Gradients of `loss` (a zero-argument callable) for `params`.

    Raises:
      ValueError: if some variable has no gradient (`loss` does not use it).
    """
    return _gradients.require_all(_gradients.compute_gradients(loss, params))

  def apply_gradients(
    self,
    grads_and_vars: Iterable[Any],
    name: str | None = None,
    experimental_aggregate_gradients: bool = True,
  ) -> Variable:
    """Applies `(gradient, Variable)` pairs; `None` gradients are skipped.

    With `experimental_aggregate_gradients` (the default) the pairs first go
    through `_aggregate_gradients`. Variables may hold arrays sharded over
    many devices: the step runs on the global arrays and keeps every shard
    where it is (gradients of a loss over global arrays are already summed).
    A Variable's `constraint` is applied to it after its update.

    Returns:
      The new step count (an object with `.numpy()`).
    """
    del name
    self._refuse_other(_binding.VariableBinding)  # before any input check
    with _runner.collection_paused():  # until the old values are freed
      variables = self._apply(grads_and_vars, experimental_aggregate_gradients)
    for v in variables:
      if v.constraint is not None:  # after the update, as Keras applies it
        v.assign(v.constraint(v))
    return Variable(self.iterations.value(), name="iter", trainable=False)

  def _apply(self, grads_and_vars: Iterable[Any], aggregate: bool) -> list[Variable]:
    """`apply_gradients`' step, up to the constraints: returns the Variables
    updated."""
    grads, variables = _inputs.split_pairs(grads_and_vars)
    if variables and aggregate and self._aggregates():
      grads, variables = _inputs.split_pairs(
        self._aggregate_gradients(list(zip(grads, variables)))
      )
    if variables:  # Keras takes no step for an empty list
      binding = self._bind(_binding.VariableBinding)
      slots = binding.slots(grads, variables)
      donate = binding.donate(variables)
      new_values = self._run([v._value for v in variables], grads, slots, donate)
      for v, x in zip(variables, new_values):
        v._value = x
    return variables

  def _aggregates(self) -> bool:
    """Whether `_aggregate_gradients` may change the pairs: a
    `gradient_aggregator` is set, or a subclass overrides the hook."""
    return (
      self.gradient_aggregator is not None
      or type(self)._aggregate_gradients is not SGD._aggregate_gradients
    )

  def _aggregate_gradients(self, grads_and_vars: list[Any]) -> list[Any]:
    """Keras's hook between the gradients and the step: returns
    `gradient_aggregator(grads_and_vars)`, or the pairs unchanged (the
    gradients of a loss over global arrays are already summed over
    devices). Subclasses may override it, as in Keras."""
    if self.gradient_aggregator is None:
      return grads_and_vars
    return self.gradient_aggregator(grads_and_vars)

  def update(self, params: Any, grads: Any, *, donate: bool = False) -> Any:
    """The pytree path: returns `params` updated with `grads` (same trees).

    The optimizer's slots then follow `params`' leaves, in tree order, and
    `get_weights()` lists them that way. One optimizer serves one pytree
    structure; use another instance for another model.

    Args:
      params: the parameters, a pytree of floating-point arrays.
      grads: their gradients, a pytree of the same structure (leaves may be
        `IndexedSlices`).
      donate: let the step write the result into `params`' buffers, which
        saves their memory and, on large trees, most of the step's time.
        The arrays in `params` are then deleted: use only the returned
        tree, as in `params = opt.update(params, grads, donate=True)`.
        A tree that holds one array twice, or a gradient that is one of the
        params, is not donated.
    """
    _validation.check_bool("donate", donate)
    self._refuse_other(_binding.PytreeBinding)  # before any input check
    treedef, leaves, grad_leaves = _binding.PytreeBinding.flatten(params, grads)
    binding = self._bind(_binding.PytreeBinding, params)
    binding.check(params, treedef, leaves)
    donate = donate and binding.donate(leaves, grad_leaves)
    new_leaves = self._run(leaves, grad_leaves, binding.slots, donate)
    return jax.tree.unflatten(treedef, new_leaves)

  def _run(
    self,
    values: list[Any],
    grads: list[Any],
    slots: list[Variable],
    donate_values: bool,
  ) -> list[jax.Array]:
    return self._runner.run(
      _runner.StepConfig(
        schedule=lr if _hyper.is_schedule(lr := self._hyper["learning_rate"]) else None,
        use_momentum=self._use_momentum,
        nesterov=self._nesterov,
        clipvalue=self.clipvalue,
        clipnorm=self.clipnorm,
        global_clipnorm=self.global_clipnorm,
        decay=self._decay,
        skip_non_finite=self._skip_non_finite,
      ),
      values,
      grads,
      slots,
      self.iterations,
      self._skipped,
      self._hyper["learning_rate"],
      self._hyper["momentum"],
      donate_values,
    )

  # -- configs -----------------------------------------------------------------

  def get_config(self) -> dict[str, Any]:
    return _hyper.keras_config(self)

  @classmethod
  def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> SGD:
    return cls(**_config.optimizer_kwargs_from_config(config, custom_objects))

  def compiled_count(self) -> int:
    """How many step programs this optimizer has compiled so far."""
    return self._runner.compiled_count()

  def __repr__(self) -> str:
    return (
      f"<optax_keras_sgd.SGD name={self._name!r} iterations={int(self.iterations)}>"
    )
