"""Flip-dynamics analysis: valence traces, polaron flips, Li hops, rates, Arrhenius, correlations.

Modules, one job each: ``trajectory`` (read files), ``events`` (smoothing, hysteresis, dwell, flips,
hops), ``sites`` (Li 4a lattice and nearest-site keys), ``rates`` (trust, rates, Arrhenius),
``intervals`` (confidence intervals, flags of thin statistics), ``correlations`` (flip pairs, Table 2),
``profiles`` (interface layers), ``pipeline`` (one trajectory), ``report`` (output files), ``plots`` (figures), ``production`` (MD with a final model), ``synthetic``
(programmed test trajectories), ``cli`` (``python -m lfpo_al analyze``). See docs/analysis.md.
"""
