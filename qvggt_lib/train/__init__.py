"""Training the tiny VGGT: losses, the CPU trainer and the GPU trainer (``trainer``, ``gpu``)."""
