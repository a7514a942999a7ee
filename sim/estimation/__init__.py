"""Algorithm 1, step 2: the MLE of Eq. 3.5 over the classes S (Eq. 3.1), S^LoRA (Eq. 3.3) and
S^ShareLoRA (Eq. 3.4), and the comparators of docs/formats.md:

- ``estimators``: ``fit(method, ...)``, the one entry point (methods ``shared``, ``local``,
  ``full``, ``global``, ``nuclear``, ``zero``, ``oracle``);
- ``lowrank``: the alternating solver of the rank-constrained problem (Eq. 3.3/3.4) from one
  start: exact W-steps, Newton or L-BFGS on span U;
- ``multistart``: its starts and stopping rule (global optimum by restarts,
  docs/estimators.md);
- ``logistic``: ball-constrained logistic regression (the convex blocks, with certificates);
- ``layout``: the padded per-user data layout the solvers share;
- ``nuclear``: the convex nuclear-norm relaxation, lambda by cross-validation.
"""
