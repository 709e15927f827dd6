"""The pre-training engine: batches, device-side masking, sharded steps, checkpoints, metrics."""
