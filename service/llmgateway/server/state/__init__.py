"""The gateway's state: caller keys, rate-limit reservations and the usage ledger."""
