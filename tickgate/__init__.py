"""tickgate: FPGA offload toolkit for trading (ITCH market data, order book, pre-trade risk)."""

__version__ = "0.1.0"
