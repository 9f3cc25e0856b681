"""metatomic models: loading, batched evaluation of rotated copies, TorchScript exports."""
