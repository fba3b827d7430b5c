"""Build hook: the wheel carries ``conf/`` as ``neuropde/conf/``.

``conf/`` stays at the top of the repository, where people read it and where ``train.py`` finds
it; an installed package has no repository around it, so the build copies the tree into the
package (``neuropde.CONF_DIR`` looks there first). Everything else is in ``pyproject.toml``.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class build_py_with_conf(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # an editable install reads the checkout's conf/ directly
            target = Path(self.build_lib) / "neuropde" / "conf"
            shutil.rmtree(target, ignore_errors=True)  # a stale copy from an earlier build
            shutil.copytree(CONF, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": build_py_with_conf})
