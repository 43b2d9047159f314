"""numpy forward passes for ``qf imatrix``, one module per family over the blocks in :mod:`.common`.

Each module exposes ``build(model: qf_arches.imatrix.collect.ModelWeights) -> ForwardPass``; the architecture
plugins name it lazily (``Arch.forward = "qf_arches.forward.llama:build"``), so registering an arch imports nothing
numpy-heavy.
"""
