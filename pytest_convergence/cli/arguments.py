"""Argument types the commands share (imported by the parser and by command modules the parser
imports, so it imports neither)."""

from __future__ import annotations

import argparse


def non_negative(text: str) -> float:
    """A threshold or a time: a negative one would fail every run, or none, without a word."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value
