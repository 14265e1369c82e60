"""Reporters: format a Report; they never judge."""
