"""Host driver: register map, transports, bitstream loading, result streaming."""
