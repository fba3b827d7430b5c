"""Lightning callbacks: field plots, epoch timing, and the builder of the configured logger and callbacks."""
