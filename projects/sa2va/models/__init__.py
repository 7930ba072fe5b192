"""models of the Sa2VA plugin."""
