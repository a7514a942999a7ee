"""What drives the stages of Algorithm 1, and the experiments of README's results.

- ``pipeline``: one instance end to end (truth -> data -> Eq. 3.5 -> Eq. 3.6 -> Eq. 3.7 ->
  exact gaps), ``run_instance``, and its stages as functions (``draw_instance``,
  ``fit_method``, ``confidence_set``, ``policy_gaps``); every other runner here calls them;
- ``new_users``: held-out users personalised with what each method learned (extension);
- ``sweep``, ``backends``: grids of instances (``python -m sim.sweep``) on loky/dask/ray;
- ``analysis``, ``new_user_analysis``: log-log slopes against Theorem 4.1/4.2, Cor. 4.1,
  Prop. 1, Remark 3 and the new-user rates;
- ``algorithm1``, ``demo``, ``coverage``, ``pessimism_map``, ``tail_study``: the other
  command lines (README, "Entry points").
"""
