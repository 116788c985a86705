"""`SGD`: the Keras 2 legacy optimizer's API over the functional core.

This class holds state and speaks Keras; all arithmetic happens in
`optax_keras_sgd.sgd`, run by one compiled call per step (`_step`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from optax_keras_sgd import (
    _hyperparameters,
    _inputs,
    _momentum,
    _sparse,
    _step,
    _validation,
)
from optax_keras_sgd._variable import Variable

ALLOWED_KWARGS = {"clipnorm", "clipvalue", "lr", "decay", "global_clipnorm"}


_BOTH_PATHS = ("One SGD instance trains either Variables (`apply_gradients`) or one "
               "pytree (`update`); use a separate instance for the other.")


def _as_arrays(leaves: list[Any]) -> list[jax.Array]:
  """`leaves` as JAX arrays (NumPy arrays and Python numbers converted)."""
  return [x if isinstance(x, jax.Array) else jnp.asarray(x) for x in leaves]


class _PytreeSpec(NamedTuple):
  """What the pytree path was built for: the tree structure, each leaf's
  `(shape, dtype)` and its momentum slot (none without momentum)."""

  treedef: Any
  signature: list[tuple[Any, Any]]
  slots: list[Variable]


class SGD:
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

  def __init__(self, learning_rate: Any = 0.01, momentum: Any = 0.0,
               nesterov: bool = False, name: str = "SGD", *,
               skip_non_finite: bool = False,
               gradient_aggregator: Callable[[list[Any]], Any] | None = None,
               **kwargs: Any):
    for key, value in kwargs.items():
      if key not in ALLOWED_KWARGS:
        raise TypeError(
            f"Unexpected keyword argument passed to optimizer: {key}. "
            f"Allowed kwargs are {ALLOWED_KWARGS}."
        )
      if value is not None and not (key == "lr" and callable(value)):
        _validation.check_non_negative(key, value)
    if "lr" in kwargs:
      warnings.warn("The `lr` argument is deprecated, use `learning_rate` "
                    "instead.", stacklevel=2)
      learning_rate = kwargs["lr"]
    _validation.check_learning_rate(learning_rate)
    if not callable(momentum):
      _validation.check_momentum(momentum)
    _validation.check_bool("nesterov", nesterov)
    _validation.check_bool("skip_non_finite", skip_non_finite)
    _validation.check_clip_exclusive(kwargs.get("clipnorm"),
                                     kwargs.get("global_clipnorm"))
    if gradient_aggregator is not None and not callable(gradient_aggregator):
      raise TypeError("`gradient_aggregator` must be a callable on (gradient, "
                      "Variable) pairs. Received: "
                      f"{type(gradient_aggregator).__name__}.")
    self.gradient_aggregator = gradient_aggregator
    self._name = name
    self._decay = float(kwargs.get("decay", 0.0))
    self._clipvalue = _inputs.threshold(kwargs.get("clipvalue"))
    self._clipnorm = _inputs.threshold(kwargs.get("clipnorm"))
    self._global_clipnorm = _inputs.threshold(kwargs.get("global_clipnorm"))
    self._nesterov = bool(nesterov)
    self._skip_non_finite = bool(skip_non_finite)
    self._skipped = Variable(jnp.zeros((), jnp.int32), name="skipped",
                             trainable=False)
    # Keras decides once whether momentum slots exist.
    self._use_momentum = _momentum.has_velocity(
        momentum if not callable(momentum) else jnp.zeros(()))
    self._hyper: dict[str, Any] = {
        "learning_rate": _hyperparameters.hold("learning_rate", learning_rate),
        "momentum": _hyperparameters.hold("momentum", momentum),
    }
    self._iterations: Variable | None = None
    self._weights: list[Variable] = []
    self._slot_names: list[str] = []
    self._slots: dict[Any, dict[str, Variable]] = {}
    self._tracked: dict[Any, Any] = {}  # slot key -> Variable or pytree path
    self._pytree: _PytreeSpec | None = None  # once the pytree path is used
    self._steps = _step.CompiledSteps()
    self._checked: dict[int, Any] = {}  # id(Variable) -> dtype checked
    # The last list of Variables checked: their ids, them, their slots and
    # their (shape, dtype)s.
    self._last_checked: tuple[Any, ...] = (None, [], [], [])

  # -- hyperparameters ---------------------------------------------------------

  @property
  def learning_rate(self) -> Any:
    return self._hyper["learning_rate"]

  @learning_rate.setter
  def learning_rate(self, value: Any) -> None:
    _validation.check_learning_rate(value)
    self._hyper["learning_rate"] = _hyperparameters.hold(
        "learning_rate", value, self._hyper["learning_rate"])

  lr = learning_rate

  @property
  def momentum(self) -> Any:
    return self._hyper["momentum"]

  @momentum.setter
  def momentum(self, value: Any) -> None:
    if not callable(value):
      _validation.check_momentum(value)
    self._hyper["momentum"] = _hyperparameters.hold(
        "momentum", value, self._hyper["momentum"])

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
  def clipvalue(self) -> float | None:
    return self._clipvalue

  @clipvalue.setter
  def clipvalue(self, value: float | None) -> None:
    if value is not None:
      _validation.check_non_negative("clipvalue", value)
    self._clipvalue = _inputs.threshold(value)

  @property
  def clipnorm(self) -> float | None:
    return self._clipnorm

  @clipnorm.setter
  def clipnorm(self, value: float | None) -> None:
    if value is not None:
      _validation.check_non_negative("clipnorm", value)
    _validation.check_clip_exclusive(value, self._global_clipnorm)
    self._clipnorm = _inputs.threshold(value)

  @property
  def global_clipnorm(self) -> float | None:
    return self._global_clipnorm

  @global_clipnorm.setter
  def global_clipnorm(self, value: float | None) -> None:
    if value is not None:
      _validation.check_non_negative("global_clipnorm", value)
    _validation.check_clip_exclusive(self._clipnorm, value)
    self._global_clipnorm = _inputs.threshold(value)

  @property
  def name(self) -> str:
    return self._name

  @property
  def skipped_steps(self) -> int:
    """Steps skipped for non-finite gradients (with `skip_non_finite=True`)."""
    return int(self._skipped)

  # -- weights -------------------------------------------------------------------

  @property
  def iterations(self) -> Variable:
    """The number of steps taken (a `Variable`; Keras's is int64)."""
    if self._iterations is None:
      self._iterations = Variable(jnp.zeros((), jnp.int32), name="iter",
                                  trainable=False)
      self._weights.insert(0, self._iterations)
    return self._iterations

  @iterations.setter
  def iterations(self, value: Any) -> None:
    """A `Variable` becomes the optimizer's counter (it advances it), as in
    Keras, if no weights exist yet; a number sets the count."""
    if not isinstance(value, Variable):
      self.iterations.assign(_inputs.as_count(value, "iterations"))
      return
    if self._iterations is not None:
      raise RuntimeError(
          "Cannot set `iterations` to a new Variable after the Optimizer "
          f"weights have been created. Here it is attempting to set "
          f"`iterations` to {value!r}.")
    _inputs.as_count(value.numpy(), "iterations")
    self._iterations = value
    self._weights.insert(0, value)

  def add_slot(self, var: Any, slot_name: str, initializer: Any = "zeros",
               shape: Any = None) -> Variable:
    """Adds (or returns the existing) slot `slot_name` for `var`."""
    return self._create_slot(id(var), var, getattr(var, "name", "var"), slot_name,
                             initializer, shape)

  def _create_slot(self, key: Any, target: Any, name: str, slot_name: str,
                   initializer: Any = "zeros", shape: Any = None) -> Variable:
    slots = self._slots.setdefault(key, {})
    if slot_name not in slots:
      if slot_name not in self._slot_names:
        self._slot_names.append(slot_name)
      dtype = jnp.result_type(target.dtype)
      shape = tuple(jnp.shape(target)) if shape is None else tuple(shape)
      if isinstance(initializer, str) and initializer == "zeros":
        value = jnp.zeros(shape, dtype)
      elif callable(initializer):
        value = jnp.asarray(initializer(shape=shape, dtype=dtype))
      else:
        value = jnp.broadcast_to(jnp.asarray(initializer, dtype), shape)
      slots[slot_name] = Variable(value, name=f"{name}/{slot_name}", trainable=False)
      # Keep Variables alive (their id is the key); for pytree leaves keep
      # only shape and dtype, not the user's array.
      self._tracked[key] = target if isinstance(target, Variable) else \
          jax.ShapeDtypeStruct(shape, dtype)
      self.iterations  # noqa: B018  (weights start with iterations)
      self._weights.append(slots[slot_name])
    return slots[slot_name]

  def get_slot(self, var: Any, slot_name: str) -> Variable:
    try:
      return self._slots[id(var)][slot_name]
    except KeyError:
      raise KeyError(
          f"No slot '{slot_name}' for variable "
          f"'{getattr(var, 'name', var)}'. Slot names: {self._slot_names}."
      ) from None

  def get_slot_names(self) -> list[str]:
    return list(self._slot_names)

  def variables(self) -> list[Variable]:
    """The optimizer's variables: iterations, then slots in creation order."""
    return list(self._weights)

  @property
  def weights(self) -> list[Variable]:
    return list(self._weights)

  def get_weights(self) -> list[np.ndarray]:
    """`[iterations (int64), slot, slot, ...]`, as the reference returns."""
    out = []
    for w in self._weights:
      value = np.asarray(w.numpy())
      out.append(value.astype(np.int64) if w is self._iterations else value)
    return out

  def set_weights(self, weights: list[Any]) -> None:
    """Loads a list from `get_weights` (ours or the reference's).

    The length and every shape must match (the reference's messages); the
    dtypes must convert without loss. Nothing is changed unless all match.
    """
    params = self._weights
    weights = list(weights)
    if len(params) != len(weights):
      raise ValueError(
          f"You called `set_weights(weights)` on optimizer {self._name} "
          f"with a  weight list of length {len(weights)}, "
          f"but the optimizer was expecting {len(params)} "
          f"weights. Provided weights: {str(weights)[:50]}..."
      )
    staged = []
    for p, w in zip(params, weights):
      w = np.asarray(w)
      if tuple(p.shape) != tuple(w.shape):
        raise ValueError(
            f"Optimizer weight shape {tuple(p.shape)} not compatible with "
            f"provided weight shape {tuple(w.shape)}."
        )
      if p is self._iterations:
        staged.append(_inputs.as_count(w, "weights[0] (iterations)"))
      else:
        staged.append(_inputs.as_slot_value(w, p))
    for p, w in zip(params, staged):
      p.assign(w)

  def build(self, var_list: Any) -> None:
    """Creates iterations and slots for `var_list` (Variables or a pytree)
    now, so `set_weights` works before the first step."""
    self.iterations  # noqa: B018
    if isinstance(var_list, (list, tuple)) and all(isinstance(v, Variable)
                                                   for v in var_list):
      if self._pytree is not None:
        raise ValueError(_BOTH_PATHS)
      for v in var_list:
        self._check_variable(v)
    else:
      leaves, treedef = jax.tree.flatten(var_list)
      self._pytree_spec(var_list, treedef, _as_arrays(leaves))

  # -- steps ---------------------------------------------------------------------

  def minimize(self, loss: Callable[[], Any], var_list: Any, grad_loss: Any = None,
               name: str | None = None, tape: Any = None) -> Variable:
    """Minimizes `loss` (a zero-argument callable) over `var_list`.

    Returns:
      The new step count (an object with `.numpy()`).
    """
    grads_and_vars = self._compute_gradients(loss, var_list, grad_loss, tape)
    return self.apply_gradients(grads_and_vars, name=name)

  def get_gradients(self, loss: Callable[[], Any], params: Any) -> list[Any]:
    """Gradients of `loss` (a zero-argument callable) for `params`.

    Raises:
      ValueError: if some variable has no gradient (`loss` does not use it).
    """
    grads_and_vars = self._compute_gradients(loss, params, None, None)
    for g, v in grads_and_vars:
      if g is None:
        raise ValueError(
            f"Variable {v.name} has `None` for gradient. Please make sure "
            "that all of your ops have a gradient defined (i.e. are "
            "differentiable).")
    return [g for g, _ in grads_and_vars]

  def apply_gradients(self, grads_and_vars: Iterable[Any], name: str | None = None,
                      experimental_aggregate_gradients: bool = True) -> Variable:
    """Applies `(gradient, Variable)` pairs; `None` gradients are skipped.

    Variables may hold arrays sharded over many devices: the step runs on
    the global arrays and keeps every shard where it is. Gradients of a
    loss over global arrays are already summed over all devices, so the
    default aggregation changes nothing; with `experimental_aggregate_gradients`
    (the default) the pairs first go through `_aggregate_gradients`, that is
    through `gradient_aggregator` when one was given. Per-replica gradients
    inside `shard_map` are the functional API's case:
    `sgd(..., axis_name="data")`. A Variable's `constraint` is applied to it
    after its update.

    Returns:
      The new step count (an object with `.numpy()`).
    """
    del name
    if self._pytree is not None:
      raise ValueError(_BOTH_PATHS)
    grads, variables = _inputs.split_pairs(grads_and_vars)
    if variables and experimental_aggregate_gradients:
      grads, variables = _inputs.split_pairs(
          self._aggregate_gradients(list(zip(grads, variables))))
    if not variables:  # Keras takes no step for an empty list
      return Variable(self.iterations.value(), name="iter", trainable=False)
    slots = self._checked_slots(grads, variables)
    # Whether to donate is decided before the values are listed: the list
    # would count as one more owner.
    donate = _step.sole_owner(variables)
    new_values = self._run([v._value for v in variables], grads, slots, donate)
    for v, x in zip(variables, new_values):
      v._value = x
      if v.constraint is not None:  # after the update, as Keras applies it
        v.assign(v.constraint(v))
    return Variable(self.iterations.value(), name="iter", trainable=False)

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
    leaves, treedef = cast(Any, jax.tree.flatten(params))
    grad_leaves, grad_def = jax.tree.flatten(grads, is_leaf=_sparse.is_indexed_slices)
    leaves = _as_arrays(leaves)
    signature = _inputs.signatures(leaves)
    if grad_def != treedef or _inputs.signatures(grad_leaves) != signature:
      _validation.check_gradients_match(grads, params)  # says what differs
    spec = self._pytree_spec(params, treedef, leaves)  # after the check above
    if signature != spec.signature:
      self._explain_params(params, leaves)
    if donate:
      ids = set(map(id, leaves))
      donate = len(ids) == len(leaves) and ids.isdisjoint(map(id, grad_leaves))
    new_leaves = self._run(leaves, grad_leaves, spec.slots, donate_values=donate)
    return jax.tree.unflatten(treedef, new_leaves)

  # -- internals -----------------------------------------------------------------

  def _pytree_spec(self, params: Any, treedef: Any,
                   leaves: list[jax.Array]) -> _PytreeSpec:
    """What the pytree path was built for, building it (checks, slots) on
    first use; `treedef` and `leaves` are `params`' structure and arrays."""
    if self._pytree is not None:
      if treedef != self._pytree.treedef:
        raise ValueError(f"`params` has tree structure {treedef}, but this "
                         f"optimizer was first used with {self._pytree.treedef}.")
      return self._pytree
    if self._checked:
      raise ValueError(_BOTH_PATHS)
    _validation.check_float_leaves(params, "The parameter")
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    slots = []
    if self._use_momentum:
      for (path, _), leaf in zip(paths, leaves):
        name = jax.tree_util.keystr(path)
        slots.append(self._create_slot(("pytree", name), leaf, name or "param",
                                       "momentum"))
    self._pytree = _PytreeSpec(treedef, [(x.shape, x.dtype) for x in leaves], slots)
    return self._pytree

  def _explain_params(self, params: Any, leaves: list[jax.Array]) -> None:
    """Raises naming the first leaf of `params` whose shape or dtype is not
    the one this optimizer was built for."""
    assert self._pytree is not None
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, _), x, (shape, dtype) in zip(paths, leaves, self._pytree.signature):
      where = f"`params` at {jax.tree_util.keystr(path) or '<root>'}"
      if x.shape != shape:
        raise ValueError(f"{where} has shape {x.shape}, but this optimizer was "
                         f"built for shape {shape}.")
      if x.dtype != dtype:
        raise TypeError(f"{where} has dtype {x.dtype}, but this optimizer was "
                        f"built for dtype {dtype}.")

  def _checked_slots(self, grads: list[Any], variables: list[Variable]):
    """Checks `grads` against `variables`, then the Variables themselves
    (creating their slots, so only after the gradients pass); returns their
    momentum slots. The same list of Variables as last step is not checked
    again: it is kept here, so its ids cannot be reused, and a Variable's
    shape and dtype never change."""
    ids = tuple(map(id, variables))
    known = self._last_checked[0] == ids
    expected = self._last_checked[3] if known else [(v.shape, v.dtype)
                                                    for v in variables]
    _inputs.check_gradients(grads, variables, expected)
    if not known:
      for v in variables:
        self._check_variable(v)
      slots = [self._slots[id(v)]["momentum"] for v in variables] \
          if self._use_momentum else []
      self._last_checked = (ids, variables, slots, expected)
    return self._last_checked[2]

  def _check_variable(self, v: Variable) -> None:
    """Checks a Variable the first time it is seen with this dtype (and
    creates its slot): later steps skip the work."""
    if self._checked.get(id(v)) is v.dtype:
      return
    _validation.check_float_leaves(v.value(), f"Variable '{v.name}'")
    if self._use_momentum:
      self._create_slot(id(v), v, v.name, "momentum")
    self._checked[id(v)] = v.dtype

  def _config(self) -> _step.StepConfig:
    lr = self._hyper["learning_rate"]
    return _step.StepConfig(
        schedule=lr if _hyperparameters.is_schedule(lr) else None,
        use_momentum=self._use_momentum,
        nesterov=self._nesterov,
        clipvalue=self._clipvalue,
        clipnorm=self._clipnorm,
        global_clipnorm=self._global_clipnorm,
        decay=self._decay,
        skip_non_finite=self._skip_non_finite,
    )

  def _run(self, values: list[Any], grads: list[Any], slots: list[Variable],
           donate_values: bool) -> list[jax.Array]:
    """One compiled step: updates the slots and counters in place and
    returns the new values."""
    lr = self._hyper["learning_rate"]  # a schedule is traced in (see _config)
    lr_arg = jnp.zeros((), jnp.float32) if _hyperparameters.is_schedule(lr) \
        else _hyperparameters.read(lr)
    momentum = self._read_momentum() if self._use_momentum \
        else jnp.zeros((), jnp.float32)
    step = self._steps.get(
        self._config(),
        donate_values=donate_values,
        donate_state=_step.sole_owner(slots + [self.iterations, self._skipped]),
    )
    new_values, new_velocities, new_count, skipped = step(
        values, grads, [s.value() for s in slots],
        self.iterations.value(), self._skipped.value(), lr_arg, momentum)
    for s, x in zip(slots, new_velocities or []):
      s._value = x
    self.iterations._value = new_count.astype(self.iterations.dtype)
    self._skipped._value = skipped
    return new_values

  def _read_momentum(self) -> jax.Array:
    """This step's momentum: a schedule is evaluated here, on the host, at the
    current step (its value enters the compiled step as an argument)."""
    value = self._hyper["momentum"]
    if _hyperparameters.is_schedule(value):
      value = value(jnp.asarray(self.iterations.value(), jnp.float32))
    return _hyperparameters.read(value)

  def _compute_gradients(self, loss, var_list, grad_loss, tape):
    if not callable(loss):
      if tape is None:
        raise ValueError("`tape` is required when a `Tensor` loss is passed.")
      raise TypeError(
          "JAX cannot differentiate a loss value after it was computed: pass "
          f"`loss` as a zero-argument callable. Received: {type(loss).__name__}.")
    if callable(var_list):
      loss()  # Keras evaluates the loss first, so it may build its variables.
      variables = list(var_list())
    else:
      variables = list(var_list)
    for i, v in enumerate(variables):
      if not isinstance(v, Variable):
        raise TypeError(f"`var_list[{i}]` must be an optax_keras_sgd.Variable. "
                        f"Received: {type(v).__name__}.")
    from optax_keras_sgd._gradients import gradients_of_closure

    grads = gradients_of_closure(loss, variables, grad_loss)
    return list(zip(grads, variables))

  def get_config(self) -> dict[str, Any]:
    config: dict[str, Any] = {"name": self._name}
    if self._clipnorm is not None:
      config["clipnorm"] = self._clipnorm
    if self._clipvalue is not None:
      config["clipvalue"] = self._clipvalue
    if self._global_clipnorm is not None:
      config["global_clipnorm"] = self._global_clipnorm
    config.update({
        "learning_rate": _hyperparameters.serialize(self._hyper["learning_rate"]),
        "decay": self._decay,
        "momentum": _hyperparameters.serialize(self._hyper["momentum"]),
        "nesterov": self._nesterov,
    })
    if self._skip_non_finite:
      config["skip_non_finite"] = True
    return config

  @classmethod
  def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> SGD:
    from optax_keras_sgd._config import optimizer_kwargs_from_config

    return cls(**optimizer_kwargs_from_config(config, custom_objects))

  def compiled_count(self) -> int:
    """How many step programs this optimizer has compiled so far."""
    return self._steps.compiled_count()

  def __repr__(self) -> str:
    return (f"<optax_keras_sgd.SGD name={self._name!r} "
            f"iterations={int(self.iterations)}>")
