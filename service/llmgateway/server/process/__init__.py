"""The process: the command line, the grpc.aio server, and worker processes."""
