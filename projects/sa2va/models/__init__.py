"""models of the Sa2VA plugin."""
from .internvl import InternVLChat, InternVLChatConfig  # noqa: F401
