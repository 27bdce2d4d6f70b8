"""Package discovery (everything else is in pyproject.toml).

Every package under kdbench/ ships, present and future, found by `find_packages`; the top-level methods/ folder
(one file per method) ships as `kdbench.methods` through `package-dir` in pyproject.toml. pyproject.toml alone
cannot both discover packages and add one whose folder lives elsewhere, hence this file. tests/, benchmarks/ and
results/ are not packages of kdbench and never ship.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["kdbench", "kdbench.*"]),
        "kdbench.methods",
        *(f"kdbench.methods.{name}" for name in find_packages("methods")),
    ],
)
