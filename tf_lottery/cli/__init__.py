"""Thin absl entry points: flags -> config -> library call."""
