"""llmgateway's gRPC server: one typed contract in front of OpenRouter and Z.AI."""
