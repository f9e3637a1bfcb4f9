"""Independent PyTorch references for the C kernels (the test oracles)."""
