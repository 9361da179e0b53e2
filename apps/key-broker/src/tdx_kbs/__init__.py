"""The owner's key broker, tdx-kbs (being written: issue 10)."""
