"""The call path: authenticate, decode, validate, dispatch, and account for one call."""
