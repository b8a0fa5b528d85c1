"""Event stream derived from etcd watches (see hub.py)."""
