"""qf's importance-matrix collection: the ``qf imatrix`` command, its forward-pass driver, tokenizer and statistics."""
