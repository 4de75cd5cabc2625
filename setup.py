"""Packages are found by walking each top-level folder, so a new subpackage (a backend, a
family) is installed without editing a list; pyproject.toml holds everything else."""
from setuptools import find_packages, setup

# import name -> folder: nothing generic like ``ir`` or ``search`` lands in site-packages
ROOTS = {"superopt": "superopt", "superopt.ir": "ir", "superopt.search": "search",
         "superopt.backends": "backends", "superopt.kernels": "kernels"}

packages = [sub for name, folder in ROOTS.items()
            for sub in [name] + [f"{name}.{p}" for p in find_packages(folder)]]
setup(packages=packages, package_dir=ROOTS)
