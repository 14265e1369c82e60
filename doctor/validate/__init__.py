"""`doctor validate`: one command that checks doctor itself against a real GPU and records what it saw."""
