"""Shipped YAML profiles (installed as the data package `doctor.profiles`)."""
