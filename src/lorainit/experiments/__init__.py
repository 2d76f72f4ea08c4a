"""Experiments built on the core (inits, theory, batched training). The core never imports these."""
