"""Helpers the tests share (never copied into a test file)."""
