"""The few TensorFlow protocol buffers a checkpoint's index holds, declared
for the `protobuf` runtime (field numbers and types as TensorFlow's .proto
files give them), so reading a checkpoint needs no TensorFlow.

Only the fields this package reads are declared; the parser skips the rest.
Enums are declared as int32, which has the same wire encoding.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_INT32, _INT64, _FIXED32 = _F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_FIXED32
_BOOL = _F.TYPE_BOOL
_STRING, _BYTES, _MESSAGE = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE

# message name -> [(field, number, type, repeated, message type)]
_MESSAGES: dict[str, list[tuple[str, int, int, bool, str | None]]] = {
  "TensorShapeProto.Dim": [("size", 1, _INT64, False, None)],
  "TensorShapeProto": [
    ("dim", 2, _MESSAGE, True, "TensorShapeProto.Dim"),
    ("unknown_rank", 3, _BOOL, False, None),
  ],
  "BundleHeaderProto": [
    ("num_shards", 1, _INT32, False, None),
    ("endianness", 2, _INT32, False, None),
  ],
  "BundleEntryProto": [
    ("dtype", 1, _INT32, False, None),
    ("shape", 2, _MESSAGE, False, "TensorShapeProto"),
    ("shard_id", 3, _INT32, False, None),
    ("offset", 4, _INT64, False, None),
    ("size", 5, _INT64, False, None),
    ("crc32c", 6, _FIXED32, False, None),
    ("slices", 7, _BYTES, True, None),
  ],
  "TrackableObjectGraph.TrackableObject.ObjectReference": [
    ("node_id", 1, _INT32, False, None),
    ("local_name", 2, _STRING, False, None),
  ],
  "TrackableObjectGraph.TrackableObject.SerializedTensor": [
    ("name", 1, _STRING, False, None),
    ("full_name", 2, _STRING, False, None),
    ("checkpoint_key", 3, _STRING, False, None),
  ],
  "TrackableObjectGraph.TrackableObject.SlotVariableReference": [
    ("original_variable_node_id", 1, _INT32, False, None),
    ("slot_name", 2, _STRING, False, None),
    ("slot_variable_node_id", 3, _INT32, False, None),
  ],
  "TrackableObjectGraph.TrackableObject": [
    (
      "children",
      1,
      _MESSAGE,
      True,
      "TrackableObjectGraph.TrackableObject.ObjectReference",
    ),
    (
      "attributes",
      2,
      _MESSAGE,
      True,
      "TrackableObjectGraph.TrackableObject.SerializedTensor",
    ),
    (
      "slot_variables",
      3,
      _MESSAGE,
      True,
      "TrackableObjectGraph.TrackableObject.SlotVariableReference",
    ),
  ],
  "TrackableObjectGraph": [
    ("nodes", 1, _MESSAGE, True, "TrackableObjectGraph.TrackableObject")
  ],
}


def _build():
  file = descriptor_pb2.FileDescriptorProto(
    name="optax_keras_sgd/tensorflow_checkpoint.proto",
    package="optax_keras_sgd.tf",
    syntax="proto3",
  )
  containers: dict[str, Any] = {}
  for full_name in sorted(_MESSAGES, key=lambda n: n.count(".")):  # parents first
    *parents, name = full_name.split(".")
    container = (
      containers[".".join(parents)].nested_type if parents else file.message_type
    )
    message = container.add(name=name)
    containers[full_name] = message
    for field, number, kind, repeated, type_name in _MESSAGES[full_name]:
      message.field.add(
        name=field,
        number=number,
        type=kind,
        label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
        type_name=f".optax_keras_sgd.tf.{type_name}" if type_name else None,
      )
  pool = descriptor_pool.DescriptorPool()
  pool.Add(file)
  return {
    name: message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f"optax_keras_sgd.tf.{name}")
    )
    for name in _MESSAGES
  }


_CLASSES = _build()
BundleHeaderProto = _CLASSES["BundleHeaderProto"]
BundleEntryProto = _CLASSES["BundleEntryProto"]
TrackableObjectGraph = _CLASSES["TrackableObjectGraph"]
