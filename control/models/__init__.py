"""Wire and storage models: everything that crosses a process boundary or lands in etcd.

This package imports nothing else from pydiego, so every tier can depend on it.
"""
