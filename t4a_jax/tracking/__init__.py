"""Point tracking: metrics, query points, feature taps, tracking losses, the probe."""
