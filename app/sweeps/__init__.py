"""Sweeps: one request, many trials (ordinary jobs), a leaderboard chosen on validation."""
