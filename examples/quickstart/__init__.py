"""The README's quick start: a topic file, sample events and a processor of your own."""
