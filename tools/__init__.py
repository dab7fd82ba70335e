"""PyTorch-side tools (weight conversion, track caching): the only code that imports torch."""
