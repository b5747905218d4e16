"""Other gateways the benchmark runs beside llmgateway, each installed once into a cache."""
