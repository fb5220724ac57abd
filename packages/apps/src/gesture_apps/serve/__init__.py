"""``gesture serve``: a local page that streams speech to a gesture model and draws the skeleton
moving in time with the sound. The protocol is documented in :mod:`gesture_apps.serve.app`."""

from gesture_apps.serve.app import StreamLike, create_app

__all__ = ["StreamLike", "create_app"]
