"""cocotb testbenches, feed players and scoreboards."""
