"""Test oracles: plain NumPy references for the numba kernels, written from their specifications
rather than their loops, and the step-by-step TOA chain that the folded calibration is checked
against. Used by the tests only; the pipeline never imports them."""
