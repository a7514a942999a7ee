"""Algorithm 1, step 3: the confidence sets R_i of Eq. 3.6.

- ``sets``: the radius zeta (closed-form Fisher calibration; Eq. B.1/C.3 theory radius),
  coverage, and the data-shaped ``sigma_d`` ellipsoid (extension);
- ``bootstrap``: the parametric-bootstrap radius.

The names below are re-exported for scripts written against the module ``sim.confidence``
of the flat layout; the project imports ``sim.confidence.sets``.
"""

from sim.confidence.sets import (  # noqa: F401
    CALIBRATED_METHODS,
    calibrated_radius,
    check_estimate,
    coverage,
    error_covariance,
    fisher_information,
    sigma_d_ellipsoid,
    theory_radius,
)
