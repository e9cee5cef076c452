"""Network families behind the genome/space interface: dense stacks, conv nets, encoder-decoders, window nets."""
