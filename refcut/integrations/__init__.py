"""Adapters that put RefCut inside other annotation tools (Label Studio)."""
