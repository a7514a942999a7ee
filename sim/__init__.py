"""Tabular simulator of Algorithm 1 (Sections 3-4), one subpackage per stage:

=================  ======================================================================
``sim.model``       the instance: tabular MDP and features (Sec. 3.1), ground truth
                    DeltaTheta* (Def. 4.1), Bradley-Terry comparisons (Eq. 3.2), SimConfig
``sim.estimation``  Algorithm 1 step 2: the MLE of Eq. 3.5 over S / S^LoRA / S^ShareLoRA
                    (Eq. 3.1, 3.3, 3.4), its multi-start solver, the comparators
``sim.confidence``  step 3: the confidence sets of Eq. 3.6 (radius of Eq. B.1, bootstrap,
                    the data-shaped ellipsoid extension)
``sim.policy``      step 4: the pessimistic policy of Eq. 3.7 and its certificate
``sim.experiments`` what drives the stages: one instance end to end (pipeline), sweeps,
                    slope analysis (Theorems 4.1/4.2, Cor. 4.1), coverage and pessimism
                    studies, new users (extension)
=================  ======================================================================

Module paths before this layout (``sim.sweep``, ``sim.estimators``, ...) still resolve, to
the same module objects, for scripts and command lines written against them
(``python -m sim.sweep``): :data:`MOVED` maps each to its home. The project itself imports
the new paths only (tests/test_layout.py).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

METHODS = ("shared", "local", "full", "global", "nuclear")

#: Old module path -> new module path (issue 21); command lines and user scripts keep working.
MOVED = {
    "sim.mdp": "sim.model.mdp", "sim.truth": "sim.model.truth", "sim.data": "sim.model.data",
    "sim.config": "sim.model.config",
    "sim.estimators": "sim.estimation.estimators", "sim.lowrank": "sim.estimation.lowrank",
    "sim.logistic": "sim.estimation.logistic", "sim.layout": "sim.estimation.layout",
    "sim.nuclear": "sim.estimation.nuclear",
    "sim.bootstrap": "sim.confidence.bootstrap",
    "sim.pipeline": "sim.experiments.pipeline", "sim.new_users": "sim.experiments.new_users",
    "sim.sweep": "sim.experiments.sweep", "sim.analysis": "sim.experiments.analysis",
    "sim.new_user_analysis": "sim.experiments.new_user_analysis",
    "sim.backends": "sim.experiments.backends", "sim.algorithm1": "sim.experiments.algorithm1",
    "sim.demo": "sim.experiments.demo", "sim.coverage": "sim.experiments.coverage",
    "sim.pessimism_map": "sim.experiments.pessimism_map",
    "sim.tail_study": "sim.experiments.tail_study",
    "sim.simplicial": "sim.policy.master", "sim.socp": "sim.policy.socp",
    "sim.faces": "sim.policy.faces",
    "sim.parts": "figures.files", "sim.cli": "figures.cli",
}


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves a path of :data:`MOVED` to the module at its new home (the same object, so
    classes and module state are shared); ``python -m OLD`` runs the new module's code."""

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        real = importlib.util.find_spec(MOVED[name])
        return importlib.util.spec_from_loader(name, self, origin=real.origin if real else None)

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        sys.modules[module.__spec__.name] = module

    def get_code(self, name):  # runpy (python -m sim.sweep)
        new = MOVED[name]
        return importlib.util.find_spec(new).loader.get_code(new)


if not any(isinstance(f, _Moved) for f in sys.meta_path):
    sys.meta_path.insert(0, _Moved())  # before the path finders: a MOVED name is never a file
