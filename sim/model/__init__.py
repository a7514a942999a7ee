"""The simulated instance Algorithm 1 runs on (Section 3.1-3.2, Definition 4.1):

- ``mdp``: tabular finite-horizon MDPs, features phi(s, a), backward induction and occupancy
  measures (r_Theta(tau) = sum_h <phi(s_h, a_h), Theta>);
- ``truth``: the low-rank-plus-tail ground truth DeltaTheta* with prescribed nu and Sigma_tail;
- ``data``: behaviour policies and Bradley-Terry comparisons (Eq. 3.2);
- ``config``: SimConfig, every field of which lands in every runs.csv row.
"""
