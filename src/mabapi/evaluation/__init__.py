"""Off-policy evaluation: what another allocation would have earned on the logged units."""
