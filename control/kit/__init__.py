"""Runtime kit shared by every pydiego process: config, logging, TLS, etcd access, supervision."""
