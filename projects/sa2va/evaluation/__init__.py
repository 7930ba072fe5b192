"""evaluation of the Sa2VA plugin."""
