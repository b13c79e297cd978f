"""The web app: HTTP API, Binance-compatible mirror, socket.io and the chart page."""
