"""
Tests for netd. Run them with C{trial tests}.
"""
