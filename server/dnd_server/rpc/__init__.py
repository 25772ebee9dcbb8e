"""gRPC edge: validation, protobuf ⇄ domain mapping, error statuses, servicers."""
