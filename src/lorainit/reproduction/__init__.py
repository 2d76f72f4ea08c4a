"""REPRODUCTION.md: every claim of Hayou et al. 2024 and Chen et al. 2025 judged on committed studies (``render``)."""
