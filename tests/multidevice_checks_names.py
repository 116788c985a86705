"""The names of the checks in multidevice_checks.py (which must not be
imported in the main test session: it needs 8 devices)."""

CHECKS = [
  "check_state_follows_param_sharding",
  "check_shard_map_sums_replica_gradients_once",
  "check_shard_map_aggregates_before_clipping",
  "check_sparse_aggregation_concatenates_slices",
  "check_facade_on_sharded_variables",
]
