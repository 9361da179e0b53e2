"""Trustee's KBS protocol for TDX (being written: issue 10)."""
