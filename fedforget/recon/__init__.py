"""MRI core: fastMRI-format HDF5 I/O, synthetic phantoms, masks, VarNet presets, losses, metrics."""
