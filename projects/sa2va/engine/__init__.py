"""engine of the Sa2VA plugin."""
