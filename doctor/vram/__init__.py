"""GPU memory (VRAM) estimation: architectures, the memory model, what-ifs."""
