"""JSON Schemas of declarative documents (loaded with importlib.resources)."""
