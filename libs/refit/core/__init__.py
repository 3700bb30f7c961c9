"""The pure decision core: no I/O, no event loop, no environment. Values in, values out."""
