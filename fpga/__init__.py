"""Amaranth gateware: one wiring.Component per block, lib.stream between blocks."""
