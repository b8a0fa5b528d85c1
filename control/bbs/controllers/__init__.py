"""Lifecycle rules: the BBS verbs, built on the store and the peers (auctioneer, reps)."""
