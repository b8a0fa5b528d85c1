"""The converger: keeps actual state converged on desired state (reference §5, §2.6). See README.md."""
