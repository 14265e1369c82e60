"""`doctor clean-cache`: inventory what can be reclaimed (Hugging Face caches, other ML caches, old
checkpoints), plan under policies, confirm, and delete in a crash-safe order."""
