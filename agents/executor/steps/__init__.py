"""The action language as composable steps (reference §1.6); see base.py for the step contract."""
