"""Stage One data: the MV-Video layout (real or synthetic), track caches, loaders."""
