"""One module per trainer; each exposes a config dataclass and a ``run`` function."""
