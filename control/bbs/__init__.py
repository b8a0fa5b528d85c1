"""The BBS: the HTTP API over the workload state in etcd (see README.md)."""
