"""Flip-dynamics analysis: valence traces, polaron flips, Li hops, rates, Arrhenius, correlations."""
