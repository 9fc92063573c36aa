"""Linear-recurrent family: linear attention, retention (and later DeltaNet, hybrids)."""
