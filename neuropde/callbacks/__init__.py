"""Lightning callbacks: field plots, progress."""
