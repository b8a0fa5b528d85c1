"""`pydiego cluster up|down|status`: a complete pydiego cluster on one machine."""
