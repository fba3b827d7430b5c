"""Generate a data set: python generate.py data=ns2d [data.resolution=...] (resumes if interrupted).
The same as the installed console script ``neuropde-generate``."""
from neuropde.cli import generate

if __name__ == "__main__":
    generate()
