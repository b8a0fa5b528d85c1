"""Locks, presences and leader election with two interchangeable backends (Consul, etcd).

See base.py for the contract both backends keep, fence.py for the fencing tokens, and
members.py for the supervisor members that hold a lock or a presence.
"""
