"""The OpenAI-compatible core: the wire, the HTTP exchange and the stream assembler."""
