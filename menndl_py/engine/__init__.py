"""The search engine: the master (any Search), the evaluator on each worker group, signals, and the transports."""
