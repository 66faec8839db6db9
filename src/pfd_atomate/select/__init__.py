"""Pre-label filters and frame selection (random, QUESTS entropy) for the candidate pool."""
