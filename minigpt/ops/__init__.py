"""Tools over trained checkpoints and data: check a config's data sets, export merged weights, mix checkpoints,
convert a trusted pickled checkpoint to safetensors."""
