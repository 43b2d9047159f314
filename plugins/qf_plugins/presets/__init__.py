"""ftype presets: llama-quantize's ftypes and per-tensor mixes, as data."""
