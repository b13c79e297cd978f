"""The Binance boundary: wire structs (parse), REST client (rest), streams (stream)."""
