"""The only layer that reads and writes workload state in etcd.

Every mutation is one etcd transaction that compares the `mod_revision` of everything it read,
so a concurrent writer makes it retry (or fail with a typed error) instead of overwriting.
Every mutation returns what it changed as (before, after) pairs.
"""
