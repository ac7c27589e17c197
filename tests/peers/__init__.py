"""Real peers the tests talk to: local servers that behave as the real services do."""
